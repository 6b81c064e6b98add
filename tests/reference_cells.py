"""Reference (tests only): trimmed points of ONE activity -> the ordered H3 cells of its
track, written plainly. ``heatmetro.flows.batch`` must give exactly this for every
activity, whatever batch it is in (``tests/test_batch_equivalence.py``).
"""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.geo import haversine_m
from heatmetro.state.path_ops import drop_zone_cells
from heatmetro.state.records import PATH_DTYPE
from heatmetro.state.settings import EffectiveZone
from tests.reference_trim import TrimmedPoints

SAMPLE_EDGES = 1.0


def sample_points(pts: TrimmedPoints, spacing_m: float) -> np.ndarray:
    """Indexes of one point per ``spacing_m`` of track in each piece, plus piece ends."""
    n = len(pts.lat)
    if n <= 2:
        return np.arange(n)
    step = pts.step
    same = pts.piece[1:] == pts.piece[:-1]
    along = np.empty(n)
    along[0] = 0.0
    np.cumsum(np.where(same, step, 0.0), out=along[1:])
    bucket = (along / spacing_m).astype(np.int64)
    keep = np.ones(n, dtype=bool)
    keep[1:] = (bucket[1:] != bucket[:-1]) | ~same  # first point of each bucket / piece
    keep[:-1] |= ~same  # last point of each piece
    keep[-1] = True
    return np.flatnonzero(keep)


SPEED_WINDOW_S = 15.0


def smoothed_speed(pts: TrimmedPoints) -> np.ndarray:
    """Speed (m/s) at each point over about +-15 s of its own piece; NaN if unknown:
    the straight lines from the window's first point to this one and on to its last,
    over the window's time (noise does not add up as it does along every step).
    """
    n = len(pts.t)
    if n < 2:
        return np.full(n, np.nan)
    # Keep each window inside its piece by offsetting time between pieces.
    t = pts.t + pts.piece * 1e7
    out = np.full(n, np.nan)
    for i in range(n):
        lo = int(np.searchsorted(t, t[i] - SPEED_WINDOW_S))
        hi = int(np.searchsorted(t, t[i] + SPEED_WINDOW_S, side="right")) - 1
        dt = pts.t[hi] - pts.t[lo]
        if dt > 0:
            way = haversine_m(pts.lat[lo], pts.lng[lo], pts.lat[i], pts.lng[i]) + haversine_m(
                pts.lat[i], pts.lng[i], pts.lat[hi], pts.lng[hi]
            )
            out[i] = way / dt
    return out


def track_path(pts: TrimmedPoints, *, res: int, zones: tuple[EffectiveZone, ...]) -> np.ndarray:
    """The ``PATH_DTYPE`` array of the trimmed track at resolution ``res``."""
    if len(pts.lat) == 0:
        return np.zeros(0, PATH_DTYPE)
    # Sampling about once per hexagon width keeps every cell the track crosses within one
    # grid step of a sample; the grid path fills the rest. (h3 calls are the hot path.)
    idx = sample_points(pts, SAMPLE_EDGES * h3.average_hexagon_edge_length(res, "m"))
    to_cell = h3.latlng_to_cell
    cells = np.fromiter(
        (
            to_cell(a, b, res)
            for a, b in zip(pts.lat[idx].tolist(), pts.lng[idx].tolist(), strict=True)
        ),
        dtype=np.uint64,
        count=len(idx),
    )
    t = pts.t[idx]
    piece = pts.piece[idx]
    v = smoothed_speed(pts)[idx]
    change = np.ones(len(cells), dtype=bool)
    change[1:] = (cells[1:] != cells[:-1]) | (piece[1:] != piece[:-1])
    cells, t, piece, v = cells[change], t[change], piece[change], v[change]
    path = np.zeros(len(cells), PATH_DTYPE)
    path["cell"], path["t"], path["piece"], path["v"] = cells, t, piece, v
    # Consecutive cells of one piece that are not neighbours need the grid path between.
    same = np.flatnonzero(piece[1:] == piece[:-1])
    neighbours = h3.are_neighbor_cells
    ca, cb = cells[same].tolist(), cells[same + 1].tolist()
    gaps = [k for k, a, b in zip(same.tolist(), ca, cb, strict=True) if not neighbours(a, b)]
    if gaps:
        path = _fill(path, gaps)
    return drop_zone_cells(path, res, zones)


def _fill(path: np.ndarray, gaps: list[int]) -> np.ndarray:
    """Insert h3-py's grid path, one pair at a time, between the pairs at ``gaps``."""
    rows, at = [], set(gaps)
    for k, row in enumerate(path.tolist()):
        rows.append(row)
        if k in at:
            cell, t, v, piece = row
            t_next = float(path["t"][k + 1])
            try:
                line = h3.grid_path_cells(int(cell), int(path["cell"][k + 1]))
            except Exception:  # noqa: BLE001 - no grid path across some pentagon distortions
                continue
            n = len(line) - 1
            rows += [(c, t + (t_next - t) * i / n, v, piece) for i, c in enumerate(line[1:-1], 1)]
    return np.array(rows, dtype=PATH_DTYPE)
