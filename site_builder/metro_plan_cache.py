"""Keep ``metro_plan``'s answer between snapshots for the edges whose counts were kept.

Relations never cross an edge: what the plan hides on one edge depends only on that
edge's counts (every table, layer, direction and column). The Metro cache
(``metro_cache``) recounts only the edges of changed athletes and keeps every other
group's sums, row for row, from its file. So an edge that no layer recounted has the very
counts the last build's plan was solved with, and takes the flags that plan chose; only
the recounted edges are solved (a plan over their rows alone): the work follows the
change, not the window. Same counts, same rounds, same flags: the files are
byte-identical to a build without the cache (``--no-cache`` bypasses both).

The file names the Metro cache file its flags were solved with (a token that file gets
anew with every save): with another one, or with any table counted whole, everything is
solved. It is keyed by the code that decides the flags and by the threshold; anything
unexpected means a full solve too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.code_digest import code_digest

__all__ = ["PLAN_CACHE", "OldPlan", "PlanCache", "SumsSource"]

FORMAT = 2
PLAN_CACHE = "metro_plan_cache.npz"

Block = tuple[str, str]  # (table, layer)


class SumsSource(Protocol):
    """What the plan cache needs of the Metro cache (``metro_cache.MetroCache``)."""

    @property
    def token(self) -> str | None: ...

    def kept(
        self, layer: str, key: tuple[str, ...], *, with_bands: bool
    ) -> tuple[np.ndarray, np.ndarray] | None: ...

    def touched(self) -> np.ndarray | None: ...


@dataclass(frozen=True)
class OldPlan:
    """The last build's flags: per block (table, layer) its cells' ``(start, rows,
    columns)`` in ``flags`` (``[rows, 2, columns]`` from ``start``)."""

    flags: np.ndarray
    blocks: dict[Block, tuple[int, int, int]]

    def block(self, name: Block) -> np.ndarray | None:
        if name not in self.blocks:
            return None
        start, rows, columns = self.blocks[name]
        return self.flags[start : start + rows * 2 * columns].reshape(rows, 2, columns)


class PlanCache:
    """``path``: the file; ``k``: the threshold; ``source``: the Metro cache whose sums
    the plan is solved with."""

    def __init__(self, path: Path, k: int, source: SumsSource, *, reuse: bool = True) -> None:
        self.path, self.source, self.use = path, source, reuse
        here = Path(__file__).resolve().parent
        code = code_digest(
            here / n for n in ("metro_plan.py", "metro_plan_cache.py", "metro_tables.py")
        )
        self.key = hashlib.sha256(f"{FORMAT}:{k}:{code}".encode()).hexdigest()

    def load(self) -> OldPlan | None:
        """The last build's flags, if they were solved with the sums this build kept."""
        token = self.source.token
        if not self.use or token is None or self.source.touched() is None:
            return None
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                meta = json.loads(bytes(npz["meta"]).decode())
                if meta.get("key") != self.key or meta.get("token") != token:
                    return None
                blocks: dict[Block, tuple[int, int, int]] = {}
                start = 0
                for table, layer, rows, columns in meta["blocks"]:
                    blocks[(str(table), str(layer))] = (start, int(rows), int(columns))
                    start += int(rows) * 2 * int(columns)
                flags = np.unpackbits(npz["flags"], count=start).astype(bool)
        except Exception:  # noqa: BLE001 - any unreadable file (a torn zip too): none kept
            return None
        if len(flags) != start:
            return None
        return OldPlan(flags, blocks)

    def save(self, blocks: list[tuple[str, str, int, int]], flags: np.ndarray) -> None:
        """This build's flags: ``blocks`` (table, layer, rows, columns) in ``flags``' order,
        tagged with the Metro cache file as this build left it."""
        token = self.source.token
        if token is None:  # no Metro cache file to pair with: nothing to keep
            self.path.unlink(missing_ok=True)
            return
        meta = {"key": self.key, "token": token, "blocks": blocks}
        raw = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        tmp = temporary_for(self.path)
        try:
            with tmp.open("wb") as fh:
                np.savez(fh, allow_pickle=False, meta=raw, flags=np.packbits(flags))
            tmp.replace(self.path)
        except OSError:  # the next build solves everything
            tmp.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
