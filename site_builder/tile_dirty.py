"""Plan only the tiles a rebuild may draw differently, from the last build's cell levels.

A tile's digest (``tile_cache.tile_digests``) and pixels depend only on the ``(cell,
level)`` pairs whose splats touch it. When a layer's input changed, a full plan pairs
every cell of every zoom with its tiles, to find that most tiles' digests are the
published ones (at four towns, 1% of the athletes change ~24% of the tiles, and
planning was ~1 s of a rebuild's CPU). With the last build's cells and levels of each
resolution kept beside its manifest, a rebuild finds the cells that came, went or
changed level, the tiles their splats touch ("dirty"), and plans only the cells that
touch a dirty tile, keeping only the dirty tiles' pairs. Every other tile of the last
build is carried over as it was: its ``(cell, level)`` pairs are the same, so are its
digest and bytes. The result (tile keys, digests) is what a full plan gives, tile for
tile (tests/test_tile_dirty.py); the tiles carried over have no pairs in the plan
("ghosts"), and are never drawn (their digests are the manifest's: reused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from heatmetro.site_builder.raster import ZoomPlan, in_sorted, plan_zoom
from heatmetro.site_builder.tile_cache import tile_digests, tile_ids
from heatmetro.site_builder.tile_levels import cell_geometry
from heatmetro.site_builder.tile_math import TILE_SIZE, Projected

__all__ = ["LevelChange", "level_change", "plan_dirty"]

#: Past this share of the last build's tiles of a zoom dirty, a full plan costs less.
FULL_PLAN_SHARE = 0.5
# Tiles in the grid ``_lookup`` reads (a bit each): beyond, a binary search per cell.
_MAX_GRID = 1 << 24


@dataclass(frozen=True)
class LevelChange:
    """How one resolution's drawn cells differ from the last build's."""

    changed: np.ndarray  # indices of the new cells that are new or at another level
    gone: Projected  # the splats (at zoom 0) of the last build's cells no longer drawn
    gone_level: np.ndarray  # their levels then (a level 0 cell was never drawn)


def level_change(
    cells: np.ndarray, level: np.ndarray, old_cells: np.ndarray, old_level: np.ndarray, res: int
) -> LevelChange:
    """The change from ``(old_cells, old_level)`` to ``(cells, level)``, both sorted by cell."""
    at = np.minimum(np.searchsorted(old_cells, cells), max(old_cells.size - 1, 0))
    same = (old_cells[at] == cells) & (old_level[at] == level) if old_cells.size else at < 0
    still = np.zeros(old_cells.size, dtype=bool)
    still[at[old_cells[at] == cells] if old_cells.size else at[:0]] = True
    gone = old_cells[~still]
    lat, lng, radius = cell_geometry(gone, res)
    return LevelChange(np.flatnonzero(~same), Projected.of(lng, lat, radius), old_level[~still])


def plan_dirty(
    z: int,
    splats: tuple[np.ndarray, np.ndarray, np.ndarray],
    level: np.ndarray,
    cells: np.ndarray,
    change: LevelChange,
    old_ids: np.ndarray,
    old_digests: np.ndarray,
    settings: int,
) -> tuple[ZoomPlan, np.ndarray, np.ndarray]:
    """``(plan, tile ids, digests)`` of zoom ``z`` as a full plan of ``splats`` (this
    zoom's ``(px, py, radius)`` of ``cells``) gives them, the tiles no change touches
    carried over from the last build's sorted ``old_ids`` and ``old_digests``."""
    px, py, radius = splats
    gx, gy, gr = change.gone.at(z)
    # Only a changed cell's tiles can change: those its splat touches now or touched then.
    c = change.changed
    dirty = np.union1d(
        plan_zoom(px[c], py[c], radius[c], level[c], z).tile_key,
        plan_zoom(gx, gy, gr, change.gone_level, z).tile_key,
    )
    first, after = (np.uint64(zoom) << np.uint64(48) for zoom in (z, z + 1))
    lo, hi = np.searchsorted(old_ids, [first, after])
    if dirty.size > FULL_PLAN_SHARE * (hi - lo):  # the low zooms: a few tiles, all touched
        plan = plan_zoom(px, py, radius, level, z)
        return plan, tile_ids(z, plan.tile_key), tile_digests(plan, cells, settings)
    k = _touching(z, px, py, radius, dirty)
    plan = plan_zoom(px[k], py[k], radius[k], level[k], z, only=dirty)
    digests = tile_digests(plan, cells[k], settings)
    # The last build's tiles of this zoom that no change touched: carried over.
    ids = old_ids[lo:hi]
    xy = (ids >> np.uint64(24)) & np.uint64(0xFFFFFF), ids & np.uint64(0xFFFFFF)
    keys = (xy[0] * np.uint64(1 << z) + xy[1]).astype(np.int64)
    ghost = ~in_sorted(keys, dirty)
    return _with_ghosts(z, plan, digests, keys[ghost], old_digests[lo:hi][ghost])


def _touching(
    z: int, px: np.ndarray, py: np.ndarray, radius: np.ndarray, dirty: np.ndarray
) -> np.ndarray:
    """Indices of the cells whose splat may touch a ``dirty`` tile: a bounding box's
    corner tiles are all its tiles up to 2 x 2, and the few larger boxes are kept
    (``plan_zoom(..., only=dirty)`` then keeps only the dirty tiles' pairs)."""
    n = 1 << z
    inv = 1.0 / TILE_SIZE  # the same floors as ``plan_zoom``
    tx0 = np.floor((px - radius) * inv).astype(np.int64)
    tx1 = np.floor((px + radius) * inv).astype(np.int64)
    ty0 = np.clip(np.floor((py - radius) * inv).astype(np.int64), 0, n - 1)
    ty1 = np.clip(np.floor((py + radius) * inv).astype(np.int64), 0, n - 1)
    is_dirty = _lookup(dirty, n)
    x0, x1 = tx0 & (n - 1), tx1 & (n - 1)  # wrapped across the antimeridian
    near = is_dirty(x0, ty0)
    # Most splats lie in one tile: only those crossing a border look at more corners.
    cross = np.flatnonzero((tx1 != tx0) | (ty1 != ty0))
    x0, x1, y0, y1 = x0[cross], x1[cross], ty0[cross], ty1[cross]
    wide = (tx1[cross] - tx0[cross] > 1) | (y1 - y0 > 1)
    near[cross] |= wide | is_dirty(x1, y0) | is_dirty(x0, y1) | is_dirty(x1, y1)
    return np.flatnonzero(near)


def _lookup(dirty: np.ndarray, n: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Whether tile ``(x, y)`` is dirty, for arrays of them: one read of a grid over the
    dirty tiles' extent (a town's tiles span a few hundred), or a search where it is huge."""
    dx, dy = dirty // n, dirty % n
    if not dirty.size or (int(np.ptp(dx)) + 1) * (int(np.ptp(dy)) + 1) > _MAX_GRID:
        return lambda x, y: in_sorted(x * n + y, dirty)
    x0, y0 = int(dx.min()), int(dy.min())
    grid = np.zeros((int(dx.max()) - x0 + 2, int(dy.max()) - y0 + 2), dtype=bool)
    grid[dx - x0, dy - y0] = True  # the last row and column stay clean: "outside"

    def is_dirty(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        gx = np.clip(x - x0, -1, grid.shape[0] - 1)  # -1: the clean last row
        gy = np.clip(y - y0, -1, grid.shape[1] - 1)
        return grid[gx, gy]

    return is_dirty


def _with_ghosts(
    z: int, plan: ZoomPlan, digests: np.ndarray, ghost_keys: np.ndarray, ghost_digests: np.ndarray
) -> tuple[ZoomPlan, np.ndarray, np.ndarray]:
    """``plan`` (the dirty tiles) with the carried-over tiles inserted in key order, each
    with no pairs (an empty slice where the next tile's starts, no cost); the ids and
    digests of all of them."""
    m = plan.tile_key.size
    order = np.argsort(np.concatenate([plan.tile_key, ghost_keys]), kind="stable")
    real = order < m
    after = np.searchsorted(plan.tile_key, ghost_keys)  # the next dirty tile's index
    pairs = int(plan.tile_end[-1]) if m else 0
    ghost_start = np.append(plan.tile_start, pairs)[after]
    ghost_cost = np.append(0.0, plan.tile_cost)[after]
    start = np.concatenate([plan.tile_start, ghost_start])[order]
    end = np.concatenate([plan.tile_end, ghost_start])[order]
    cost = np.concatenate([plan.tile_cost, ghost_cost])[order]
    key = np.concatenate([plan.tile_key, ghost_keys])[order]
    assert bool(real.sum() == m)
    merged = replace(plan, tile_key=key, tile_start=start, tile_end=end, tile_cost=cost)
    every = np.concatenate([digests, ghost_digests.reshape(-1, 2)])[order]
    return merged, tile_ids(z, key), every
