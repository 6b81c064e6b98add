"""Reference (tests only): trimmed points of ONE activity -> its Metro path, one fix at a
time. ``heatmetro.flows.metro_path`` (vectorised over a batch) must give exactly this.

The rule, written plainly: a fix moves the track into its Metro cell only if it lies at
least ``CROSSING_MARGIN_M`` inside that cell's hexagon; firm cells that are not
neighbours are joined along the H3 grid; cells that may overlap a zone are dropped.
"""

from __future__ import annotations

import math

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.geo import EARTH_RADIUS_M
from heatmetro.flows.metro_path import CROSSING_MARGIN_M
from heatmetro.state.path_ops import drop_zone_cells
from heatmetro.state.records import PATH_DTYPE
from heatmetro.state.settings import EffectiveZone
from tests.reference_cells import _fill, smoothed_speed
from tests.reference_trim import TrimmedPoints

M_PER_DEG = math.pi / 180.0 * EARTH_RADIUS_M


def depth_m(lat: float, lng: float, cell: int) -> float:
    """How far (m) the point lies inside the cell's hexagon: its distance to the nearest
    edge line, measured flat about the cell's centre (positive inside)."""
    lat0, lng0 = h3.cell_to_latlng(cell)
    k = math.cos(math.radians(lat0)) * M_PER_DEG

    def xy(la: float, lo: float) -> tuple[float, float]:
        return ((lo - lng0 + 180.0) % 360.0 - 180.0) * k, (la - lat0) * M_PER_DEG

    px, py = xy(lat, lng)
    ring = h3.cell_to_boundary(cell)
    best = math.inf
    for p, q in zip(ring, ring[1:] + ring[:1], strict=True):
        (ax, ay), (bx, by) = xy(*p), xy(*q)
        nx, ny = -(by - ay), bx - ax
        norm = math.hypot(nx, ny) or 1.0
        if nx * -ax + ny * -ay < 0:  # point the normal at the centre (the origin)
            norm = -norm
        best = min(best, (nx / norm) * (px - ax) + (ny / norm) * (py - ay))
    return best


def metro_path(pts: TrimmedPoints, *, res: int, zones: tuple[EffectiveZone, ...]) -> np.ndarray:
    speed = smoothed_speed(pts)
    rows: list[tuple[int, float, float, int]] = []
    for i in range(len(pts.lat)):
        lat, lng, piece = float(pts.lat[i]), float(pts.lng[i]), int(pts.piece[i])
        cell = h3.latlng_to_cell(lat, lng, res)
        if depth_m(lat, lng, cell) < CROSSING_MARGIN_M:
            continue  # near a border: the track stays where it firmly was
        if rows and rows[-1][0] == cell and rows[-1][3] == piece:
            continue
        t = float(np.float32(pts.t[i]))
        v = float(np.float32(speed[i]))
        rows.append((cell, t, v, piece))
    path = np.zeros(len(rows), PATH_DTYPE)
    for k, (cell, t, v, piece) in enumerate(rows):
        path[k] = (cell, t, v, piece)
    gaps = [
        k
        for k in range(len(rows) - 1)
        if rows[k][3] == rows[k + 1][3] and not h3.are_neighbor_cells(rows[k][0], rows[k + 1][0])
    ]
    if gaps:
        path = _fill(path, gaps)
    return drop_zone_cells(path, res, zones)
