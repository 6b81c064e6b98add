"""Reference (tests only): splats drawn pixel row by pixel row, written plainly.

The definition ``heatmetro.site_builder.raster`` must meet exactly: in a tile, a pixel
``(x, y)`` gets the highest level of the discs whose row ``y`` holds it, where row ``y``
of a disc centred at ``(cx, cy)`` (tile pixels) with radius ``r`` is in the disc when
``(y + 0.5 - cy)**2 <= r**2`` and then spans ``ceil(cx - w - 0.5) .. floor(cx + w - 0.5)``,
``w = sqrt(r**2 - (y + 0.5 - cy)**2)``. Every row of every tile is tried for every disc.
"""

from __future__ import annotations

import math

import numpy as np

TILE = 256


def reference_tile(discs: list[tuple[float, float, float, int]]) -> np.ndarray:
    """``(256, 256)`` uint8 levels of one tile from ``(cx, cy, r, level)`` in tile pixels."""
    out = np.zeros((TILE, TILE), dtype=np.uint8)
    for cx, cy, r, level in discs:
        for y in range(TILE):
            dy2 = (y + 0.5 - cy) ** 2
            if dy2 > r * r:
                continue
            w = math.sqrt(r * r - dy2)
            for x in range(max(math.ceil(cx - w - 0.5), 0), min(math.floor(cx + w - 0.5), 255) + 1):
                out[y, x] = max(out[y, x], level)
    return out


def reference_zoom(
    px: np.ndarray, py: np.ndarray, radius: np.ndarray, level: np.ndarray, z: int
) -> dict[tuple[int, int], np.ndarray]:
    """Every tile ``(x, y)`` of zoom ``z`` with heat, from discs in global pixels; a disc
    near the antimeridian also draws on the far side of the world (its copy one world
    width away)."""
    world = TILE << z
    tiles: dict[tuple[int, int], list[tuple[float, float, float, int]]] = {}
    for cx, cy, r, lev in zip(
        px.tolist(), py.tolist(), radius.tolist(), level.tolist(), strict=True
    ):
        for shift in (-world, 0, world):
            for tx in range(
                math.floor((cx + shift - r - 1) / TILE), math.floor((cx + shift + r + 1) / TILE) + 1
            ):
                for ty in range(
                    math.floor((cy - r - 1) / TILE), math.floor((cy + r + 1) / TILE) + 1
                ):
                    if 0 <= tx < (1 << z) and 0 <= ty < (1 << z):
                        disc = (cx + shift - tx * TILE, cy - ty * TILE, r, lev)
                        tiles.setdefault((tx, ty), []).append(disc)
    drawn = {key: reference_tile(discs) for key, discs in tiles.items()}
    return {key: levels for key, levels in drawn.items() if levels.any()}
