"""Trimmed points -> the ordered H3 cells of the track (the only thing ever stored).

h3 has no vector API, so the hot path keeps h3 calls low: points closer together than
half a hexagon add nothing and are skipped, and the grid path is only asked for between
cells that are not already neighbours.
"""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np

from flows.trim import TrimmedPoints
from heatmetro.geo import step_lengths_m
from state.path_ops import drop_zone_cells
from state.records import PATH_DTYPE
from state.settings import EffectiveZone


def sample_points(pts: TrimmedPoints, spacing_m: float) -> np.ndarray:
    """Indexes of one point per ``spacing_m`` of track in each piece, plus piece ends."""
    n = len(pts.lat)
    if n <= 2:
        return np.arange(n)
    step = step_lengths_m(pts.lat, pts.lng)
    same = pts.seg[1:] == pts.seg[:-1]
    along = np.r_[0.0, np.cumsum(np.where(same, step, 0.0))]
    bucket = np.floor(along / spacing_m).astype(np.int64)
    first = np.r_[True, (bucket[1:] != bucket[:-1]) | ~same]
    last = np.r_[~same, True]
    return np.flatnonzero(first | last)


def track_path(pts: TrimmedPoints, *, res: int, zones: tuple[EffectiveZone, ...]) -> np.ndarray:
    """The ``PATH_DTYPE`` array of the trimmed track at resolution ``res``."""
    if len(pts.lat) == 0:
        return np.zeros(0, PATH_DTYPE)
    spacing = 0.5 * h3.average_hexagon_edge_length(res, "m")
    idx = sample_points(pts, spacing)
    to_cell = h3.latlng_to_cell
    cells = [to_cell(a, b, res) for a, b in zip(pts.lat[idx].tolist(), pts.lng[idx].tolist(), strict=True)]
    t = pts.t[idx].tolist()
    seg = pts.seg[idx].tolist()
    rows: list[tuple[int, float, int]] = [(cells[0], t[0], seg[0])]
    neighbours = h3.are_neighbor_cells
    for c, tc, s in zip(cells[1:], t[1:], seg[1:], strict=True):
        pc, pt, ps = rows[-1]
        if c == pc and s == ps:
            continue
        if s == ps and not neighbours(pc, c):
            rows.extend(_grid_fill(pc, pt, c, tc, s))
        rows.append((c, tc, s))
    path = np.array(rows, dtype=PATH_DTYPE)
    return drop_zone_cells(path, res, zones)


def _grid_fill(a: int, ta: float, b: int, tb: float, seg: int) -> list[tuple[int, float, int]]:
    """Cells strictly between ``a`` and ``b`` on the H3 grid, with interpolated times."""
    try:
        line = h3.grid_path_cells(a, b)
    except Exception:  # noqa: BLE001 - no grid path across some pentagon distortions
        return []
    n = len(line) - 1
    return [(line[k], ta + (tb - ta) * k / n, seg) for k in range(1, n)]
