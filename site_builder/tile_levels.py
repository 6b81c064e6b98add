"""Heat per zoom: published cells coarsened to the zoom's H3 resolution and given a ramp level.

Coarser zooms draw PARENT cells (``cells_to_parent`` of the published cells, heat summed),
never anything re-read from the store.

The level of a cell is a stable log scale, not a histogram equalisation over all cells:
``log(1 + heat) / log(1 + ref)`` where ``ref`` is the zoom's 99th-percentile heat rounded UP to a
power of two. A quiet town and a busy city both read (the log compresses a 100x
difference into a few ramp steps and the top 1% saturates), and, because ``ref`` moves
only when the busiest cells double, a change to a few athletes changes the levels of the
cells they touched and of no others: what lets a rebuild re-render only those tiles.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import h3
import numpy as np

from heatmetro.core.h3_vector import cells_to_latlng
from heatmetro.site_builder.npz_mapped import load_mapped
from heatmetro.site_builder.tile_colours import MIN_INTENSITY
from heatmetro.site_builder.tile_math import RADIUS_ANCESTOR_RES, cell_radius_m
from heatmetro.state.aggregates import cells_to_parent

__all__ = [
    "Level",
    "intensity",
    "cell_geometry",
    "levels_for",
    "load_geometry",
    "reference_heat",
    "save_geometry",
    "sum_by_cell",
]

#: The heat at this quantile of a zoom's cells, rounded up to a power of two, is full intensity.
REFERENCE_QUANTILE = 0.99


@dataclass(frozen=True)
class Level:
    """Cells of one H3 resolution with everything drawing needs (shared by zooms)."""

    cells: np.ndarray  # uint64, sorted
    heat: np.ndarray  # float64
    lat: np.ndarray
    lng: np.ndarray
    radius_m: np.ndarray
    level: np.ndarray  # uint8 ramp index (64..255; 0 is "no heat")


def sum_by_cell(cells: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique sorted cells with their heat summed (parents of many children, duplicates)."""
    cells = np.asarray(cells).reshape(-1)
    rising = cells[1:] > cells[:-1]
    if cells.size and bool(rising.all()):  # unique already (a layer's published cells)
        # ``0.0 +`` each heat: what summing one value from zero gives (-0.0 -> 0.0).
        return cells, np.asarray(heat, dtype=np.float64).reshape(-1) + 0.0
    if cells.size > 1 and not bool((rising | (cells[1:] == cells[:-1])).all()):
        unique, inverse = np.unique(cells, return_inverse=True)
        return unique, np.bincount(inverse.reshape(-1), weights=heat, minlength=unique.size)
    # Sorted already (the parents of sorted cells are, coarsening zoom by zoom): equal
    # cells are runs, no sort needed; the same sums, added in the same order.
    first = np.ones(cells.size, dtype=bool)
    first[1:] = cells[1:] != cells[:-1]
    unique = cells[first]
    inverse = np.cumsum(first) - 1
    return unique, np.bincount(inverse, weights=heat, minlength=unique.size)


def reference_heat(heat: np.ndarray) -> float:
    """The heat drawn at full intensity: the 99th percentile rounded up to a power of 2 (>= 2)."""
    if heat.size == 0:
        return 2.0
    q = float(np.quantile(heat, REFERENCE_QUANTILE, method="higher"))
    return float(max(2.0, 2.0 ** math.ceil(math.log2(max(q, 1.0)))))


def intensity(heat: np.ndarray) -> np.ndarray:
    """Intensity of each cell in ``[MIN_INTENSITY, 1]``: ``log(1 + heat) / log(1 + ref)``, clipped.

    ``1 +`` keeps a map where every cell has heat 1 (one athlete's own map) mid-ramp
    instead of at its darkest.

    Args:
        heat: heat per cell (activity counts, capped per athlete).

    Returns:
        float64 intensities, same shape as ``heat``; equal heats get equal intensities,
        every heat >= ``reference_heat(heat)`` gets 1.
    """
    heat = np.asarray(heat, dtype=np.float64)
    if heat.size == 0:
        return np.zeros(0, dtype=np.float64)
    ref = reference_heat(heat)
    t = np.clip(np.log1p(np.maximum(heat, 0.0)) / math.log1p(ref), 0.0, 1.0)
    return MIN_INTENSITY + (1.0 - MIN_INTENSITY) * t


