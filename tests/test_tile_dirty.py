"""A rebuild's plan of the changed tiles only (``tile_dirty``) against a full plan.

Property: for any last build and any change (cells gone, new, at another level), the
tiles, their digests and the pixels of every tile planned with pairs are those of a
full plan of the new cells; the carried-over tiles ("ghosts") are exactly the last
build's tiles that the full plan gives the same digest.
"""

from __future__ import annotations

import h3.api.basic_int as h3i
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.site_builder import tile_dirty
from heatmetro.site_builder.raster import plan_zoom, render_tiles
from heatmetro.site_builder.tile_cache import tile_digests, tile_ids
from heatmetro.site_builder.tile_dirty import level_change, plan_dirty
from heatmetro.site_builder.tile_levels import cell_geometry
from heatmetro.site_builder.tile_math import Projected

RES = 9
SETTINGS = 12345
# A town, a town on the antimeridian (splats wrap from x = 2**z - 1 to 0), the far north.
PLACES = [(42.32, -72.63), (-16.9, 179.995), (78.2, 15.6)]


def _splats(cells: np.ndarray, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lat, lng, radius = cell_geometry(cells, RES)
    return Projected.of(lng, lat, radius).at(z)


def _full(cells: np.ndarray, level: np.ndarray, z: int):  # type: ignore[no-untyped-def]
    plan = plan_zoom(*_splats(cells, z), level, z)
    return plan, tile_ids(z, plan.tile_key), tile_digests(plan, cells, SETTINGS)


def _pixels(plan, tiles: np.ndarray) -> dict[int, bytes]:  # type: ignore[no-untyped-def]
    return {int(plan.tile_key[t]): rows.tobytes() for t, rows in render_tiles(plan, tiles)}


@st.composite
def builds(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cells around one place and their levels, before and after a change."""
    lat, lng = draw(st.sampled_from(PLACES))
    centre = h3i.latlng_to_cell(lat, lng, RES)
    area = np.array(sorted(h3i.grid_disk(centre, draw(st.integers(2, 9)))), dtype=np.uint64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    old = area[rng.random(area.size) < draw(st.floats(0.0, 0.9))]
    old_level = rng.integers(0, 256, old.size).astype(np.uint8)
    # The change: some cells go, some come, some move to another level.
    keep = rng.random(old.size) >= draw(st.floats(0.0, 0.3))
    new = np.union1d(old[keep], area[rng.random(area.size) < draw(st.floats(0.0, 0.2))])
    level = rng.integers(0, 256, new.size).astype(np.uint8)
    was = np.searchsorted(old, new)
    was_there = np.zeros(new.size, dtype=bool)
    if old.size:
        was_there = (was < old.size) & (old[np.minimum(was, old.size - 1)] == new)
    same = rng.random(new.size) >= draw(st.floats(0.0, 0.3))
    level[was_there & same] = old_level[was[was_there & same]]
    return old, old_level, new, level


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    build=builds(),
    z=st.sampled_from([0, 3, 8, 11, 13, 15]),
    # Planned from the changes at every zoom, or as it runs (a full plan where most tiles
    # changed); dirty tiles found in a grid or by a search.
    full_share=st.sampled_from([1e9, tile_dirty.FULL_PLAN_SHARE]),
    grid=st.sampled_from([0, tile_dirty._MAX_GRID]),
)
def test_plan_of_the_changes_is_the_full_plan(
    build: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    z: int,
    full_share: float,
    grid: int,
) -> None:
    old, old_level, new, level = build
    _, old_ids, old_digests = _full(old, old_level, z)
    full, ids, digests = _full(new, level, z)
    change = level_change(new, level, old, old_level, RES)
    saved = tile_dirty.FULL_PLAN_SHARE, tile_dirty._MAX_GRID
    tile_dirty.FULL_PLAN_SHARE, tile_dirty._MAX_GRID = full_share, grid
    try:
        plan, got_ids, got_digests = plan_dirty(
            z, _splats(new, z), level, new, change, old_ids, old_digests, SETTINGS
        )
    finally:
        tile_dirty.FULL_PLAN_SHARE, tile_dirty._MAX_GRID = saved
    assert np.array_equal(got_ids, ids)
    assert np.array_equal(got_digests, digests)
    assert np.array_equal(plan.tile_key, full.tile_key)
    # Tiles planned with pairs draw what the full plan draws; the others are the last
    # build's tiles, unchanged.
    planned = np.flatnonzero(plan.tile_end > plan.tile_start)
    assert _pixels(plan, planned) == _pixels(full, planned)
    ghosts = np.flatnonzero(plan.tile_end == plan.tile_start)
    at = np.searchsorted(old_ids, ids[ghosts])
    assert np.array_equal(old_ids[np.minimum(at, old_ids.size - 1)], ids[ghosts])
    # Only tiles a change touched were planned: with nothing changed, none.
    if np.array_equal(old, new) and np.array_equal(old_level, level) and old_ids.size:
        assert planned.size == 0
