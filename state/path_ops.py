"""Operations on a stored, already-trimmed path (``PATH_DTYPE``): trimming it further.

Used when an athlete asks to hide more (a new zone, a larger hide distance): the raw
points are long gone, so the extra cut is made on the cells themselves, always erring
on the side of removing more.
"""

from __future__ import annotations

import numpy as np

from heatmetro.core.cells import cell_centres
from heatmetro.core.geo import between_end_circles, step_lengths_m
from heatmetro.state.settings import EffectiveZone, cells_touching_zones


def drop_rows(path: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Remove rows where ``drop`` is true, splitting the track where rows went missing."""
    if not drop.any():
        return path
    keep = ~drop
    piece = path["piece"]
    prev_keep = np.r_[False, keep[:-1]]
    same_piece = np.r_[False, piece[1:] == piece[:-1]]
    starts = keep & ~(prev_keep & same_piece)
    new_piece = np.cumsum(starts) - 1
    out = path[keep].copy()
    out["piece"] = new_piece[keep]
    return out


def drop_zone_cells(path: np.ndarray, res: int, zones: tuple[EffectiveZone, ...]) -> np.ndarray:
    """Remove every cell whose hexagon may overlap a zone, splitting the track there."""
    if not zones or len(path) == 0:
        return path
    return drop_rows(path, cells_touching_zones(path["cell"], res, zones))


def cut_path_ends(path: np.ndarray, start_m: float, end_m: float) -> np.ndarray:
    """Drop cells within ``start_m`` of the path's start and ``end_m`` of its end.

    Distance is measured along the cell centres, which is never longer than the track
    itself, so at least as much is removed as the points would have lost.
    """
    return drop_rows(path, ends_to_drop(path, start_m, end_m))


def ends_to_drop(path: np.ndarray, start_m: float, end_m: float) -> np.ndarray:
    """The rows ``cut_path_ends`` drops."""
    drop = np.zeros(len(path), dtype=bool)
    if len(path) == 0 or (start_m <= 0 and end_m <= 0):
        return drop
    lat, lng = cell_centres(path["cell"])
    along = np.r_[0.0, np.cumsum(step_lengths_m(lat, lng))]
    total = along[-1]
    if start_m > 0:
        drop |= along < start_m
    if end_m > 0:
        drop |= along > total - end_m
    return drop


def cut_path_circles(path: np.ndarray, start_radius_m: float, end_radius_m: float) -> np.ndarray:
    """Drop the cells before the path first leaves the circle of ``start_radius_m``
    around its first cell's centre, and after it last enters the one of
    ``end_radius_m`` around its last cell's (a radius of 0: nothing at that end)."""
    return drop_rows(path, circles_to_drop(path, start_radius_m, end_radius_m))


def circles_to_drop(path: np.ndarray, start_radius_m: float, end_radius_m: float) -> np.ndarray:
    """The rows ``cut_path_circles`` drops."""
    if len(path) == 0 or (start_radius_m <= 0 and end_radius_m <= 0):
        return np.zeros(len(path), dtype=bool)
    lat, lng = cell_centres(path["cell"])
    keep = between_end_circles(
        lat, lng, max(start_radius_m, 0.0), max(end_radius_m, 0.0), path["t"].astype(np.float64)
    )
    return ~keep
