"""Baseline for ``bench/snapshot.py``: the rasteriser of RENDER_VERSION 2, as it was.

Kept only to time the current one against it on the same plans in the same process (a
ratio survives a noisy machine; seconds don't). Not used by heatmetro.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from heatmetro.site_builder.raster import ZoomPlan
from heatmetro.site_builder.tile_math import TILE_SIZE

BATCH_PIXELS = 1 << 20


def runs(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs of the given lengths: each element's run index and its offset in the run.

    ``runs([2, 0, 3])`` is ``([0, 0, 2, 2, 2], [0, 1, 0, 1, 2])``: the vectorised form of
    ``for i, n in enumerate(lengths): for j in range(n)``.
    """
    run = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    return run, np.arange(run.size, dtype=np.int64) - starts[run]


def render_tiles(plan: ZoomPlan, tiles: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(tile index, levels)`` for the given tiles of ``plan`` that have heat.

    ``levels`` is a ``(256, 256)`` uint8 array of ramp indices (0 = no heat). Tiles are
    rasterised in batches up to a pixel budget (bounding memory at street zooms).
    """
    tiles = np.asarray(tiles, dtype=np.int64)
    if tiles.size == 0:
        return
    n_pairs = plan.tile_end[tiles] - plan.tile_start[tiles]
    # Upper bound of the pixels each tile's pairs write: their discs' bounding squares.
    side = 2 * np.ceil(plan.radius).astype(np.int64) + 2
    t_of, off = runs(n_pairs)
    pair_idx = plan.tile_start[tiles][t_of] + off
    cost = np.cumsum(
        np.bincount(t_of, weights=side[plan.pair_cell[pair_idx]] ** 2, minlength=tiles.size)
    )
    pair_bounds = np.r_[0, np.cumsum(n_pairs)]
    b0 = 0
    while b0 < tiles.size:
        spent = float(cost[b0 - 1]) if b0 else 0.0
        b1 = max(b0 + 1, int(np.searchsorted(cost, spent + BATCH_PIXELS, side="right")))
        sel = pair_idx[pair_bounds[b0] : pair_bounds[b1]]
        local = t_of[pair_bounds[b0] : pair_bounds[b1]] - b0
        c = plan.pair_cell[sel]
        buf = np.zeros((b1 - b0) * TILE_SIZE * TILE_SIZE, dtype=np.uint8)
        _rasterise(
            buf,
            px=plan.px[c] - plan.pair_tx[sel] * TILE_SIZE,  # tile-local, exact in float64
            py=plan.py[c] - plan.pair_ty[sel] * TILE_SIZE,
            radius=plan.radius[c],
            level=plan.level[c],
            local_tile=local,
        )
        out = buf.reshape(b1 - b0, TILE_SIZE, TILE_SIZE)
        lit = buf.reshape(b1 - b0, -1).any(axis=1)
        for t in np.flatnonzero(lit).tolist():
            yield int(tiles[b0 + t]), out[t]
        b0 = b1


def _rasterise(
    buf: np.ndarray,
    *,
    px: np.ndarray,
    py: np.ndarray,
    radius: np.ndarray,
    level: np.ndarray,
    local_tile: np.ndarray,
) -> None:
    """Max-composite splats into ``buf`` (tiles of 256x256, flattened), one span per row.

    Coordinates are relative to each pair's tile. A pixel is lit when its centre
    ``(x + 0.5, y + 0.5)`` lies within the radius of the cell centre; each row's span is
    computed from the cell alone and only then clipped to the tile, so the same pixel gets
    the same answer from either side of a tile border (no seams). ``maximum.at`` is used
    because, unlike fancy assignment, it is defined for repeated indices.
    """
    half = np.ceil(radius).astype(np.int64) + 1  # rows -half..half cover radius + 0.5
    pair, dy = runs(2 * half + 1)
    y = np.floor(py).astype(np.int64)[pair] - half[pair] + dy
    dy2 = (y + 0.5 - py[pair]) ** 2
    keep = (y >= 0) & (y < TILE_SIZE) & (dy2 <= radius[pair] ** 2)
    pair, y = pair[keep], y[keep]
    w = np.sqrt(radius[pair] ** 2 - dy2[keep])
    x0 = np.maximum(np.ceil(px[pair] - w - 0.5).astype(np.int64), 0)
    x1 = np.minimum(np.floor(px[pair] + w - 0.5).astype(np.int64), TILE_SIZE - 1)
    row, dx = runs(np.maximum(x1 - x0 + 1, 0))
    index = (local_tile[pair[row]] * TILE_SIZE + y[row]) * TILE_SIZE + x0[row] + dx
    np.maximum.at(buf, index, level[pair[row]])
