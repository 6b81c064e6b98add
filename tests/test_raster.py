"""The rasteriser against a plain reference (``tests/reference_raster.py``): random discs,
across tile borders and the antimeridian, every pixel the same; and the shortcuts around
it (zooms by exact scaling, cell geometry kept between snapshots) change no byte."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import numpy as np
import pytest
from h3.api import basic_int as h3i
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from heatmetro.site_builder import raster, tile_levels
from heatmetro.site_builder.raster import TILE_BYTES, plan_zoom, rasterise, render_tiles
from heatmetro.site_builder.tile_cache import TileCache
from heatmetro.site_builder.tile_math import (
    MIN_SPLAT_PX,
    Projected,
    lnglat_to_global_px,
    splat_radius_px,
)
from heatmetro.site_builder.tiles import write_heat_tiles
from tests.reference_raster import reference_tile, reference_zoom

# Discs in tile pixels: centres up to 12 px outside the tile (they still reach in), radii
# from the smallest splat to street-zoom sizes, any level that is heat. Half-pixel
# (and quarter-pixel) centres and whole (and 0.75) radii put pixel centres exactly on
# circles: the edge cases of "<=".
centre = st.one_of(
    st.floats(-12.0, 268.0, allow_nan=False),
    st.integers(-24, 536).map(lambda v: v / 2),
    st.integers(-48, 1072).map(lambda v: v / 4),  # with r = 0.75: circles through centres
)
# Radii near the smallest splat (most discs at street zooms) are drawn too.
radius = st.one_of(
    st.floats(MIN_SPLAT_PX, 9.0),
    st.floats(MIN_SPLAT_PX, 0.99),
    st.sampled_from([MIN_SPLAT_PX, 0.75, 0.98, 0.99, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0]),
)
discs = st.lists(
    st.tuples(centre, centre, radius, st.integers(1, 255)),
    min_size=1,
    max_size=25,
)


# The candidate rows' two layouts (``raster.GRID_SPARE``), forced, and the choice made.
ROW_LAYOUTS = {"grid": 10**9, "expanded": 0, "either": raster.GRID_SPARE}


@pytest.mark.parametrize("layout", ROW_LAYOUTS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(discs, st.integers(0, 2))
# A pixel centre exactly on the circle, at its top or bottom (w = 0): one pixel in that
# row, for a small disc and a larger one (random draws rarely hit it).
@example([(10.5, 10.25, 0.75, 7), (40.5, 40.75, 0.75, 9)], 0)
@example([(10.5, 10.25, 1.25, 7), (40.5, 40.75, 1.25, 9)], 1)
# A candidate row a hair outside the disc (|y + 0.5 - cy| = r + 1e-7), under a pixel
# centre: the exact test must drop it though its span would hold one pixel.
@example([(20.5, 9.4999999, 1.0, 7)], 0)
# Rows longer than raster.SHORT_SPAN pixels (drawn another way than short ones), beside
# short ones of another disc.
@example([(60.3, 60.7, 12.0, 9), (70.0, 61.0, 1.0, 200)], 2)
def test_rasterise_equals_the_reference(
    layout: str, ds: list[tuple[float, float, float, int]], t: int
) -> None:
    buf = np.zeros(3 * TILE_BYTES, dtype=np.uint8)
    a = np.array(ds, dtype=np.float64)
    old, raster.GRID_SPARE = raster.GRID_SPARE, ROW_LAYOUTS[layout]
    try:
        lit = rasterise(
            buf, px=a[:, 0], py=a[:, 1], radius=a[:, 2], level=a[:, 3].astype(np.uint8),
            local_tile=np.full(len(ds), t, dtype=np.int64),
        )  # fmt: skip
    finally:
        raster.GRID_SPARE = old
    rows = buf.reshape(3, 256, 257)
    want = reference_tile(ds)
    assert np.array_equal(rows[t, :, 1:], want)
    assert not rows[:, :, 0].any()  # PNG filter bytes stay "none"
    assert not np.delete(rows, t, axis=0).any()  # nothing drawn into the other tiles
    assert lit.tolist() == ([t] if want.any() else [])


# Discs in global pixels at zoom 3 (8 x 8 tiles): anywhere, and crowded around tile
# borders, the antimeridian and the top and bottom edges of the world.
WORLD3 = 256 * 8
edges = st.sampled_from([0.0, 256.0, 1024.0, WORLD3 - 256.0, float(WORLD3)])
coordinate = st.one_of(
    st.floats(0.0, WORLD3 - 1e-9, allow_nan=False),
    st.builds(lambda e, d: min(max(e + d, 0.0), WORLD3 - 1e-9), edges, st.floats(-6.0, 6.0)),
)
global_discs = st.lists(
    st.tuples(coordinate, coordinate, st.floats(MIN_SPLAT_PX, 9.0), st.integers(1, 255)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(global_discs, st.integers(1, 40))
def test_render_tiles_equals_the_reference_across_borders_and_the_antimeridian(
    ds: list[tuple[float, float, float, int]], batch_tiles: int
) -> None:
    a = np.array(ds, dtype=np.float64)
    level = a[:, 3].astype(np.uint8)
    plan = plan_zoom(a[:, 0], a[:, 1], a[:, 2], level, 3)
    want = reference_zoom(a[:, 0], a[:, 1], a[:, 2], level, 3)
    old = raster.BATCH_TILES
    raster.BATCH_TILES = batch_tiles  # batches of any size draw the same
    try:
        got = {
            plan.tile_xy(t): rows[:, 1:].copy()
            for t, rows in render_tiles(plan, np.arange(plan.tile_key.size))
        }
    finally:
        raster.BATCH_TILES = old
    assert got.keys() == want.keys()
    for key, levels in want.items():
        assert np.array_equal(got[key], levels), key
    # Any subset of the tiles, not only a run of them (a rebuild draws the changed ones).
    subset = np.arange(plan.tile_key.size)[1::2]
    some = {plan.tile_xy(t): rows[:, 1:].copy() for t, rows in render_tiles(plan, subset)}
    assert some.keys() == {plan.tile_xy(t) for t in subset.tolist()} & want.keys()
    for key, levels in some.items():
        assert np.array_equal(levels, want[key]), key


def test_a_caller_that_stops_early_leaves_no_pixels_behind() -> None:
    a = np.array([[100.0, 100.0, 5.0, 200], [356.0, 100.0, 5.0, 90]])
    plan = plan_zoom(a[:, 0], a[:, 1], a[:, 2], a[:, 3].astype(np.uint8), 2)
    tiles = render_tiles(plan, np.arange(plan.tile_key.size))
    assert isinstance(tiles, Generator)
    assert next(tiles)[1].any()
    tiles.close()  # two tiles drawn in the batch, one taken
    only_second = plan_zoom(a[1:, 0], a[1:, 1], a[1:, 2], a[1:, 3].astype(np.uint8), 2)
    drawn = [rows.copy() for _, rows in render_tiles(only_second, np.arange(1))]
    assert len(drawn) == 1 and set(np.unique(drawn[0]).tolist()) == {0, 90}


def test_zooms_by_scaling_are_bit_for_bit_the_direct_projection() -> None:
    rng = np.random.default_rng(11)
    lng, lat = rng.uniform(-180, 180, 20_000), rng.uniform(-89, 89, 20_000)
    radius_m = rng.uniform(0.1, 300_000.0, 20_000)
    projected = Projected.of(lng, lat, radius_m)
    for z in range(0, 25):
        px, py, radius = projected.at(z)
        want_x, want_y = lnglat_to_global_px(lng, lat, z)
        assert np.array_equal(px, want_x) and np.array_equal(py, want_y), z
        assert np.array_equal(radius, splat_radius_px(radius_m, lat, z)), z


def street_cells() -> tuple[np.ndarray, np.ndarray]:
    a = h3i.latlng_to_cell(42.311, -72.641, 13)
    b = h3i.latlng_to_cell(42.313, -72.636, 13)
    cells = np.unique(np.array(h3i.grid_path_cells(a, b), dtype=np.uint64))
    return cells, np.arange(1.0, cells.size + 1.0)


def build(root: Path, cache: TileCache, cells: np.ndarray, heat: np.ndarray) -> dict[str, bytes]:
    write_heat_tiles(
        cells, heat, layer="all", out_root=root, min_zoom=12, public_max_zoom=14, max_zoom=16,
        heat_resolution=13, cache=cache,
    )  # fmt: skip
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def forget_geometry(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: nothing remembered, no file read yet."""
    monkeypatch.setattr(tile_levels, "_GEOMETRY", {})
    monkeypatch.setattr(tile_levels, "_LOADED", set())
    monkeypatch.setattr(tile_levels, "_GREW", {})


