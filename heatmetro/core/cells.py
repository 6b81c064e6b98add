"""H3 cell lookups shared by every layer (the integer API, one call per distinct cell)."""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np


def cell_centres(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(lat, lng)`` in degrees of each H3 cell; each distinct cell is looked up once."""
    cells = np.asarray(cells, dtype=np.uint64)
    if cells.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty.copy()
    uniq, inverse = np.unique(cells, return_inverse=True)
    latlng = np.array([h3.cell_to_latlng(c) for c in uniq.tolist()], dtype=np.float64)
    latlng = latlng.reshape(-1, 2)
    return latlng[inverse, 0], latlng[inverse, 1]
