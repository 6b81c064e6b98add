"""PMTiles tile ids (the Hilbert curve of each zoom) for whole arrays of tiles at once.

The ``pmtiles`` package computes one id per call, a Python loop over the zoom's bits:
~9 µs a tile at zoom 16, more than a tenth of drawing it. These are the same loops over
bits, each step done for every tile of the array (``tests/test_hilbert.py`` checks them
against the package's own functions).
"""

from __future__ import annotations

import numpy as np

__all__ = ["tile_ids", "tile_zxy"]

#: Zooms whose ids fit in int64 (the PMTiles format goes to 31: 4**31 / 3 < 2**63).
MAX_ZOOM = 31


def _zoom_base(z: int) -> int:
    """Tiles of all the zooms before ``z``: the first id of ``z``."""
    return ((1 << (2 * z)) - 1) // 3


def tile_ids(z: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """int64 PMTiles ids of tiles ``(z, x[i], y[i])``; as ``pmtiles.tile.zxy_to_tileid``.

    Raises:
        ValueError: on a zoom outside ``0..31`` or a tile outside the zoom.
    """
    if not 0 <= z <= MAX_ZOOM:
        msg = f"tile zoom {z} outside 0..{MAX_ZOOM}"
        raise ValueError(msg)
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    if x.size and (x.min() < 0 or y.min() < 0 or max(x.max(), y.max()) >= 1 << z):
        msg = f"tile x/y outside zoom {z}"
        raise ValueError(msg)
    acc = np.full(x.shape, _zoom_base(z), dtype=np.int64)
    for a in range(z - 1, -1, -1):
        s = 1 << a
        rx = x & s
        ry = y & s
        acc += ((3 * rx) ^ ry) << a
        x, y = _rotate(s, x, y, rx, ry)
    return acc


def tile_zxy(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, x, y)`` int64 arrays of PMTiles ids; as ``pmtiles.tile.tileid_to_zxy``."""
    ids = np.asarray(ids, dtype=np.int64)
    bases = np.array([_zoom_base(z) for z in range(MAX_ZOOM + 2)], dtype=np.int64)
    z = np.searchsorted(bases, ids, side="right") - 1
    if ids.size and (ids.min() < 0 or z.max() > MAX_ZOOM):
        msg = f"tile id outside zooms 0..{MAX_ZOOM}"
        raise ValueError(msg)
    x = np.zeros_like(ids)
    y = np.zeros_like(ids)
    pos = ids - bases[z]
    for a in range(int(z.max()) if ids.size else 0):
        s = 1 << a
        inside = s < (1 << z)  # this bit is part of the tile's zoom
        rx = (pos // 2) & s
        ry = (pos ^ rx) & s
        nx, ny = _rotate(s, x, y, rx, ry)
        x = np.where(inside, nx + rx, x)
        y = np.where(inside, ny + ry, y)
        pos = np.where(inside, pos >> 1, pos)
    return z, x, y


def _rotate(
    s: int, x: np.ndarray, y: np.ndarray, rx: np.ndarray, ry: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The Hilbert quadrant's rotation, for every element (``pmtiles.tile.rotate``)."""
    turn = ry == 0
    flip = turn & (rx != 0)
    x = np.where(flip, s - 1 - x, x)
    y = np.where(flip, s - 1 - y, y)
    return np.where(turn, y, x), np.where(turn, x, y)