def test_cell_geometry_is_kept_in_state_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells, heat = street_cells()
    forget_geometry(monkeypatch)
    cache = TileCache(tmp_path / "tile_cache", None, tmp_path / "000001-a")
    full = build(tmp_path / "a", cache, cells, heat)
    assert len(full) > 5 and cache.geometry_path.is_file()

    # Another process with the file: the same bytes, and no centre looked up again.
    forget_geometry(monkeypatch)
    looked_up: list[int] = []
    real = tile_levels.cells_to_latlng

    def counted(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        looked_up.append(len(c))
        return real(c)

    monkeypatch.setattr(tile_levels, "cells_to_latlng", counted)
    assert build(tmp_path / "b", cache, cells, heat) == full
    assert looked_up == []

    # The file is what was drawn from: move every centre and the tiles move.
    with np.load(cache.geometry_path) as data:
        arrays = dict(data)
    arrays["lat13"] = arrays["lat13"] + 0.001
    np.savez(cache.geometry_path, **arrays)
    forget_geometry(monkeypatch)
    assert build(tmp_path / "c", cache, cells, heat) != full

    # ... unless it was computed otherwise (another h3, another radius rule): then ignored.
    arrays["key"] = np.array("h3 0.0; something else")
    np.savez(cache.geometry_path, **arrays)
    forget_geometry(monkeypatch)
    assert build(tmp_path / "d", cache, cells, heat) == full
    assert looked_up  # looked up again


def test_cell_geometry_is_written_again_only_when_it_grew_by_more_than_a_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells, heat = street_cells()
    forget_geometry(monkeypatch)
    cache = TileCache(tmp_path / "tile_cache", None, tmp_path / "000001-a")
    build(tmp_path / "a", cache, cells, heat)
    saved = cache.geometry_path.read_bytes()
    with np.load(cache.geometry_path) as data:
        known = data["ids13"].size

    # One cell more than before (a rebuild's few new streets): the file is kept as it is,
    # and the tiles are those of a build without any file.
    more = tile_levels.cells_to_parent(cells, 12)[:1]
    extra = np.setdiff1d(np.array(h3i.cell_to_children(int(more[0]), 13), np.uint64), cells)[:1]
    monkeypatch.setattr(tile_levels, "RESAVE_SHARE", 2 / known)  # the street is short
    assert extra.size == 1
    grown, grown_heat = np.r_[cells, extra], np.r_[heat, 5.0]
    order = np.argsort(grown)
    forget_geometry(monkeypatch)
    kept = build(tmp_path / "b", cache, grown[order], grown_heat[order])
    assert cache.geometry_path.read_bytes() == saved
    forget_geometry(monkeypatch)
    cache_path_elsewhere = TileCache(tmp_path / "elsewhere", None, tmp_path / "000002-a")
    assert build(tmp_path / "c", cache_path_elsewhere, grown[order], grown_heat[order]) == kept

    # Past the share: written again, with the new cells.
    monkeypatch.setattr(tile_levels, "RESAVE_SHARE", 0.0)
    forget_geometry(monkeypatch)
    build(tmp_path / "d", cache, grown[order], grown_heat[order])
    with np.load(cache.geometry_path) as data:
        assert data["ids13"].size == known + 1


def test_level_zero_discs_draw_nothing_and_light_no_tile() -> None:
    buf = np.zeros(2 * TILE_BYTES, dtype=np.uint8)
    a = np.array([[10.0, 10.0, 2.0, 0], [40.0, 40.0, 2.0, 5]])
    lit = rasterise(
        buf, px=a[:, 0], py=a[:, 1], radius=a[:, 2], level=a[:, 3].astype(np.uint8),
        local_tile=np.array([0, 1]),
    )  # fmt: skip
    assert lit.tolist() == [1]  # tile 0 holds only "no heat"
    rows = buf.reshape(2, 256, 257)
    assert not rows[0].any() and set(np.unique(rows[1]).tolist()) == {0, 5}
    lit = rasterise(
        buf, px=a[:1, 0], py=a[:1, 1], radius=a[:1, 2], level=np.zeros(1, np.uint8),
        local_tile=np.array([0]),
    )  # fmt: skip
    assert lit.size == 0
