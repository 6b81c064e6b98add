"""A layer's per-athlete rows as runs of other arrays' rows, not yet put together.

A rebuild's window is the cache's packs with the changed athletes' rows read afresh
(``window_cache.merge_parts``). Putting a layer's rows together copies all of them:
~100 MB of heat rows on the bench, on the heat's critical path. A threshold redone near
the changes reads only the rows in a region (``in_region``), which are taken from the
runs directly; anything else asks for ``whole()``, put together once and kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from heatmetro.core.arrays import concat_rows, opaque_rows, take_rows
from heatmetro.site_builder.window import region_index


@dataclass(frozen=True)
class Run:
    """Rows ``lo..hi - 1`` of source ``source``: its athletes ``first..first + count - 1``,
    each athlete index moved by ``shift``."""

    source: int
    lo: int
    hi: int
    shift: int
    first: int
    count: int


class SplitRows:
    """The rows ``whole()`` returns (runs of ``sources``' rows in order, athletes
    renumbered), readable by region without putting them together."""

    def __init__(self, sources: list[np.ndarray], runs: list[Run]) -> None:
        self.sources, self.runs = sources, runs
        self.dtype = sources[-1].dtype
        self._whole: np.ndarray | None = None

    def __len__(self) -> int:
        return sum(r.hi - r.lo for r in self.runs)

    @property
    def nbytes(self) -> int:
        """The bytes ``whole()`` takes."""
        return len(self) * self.dtype.itemsize

    def whole(self) -> np.ndarray:
        """All the rows, as one array (the same one every call)."""
        if self._whole is None:
            # Whole rows as opaque bytes: numpy copies a record dtype field by field (~3x).
            pieces = [opaque_rows(self.sources[r.source])[r.lo : r.hi] for r in self.runs]
            if not pieces:
                self._whole = np.zeros(0, self.dtype)
            else:
                self._whole = np.concatenate(pieces).view(self.dtype)
                self._renumber(self._whole, [r.shift for r in self.runs],
                               [r.hi - r.lo for r in self.runs])  # fmt: skip
        return self._whole

    def in_region(self, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, at)``: the rows of ``whole()`` whose cell is in ``region`` (sorted,
        distinct), in their order there, and each one's index in ``region``: what
        ``region_index`` over the whole would select, from the sources' rows in place."""
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for s in sorted({r.source for r in self.runs}):
            at = region_index(self.sources[s]["cell"], region)
            hit = np.flatnonzero(at >= 0)
            found[s] = (hit, at[hit])
        pieces, ats, shifts, sizes = [], [], [], []
        for run in self.runs:
            hit, at = found[run.source]
            a, b = np.searchsorted(hit, (run.lo, run.hi))
            pieces.append(take_rows(self.sources[run.source], hit[a:b]))
            ats.append(at[a:b])
            shifts.append(run.shift)
            sizes.append(b - a)
        if not pieces:
            return np.zeros(0, self.dtype), np.zeros(0, np.int64)
        rows = concat_rows(pieces)
        self._renumber(rows, shifts, sizes)
        return rows, np.concatenate(ats).astype(np.int64, copy=False)

    @staticmethod
    def _renumber(rows: np.ndarray, shifts: list[int], sizes: list[int]) -> None:
        """Move each run's athletes (``sizes[k]`` rows in order) by ``shifts[k]``."""
        rows["athlete"] += np.repeat(np.array(shifts, np.int64), sizes).astype(
            rows["athlete"].dtype
        )

    def of_athletes(self, index: np.ndarray) -> np.ndarray:
        """The rows of the athletes at ``index`` (increasing, numbered as in ``whole()``),
        the athletes numbered 0.. among them: from the runs, not the whole."""
        pieces, sizes = [], []
        for run in self.runs:
            start = run.first + run.shift
            a, b = np.searchsorted(index, (start, start + run.count))
            mine = index[a:b] - run.shift  # the athletes' indices in the source
            if not len(mine):
                continue
            source = self.sources[run.source]
            bounds = athlete_bounds(source["athlete"], np.concatenate([mine, mine + 1]))
            lo, hi = bounds[: len(mine)], bounds[len(mine) :]
            pieces.append(take_rows(source, row_runs(lo, hi)))
            sizes.append(hi - lo)
        if not pieces:
            return np.zeros(0, self.dtype)
        rows = concat_rows(pieces)
        rows["athlete"] = np.repeat(np.arange(len(index), dtype=np.int32), np.concatenate(sizes))
        return rows


def athlete_starts(athlete: np.ndarray, n: int) -> np.ndarray:
    """``np.searchsorted(athlete, np.arange(n + 1))`` of a sorted column: where each
    athlete's rows start."""
    return athlete_bounds(athlete, np.arange(n + 1))


def athlete_bounds(athlete: np.ndarray, want: np.ndarray) -> np.ndarray:
    """``np.searchsorted(athlete, want)`` of a sorted column. A binary search of all at
    once, step by step: numpy's would first copy the column out of its records (the rows
    of millions, for a few probes)."""
    k = len(want)
    lo, hi = np.zeros(k, np.int64), np.full(k, len(athlete), np.int64)
    last = max(len(athlete) - 1, 0)
    for _ in range(int(len(athlete)).bit_length()):
        mid = (lo + hi) >> 1
        searching = lo < hi
        right = searching & (athlete[np.minimum(mid, last)] < want)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(searching & ~right, mid, hi)
    return lo


def row_runs(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The positions ``lo[k]..hi[k] - 1`` of every run k, in order."""
    size = hi - lo
    return np.repeat(lo - np.cumsum(size) + size, size) + np.arange(int(size.sum()))


def whole(rows: np.ndarray | SplitRows) -> np.ndarray:
    """The rows as one array."""
    return rows.whole() if isinstance(rows, SplitRows) else rows


def heat_rows(arrays: Mapping[str, np.ndarray], name: str) -> np.ndarray | SplitRows:
    """Array ``name`` of a window's parts for a threshold: as runs when the parts were
    merged lazily (``window_cache.MergedArrays.split``), else the array."""
    split = getattr(arrays, "split", None)
    return split(name) if split is not None else arrays[name]
