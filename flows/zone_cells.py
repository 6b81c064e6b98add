"""Removing the cells that may overlap a privacy zone from a fresh path, fast.

``state.path_ops.drop_zone_cells`` looks up each distinct cell's centre in h3-py; a
res-13 path has hundreds of thousands of cells per batch. Here h3o's centres (within
2 cm of h3-py's, ``tests/test_h3_vector.py``) rule out every cell clearly away from all
zones, and h3-py's own rule decides the rest, so the result is exactly
``drop_zone_cells``'s (``tests/test_batch_equivalence.py`` compares).
"""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.geo import haversine_m
from heatmetro.core.h3_vector import cells_to_latlng
from heatmetro.state.path_ops import drop_rows
from heatmetro.state.settings import EffectiveZone, cells_touching_zones


def drop_zone_cells(path: np.ndarray, res: int, zones: tuple[EffectiveZone, ...]) -> np.ndarray:
    """Remove every cell whose hexagon may overlap a zone, splitting the track there."""
    if not zones or len(path) == 0:
        return path
    lat, lng = cells_to_latlng(path["cell"])
    # Wider than any margin cells_touching_zones adds (1.5 edges), plus far more than
    # the centres' 2 cm disagreement.
    reach = 3.0 * h3.average_hexagon_edge_length(res, "m") + 1.0
    near = np.zeros(len(path), dtype=bool)
    for z in zones:
        near |= haversine_m(lat, lng, z.lat, z.lng) <= z.radius_m + reach
    drop = np.zeros(len(path), dtype=bool)
    rows = np.flatnonzero(near)
    drop[rows] = cells_touching_zones(path["cell"][rows], res, zones)
    return drop_rows(path, drop)