# Centres and radii of the cells seen so far, per resolution (sorted ids): every layer of
# a snapshot draws mostly the same cells, and a centre lookup is not free. Kept in
# state_dir between snapshots too (``load_geometry``/``save_geometry``): next month's
# snapshot draws mostly the same streets.
_GEOMETRY: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
_GEOMETRY_MAX = 4_000_000  # cells kept per resolution (~130 MB at most)
_GREW: dict[int, int] = {}  # per resolution, cells looked up and not yet saved
#: The memo is written again only when it grew by more than this share: a rebuild that
#: draws a few hundred cells more would rewrite ~15 MB (0.08 s at four towns) to save
#: looking them up again (~0.3 us a cell).
RESAVE_SHARE = 0.01
_LOADED: set[Path] = set()
#: Names what the saved geometry was computed with: anything else is not trusted.
GEOMETRY_KEY = (
    f"centres h3ronpy {version('h3ronpy')}, areas h3 {h3.__version__}, "
    f"radius from the ancestor's area up to res {RADIUS_ANCESTOR_RES}"
)


def load_geometry(path: Path) -> None:
    """Remember the cell geometry saved in ``path`` (once per process; a missing, torn or
    foreign file is ignored: the centres are then looked up again)."""
    if path in _LOADED:
        return
    _LOADED.add(path)
    try:
        data = load_mapped(path)  # views of a memory map: only the pages searched are read
        if str(data["key"]) != GEOMETRY_KEY:
            return
        for res in data["resolutions"].tolist():
            if res not in _GEOMETRY:
                _GEOMETRY[res] = tuple(data[f"{k}{res}"] for k in ("ids", "lat", "lng", "rad"))  # type: ignore[assignment]
    except (OSError, ValueError, KeyError):
        return


def save_geometry(path: Path) -> None:
    """Write every remembered cell's geometry to ``path`` if more than ``RESAVE_SHARE``
    of them are new since it was read (atomically: write, then rename)."""
    known = sum(int(g[0].size) for g in _GEOMETRY.values())
    if sum(_GREW.values()) <= RESAVE_SHARE * known and path in _LOADED and path.is_file():
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    arrays: dict[str, np.ndarray] = {
        "key": np.array(GEOMETRY_KEY),
        "resolutions": np.array(sorted(_GEOMETRY)),
    }
    arrays |= {
        f"{k}{res}": a
        for res, g in _GEOMETRY.items()
        for k, a in zip(("ids", "lat", "lng", "rad"), g, strict=True)
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
    except OSError:  # a cache only (a full state_dir): looked up again next time
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return
    _GREW.clear()


def cell_geometry(cells: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lat, lng, radius_m)`` of sorted unique ``cells`` of resolution ``res``, memoised."""
    known = _GEOMETRY.get(res)
    if known is None:
        known = (np.zeros(0, np.uint64), np.zeros(0), np.zeros(0), np.zeros(0))
    ids, lat, lng, rad = known
    pos = np.minimum(np.searchsorted(ids, cells), max(ids.size - 1, 0))
    have = (ids[pos] == cells) if ids.size else np.zeros(cells.size, dtype=bool)
    new = cells[~have]
    if new.size:
        nlat, nlng = cells_to_latlng(new)  # vectorised: ~0.3 us a cell
        ids = np.concatenate([ids, new])
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        lat = np.concatenate([lat, nlat])[order]
        lng = np.concatenate([lng, nlng])[order]
        rad = np.concatenate([rad, cell_radius_m(new)])[order]
        if ids.size <= _GEOMETRY_MAX:
            _GEOMETRY[res] = (ids, lat, lng, rad)
            _GREW[res] = _GREW.get(res, 0) + int(new.size)
        pos = np.searchsorted(ids, cells)
    return lat[pos], lng[pos], rad[pos]


def levels_for(
    cells: np.ndarray, heat: np.ndarray, heat_resolution: int, resolutions: set[int]
) -> dict[int, Level]:
    """Drawing inputs for every resolution needed, coarsening step by step.

    Parents come from the previous (finer, already summed) resolution: fewer cells to
    handle, the same parents.
    """
    out: dict[int, Level] = {}
    cur_cells, cur_heat, cur_res = cells, heat, heat_resolution
    for res in sorted(resolutions, reverse=True):
        if res < cur_res:
            cur_cells, cur_heat = sum_by_cell(cells_to_parent(cur_cells, res), cur_heat)
            cur_res = res
        lat, lng, radius = cell_geometry(cur_cells, res)
        out[res] = Level(
            cells=cur_cells,
            heat=cur_heat,
            lat=lat,
            lng=lng,
            radius_m=radius,
            level=np.rint(255.0 * intensity(cur_heat)).astype(np.uint8),
        )
    return out
