"""Where the map opens: on the densest heat, not on the whole extent of the data.

One group trip abroad would otherwise shrink the home city to a dot. The published cells
are grouped by their H3 res-6 parent (~36 km2, a district); the parent with the most
heat wins, and the view is the published cells within ``VIEW_RING`` res-6 rings of it
(a city and its suburbs, ~25 km), trimmed to the 1st..99th percentile of their
coordinates so a single far cell of that area does not widen it. Deterministic: ties go
to the lowest parent id.
"""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.h3_vector import cells_to_latlng
from heatmetro.site_builder.tile_levels import cell_geometry, sum_by_cell
from heatmetro.state.aggregates import cells_to_parent

__all__ = ["densest_view"]

VIEW_RESOLUTION = 6
VIEW_RING = 2
TRIM = (1.0, 99.0)


def densest_view(cells: np.ndarray, heat: np.ndarray) -> tuple[float, float, float, float] | None:
    """``(south, west, north, east)`` around the densest heat, or ``None`` without cells.

    Args:
        cells: published H3 cells (any one resolution >= ``VIEW_RESOLUTION``).
        heat: heat per cell.
    """
    cells = np.asarray(cells, dtype=np.uint64)
    if cells.size == 0:
        return None
    heat = np.asarray(heat, dtype=np.float64)
    parents = cells_to_parent(cells, VIEW_RESOLUTION)
    uniq, total = sum_by_cell(parents, heat)  # a layer's cells come sorted: no sort here
    best = int(uniq[int(np.argmax(total))])  # argmax: the first (lowest id) of equals
    near = np.array(sorted(h3.grid_disk(best, VIEW_RING)), dtype=np.uint64)
    keep = np.isin(parents, near)
    if cells.size > 1 and bool((cells[1:] > cells[:-1]).all()):
        # The centres the tiles just looked up (or one h3o call for those not known).
        lat, lng, _ = cell_geometry(cells[keep], h3.get_resolution(int(cells[0])))
    else:
        lat, lng = cells_to_latlng(cells[keep])  # one h3o call: 100,000 cells in a city
    south, north = np.percentile(lat, TRIM)
    west, east = np.percentile(lng, TRIM)
    return float(south), float(west), float(north), float(east)
