"""Keep the edge files' text row by row between snapshots: ``state_dir/metro_text_cache.npz``.

A row of an edge file (``edges.csv`` and ``.geojson``, ``edges_monthly.csv``,
``edges_hourly.csv``, ``edges_hourly_wide.csv``) depends only on its edge's sums in its
layer, the plan's flags for that edge (themselves a function of the edge's sums:
relations never cross an edge) and the publication settings. The Metro cache
(``metro_cache``) keeps an edge's sums row for row unless a changed athlete's records
touch it, so a rebuild formats the rows of the recounted edges only and takes every
other row's text, byte for byte, from the last build's: the formatting follows the
change, not the window.

Without differential privacy only (its noise is drawn in table order: one count out of
place shifts every later one). Like the plan cache, the file names the Metro cache file
it was written with (its token): with another one, or with any table counted whole,
every row is formatted. It is keyed by the code that makes and formats the rows and by
the publication settings; each file's text is checked against its CRC-32 and its kept
rows must be this build's rows of the untouched edges, edge and layer, in order:
anything unexpected means formatting every row, as without the cache, so the files are
the same either way.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

import heatmetro.core
from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.code_digest import code_digest
from heatmetro.site_builder.metro_cache import in_sorted
from heatmetro.site_builder.metro_plan_cache import SumsSource
from heatmetro.site_builder.npz_mapped import load_mapped

__all__ = ["TEXT_CACHE", "TextCache"]

FORMAT = 1
TEXT_CACHE = "metro_text_cache.npz"
_CODE = ("metro_rows.py", "metro_files.py", "metro_columns.py", "metro_tables.py",
         "metro_plan.py", "metro_text_cache.py")  # fmt: skip
_CORE_CODE = ("months.py", "cells.py")  # month names, cell centres

#: Per file: its rows' text in one buffer, where each row's ends, and per row its edge
#: and its edge and layer together (``metro_rows.Rows.edge`` / ``.place``).
_Text = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: A file's text as pieces in order: formatted rows, and views of the last build's text.
Pieces = list[bytes | memoryview]


class TextCache:
    """``path``: the file; ``source``: the Metro cache whose kept sums the rows show;
    ``settings``: what else a row depends on (the publication numbers)."""

    def __init__(self, path: Path, source: SumsSource, settings: str, *, reuse: bool) -> None:
        self.path, self.source, self.use = path, source, reuse
        here, core = Path(__file__).resolve().parent, Path(heatmetro.core.__file__).parent
        code = code_digest([here / n for n in _CODE] + [core / n for n in _CORE_CODE])
        self.key = hashlib.sha256(f"{FORMAT}:{settings}:{code}".encode()).hexdigest()
        self._old: dict[str, _Text] | None = None
        self._new: dict[str, tuple[Pieces, np.ndarray, np.ndarray, np.ndarray]] = {}
        self.kept = 0  # rows whose text was taken from the last build

    def body(
        self,
        name: str,
        edge: np.ndarray,
        place: np.ndarray,
        lines: Callable[[np.ndarray], list[bytes]],
    ) -> Pieces:
        """File ``name``'s rows (per row its ``edge`` and ``place``), one after the other,
        as pieces of text in order: ``lines(rows)`` formats the given rows; the others are
        the last build's text, as views of it (never copied into one new buffer: the
        file, the zip and this cache take the pieces as they are)."""
        kept = self.kept_rows(name, edge, place)
        if kept is not None:
            return self._spliced(name, edge, place, self._load()[name], *kept, lines)
        pieces = lines(np.arange(len(edge)))
        sizes = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        out: Pieces = [b"".join(pieces)]
        self._new[name] = (out, np.cumsum(sizes), edge, place)
        return out

    def kept_rows(
        self, name: str, edge: np.ndarray, place: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Of file ``name``'s rows (per row its ``edge`` and ``place``): which are of
        recounted edges (``fresh``), and which of the last build's rows were (``was``);
        every other row is the last build's, in order. None: no row is kept."""
        old = self._load().get(name)
        touched = self.source.touched()
        if old is None or touched is None:
            return None
        old_edge, old_place = old[2], old[3]
        fresh, was = in_sorted(edge, touched), in_sorted(old_edge, touched)
        if not np.array_equal(place[~fresh], old_place[~was]):
            return None
        return fresh, was

    def _spliced(
        self,
        name: str,
        edge: np.ndarray,
        place: np.ndarray,
        old: _Text,
        fresh: np.ndarray,
        was: np.ndarray,
        lines: Callable[[np.ndarray], list[bytes]],
    ) -> Pieces:
        """The rows of ``fresh`` formatted, the others the last build's rows (``~was``, in
        order): each run of consecutive kept rows is one slice of the old text."""
        text, ends = old[0], old[1]
        starts = np.r_[0, ends[:-1]][: len(ends)]
        redo, new_at, old_at = np.flatnonzero(fresh), np.flatnonzero(~fresh), np.flatnonzero(~was)
        made = lines(redo)
        sizes = np.zeros(len(edge), dtype=np.int64)
        sizes[redo] = np.fromiter(map(len, made), dtype=np.int64, count=len(made))
        sizes[new_at] = (ends - starts)[old_at]
        # A run of kept rows starts where either side skips a row.
        run = np.ones(len(new_at), dtype=bool)
        run[1:] = (np.diff(new_at) != 1) | (np.diff(old_at) != 1)
        first = np.flatnonzero(run)
        last = np.r_[first[1:], len(new_at)][: len(first)] - 1
        view = text.data
        kept = [view[a:b] for a, b in zip(starts[old_at[first]].tolist(),
                                          ends[old_at[last]].tolist(), strict=True)]  # fmt: skip
        # Both kinds of piece in file order: by their first row.
        at = np.concatenate([new_at[first], redo])
        pieces = [*kept, *made]
        out = [pieces[i] for i in np.argsort(at, kind="stable").tolist()]
        self.kept += len(old_at)
        self._new[name] = (out, np.cumsum(sizes), edge, place)
        return out

    def _load(self) -> dict[str, _Text]:
        if self._old is not None:
            return self._old
        self._old = {}
        token = self.source.token
        if not self.use or token is None:
            return self._old
        try:
            # Views of one memory map (npz_mapped): no copy of the text, which is checked
            # against its CRC-32 below anyway.
            npz = load_mapped(self.path)
            meta = json.loads(bytes(npz["meta"]).decode())
            if meta.get("key") != self.key or meta.get("token") != token:
                return self._old
            for i, name in enumerate(meta["files"]):
                text, ends = npz[f"text{i}"], npz[f"ends{i}"]
                if zlib.crc32(text.data) != meta["crc"][i]:  # the bytes are published as read
                    self._old = {}
                    return self._old
                edge, place = npz[f"edge{i}"], npz[f"place{i}"]
                n = len(ends)
                if not (text.dtype == np.uint8 and ends.dtype == np.int64
                        and edge.dtype == place.dtype == np.uint64
                        and len(edge) == len(place) == n
                        and (n == 0 or int(ends[-1]) == len(text))
                        and bool(np.all(np.diff(np.r_[0, ends]) >= 0))):  # fmt: skip
                    self._old = {}
                    return self._old
                self._old[str(name)] = (text, ends, edge, place)
        except Exception:  # noqa: BLE001 - any unreadable file (a torn zip too): none kept
            self._old = {}
        return self._old

    def save(self) -> None:
        """This build's rows, tagged with the Metro cache file as this build left it."""
        token = self.source.token
        if token is None:  # no Metro cache file to pair with
            self.path.unlink(missing_ok=True)
            return
        files = sorted(self._new)
        members: dict[str, np.ndarray | Pieces] = {}
        crc = []
        for i, name in enumerate(files):
            text, ends, edge, place = self._new[name]
            members |= {f"text{i}": text, f"ends{i}": ends, f"edge{i}": edge, f"place{i}": place}
            value = 0
            for piece in text:
                value = zlib.crc32(piece, value)
            crc.append(value)
        meta = {"key": self.key, "token": token, "files": files, "crc": crc}
        members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        tmp = temporary_for(self.path)
        try:
            with tmp.open("wb") as fh:
                _write_npz(fh, members)
            tmp.replace(self.path)
        except OSError:  # the next build formats every row
            tmp.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _write_npz(fh: BinaryIO, members: dict[str, np.ndarray | Pieces]) -> None:
    """``np.savez`` of ``members`` (stored, not deflated: ``load_mapped`` reads it), a
    file's text written from its pieces as one uint8 array, never joined first."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in members.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                if isinstance(value, np.ndarray):
                    npy_format.write_array(out, value, allow_pickle=False)
                    continue
                size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in value)
                header = {"descr": "|u1", "fortran_order": False, "shape": (size,)}
                npy_format.write_array_header_1_0(out, header)
                out.writelines(value)
