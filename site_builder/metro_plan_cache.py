"""Keep ``metro_plan``'s answer per edge between snapshots.

Relations never cross an edge: what the plan hides on one edge depends only on that
edge's counts (every table, layer, direction and column). So each edge's live cells
(those with people) get a content digest; an edge whose digest the last build saw takes
the hidden flags that build chose, and only the others are solved. Same counts, same
rounds, same flags: the files are byte-identical to a build without the cache (and
``--no-cache`` bypasses it). The file is keyed by the code that decides the flags and the
threshold; anything unexpected means a full solve.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.mix64 import GOLDEN, mix64

__all__ = ["PLAN_CACHE", "PlanCache", "edge_digests"]

FORMAT = 1
PLAN_CACHE = "metro_plan_cache.npz"


def edge_digests(
    edge: np.ndarray, content: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per edge (dense ids 0..E-1 of the live cells): ``(order, starts, digest)``: the
    live cells sorted by edge (stable: cell order within an edge), each edge's first
    position in that order, and a digest of its cells' contents and count."""
    order = np.argsort(edge, kind="stable")
    e = edge[order]
    starts = np.flatnonzero(np.r_[True, e[1:] != e[:-1]]) if len(e) else np.zeros(0, np.int64)
    with np.errstate(over="ignore"):
        # Position within the edge keeps the digest order-aware.
        pos = np.arange(len(e), dtype=np.uint64) - np.repeat(
            starts, np.diff(np.r_[starts, len(e)])
        ).astype(np.uint64)
        h = mix64(content[order] + pos * GOLDEN)
        sums = np.add.reduceat(h, starts) if len(e) else np.zeros(0, np.uint64)
        counts = np.diff(np.r_[starts, len(e)]).astype(np.uint64)
        digest = mix64(sums ^ mix64(counts))
    return order, starts, digest


class PlanCache:
    """``path``: the file; ``key``: what the flags depend on besides the counts."""

    def __init__(self, path: Path, k: int, *, reuse: bool = True) -> None:
        self.path, self.use = path, reuse
        here = Path(__file__).resolve().parent
        h = hashlib.sha256(f"{FORMAT}:{k}".encode())
        for name in ("metro_plan.py", "metro_plan_cache.py", "metro_tables.py"):
            try:
                h.update((here / name).read_bytes())
            except OSError:
                h.update(np.random.default_rng().bytes(16))  # not files: never matches
        self.key = h.hexdigest()
        self.reused = 0

    def reuse(
        self, digest: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each edge (``digest``, live cells ``lengths``): whether the last build saw
        it, and for those the flags (concatenated in edge order) and where each starts."""
        none = (np.zeros(len(digest), dtype=bool), np.zeros(0, dtype=bool), np.zeros(0, np.int64))
        if not self.use:
            return none
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                meta = json.loads(bytes(npz["meta"]).decode())
                if meta.get("key") != self.key:
                    return none
                old_digest, old_starts = npz["digest"], npz["starts"]
                old_lengths, old_flags = npz["lengths"], npz["flags"]
        except (OSError, ValueError, KeyError):
            return none
        pos = np.searchsorted(old_digest, digest)
        pos = np.minimum(pos, max(len(old_digest) - 1, 0))
        if not len(old_digest):
            return none
        seen = (old_digest[pos] == digest) & (old_lengths[pos] == lengths)
        take = pos[seen]
        n = old_lengths[take]
        first = np.repeat(old_starts[take], n)
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        self.reused = int(seen.sum())
        return seen, old_flags[first + offset].astype(bool), np.cumsum(n) - n

    def save(self, digest: np.ndarray, lengths: np.ndarray, flags: np.ndarray) -> None:
        """Per edge, its digest and live cells' flags (concatenated in edge order)."""
        starts = np.cumsum(lengths) - lengths
        perm = np.argsort(digest, kind="stable")
        meta = np.frombuffer(json.dumps({"key": self.key}).encode(), np.uint8)
        tmp = temporary_for(self.path)
        try:
            with tmp.open("wb") as fh:
                np.savez(fh, allow_pickle=False, meta=meta, digest=digest[perm],
                         starts=starts[perm], lengths=lengths[perm], flags=flags)  # fmt: skip
            tmp.replace(self.path)
        except OSError:  # the next build solves everything
            tmp.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
