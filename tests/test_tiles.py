"""Heat tiles: tile maths golden values, and decoded pixels of what a person would see."""

from __future__ import annotations

import io
import math
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pytest
from h3.api import basic_int as h3i
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from heatmetro.site_builder.png import encode_scanlines
from heatmetro.site_builder.tile_cache import TileCache
from heatmetro.site_builder.tile_colours import MIN_ALPHA, heat_ramp, levels_to_rgba
from heatmetro.site_builder.tile_levels import intensity, reference_heat
from heatmetro.site_builder.tile_math import (
    MAX_LAT,
    cell_radius_m,
    lnglat_to_global_px,
    lnglat_to_tile,
    resolution_for_zoom,
    splat_radius_px,
    tile_bounds,
)
from heatmetro.site_builder.tiles import (
    LayerHeat,
    encode_png,
    write_heat_tiles,
    write_layers_tiles,
)

RES = 11
NORTHAMPTON = {"lat": 42.32, "lng": -72.63}


class Zooms(TypedDict):
    min_zoom: int
    public_max_zoom: int
    max_zoom: int


ZOOMS: Zooms = {"min_zoom": 2, "public_max_zoom": 12, "max_zoom": 16}


# --- helpers -------------------------------------------------------------------------


def slow_global_px(lng: float, lat: float, z: int) -> tuple[float, float]:
    """Textbook slippy-map formula (OSM wiki), independent of the module's atanh form."""
    n = 256 * 2**z
    lat_r = math.radians(lat)
    return (lng + 180.0) / 360.0 * n, (
        1.0 - math.log(math.tan(lat_r) + 1.0 / math.cos(lat_r)) / math.pi
    ) / 2.0 * n


def tile_path(root: Path, layer: str, z: int, x: int, y: int, public_max_zoom: int) -> Path:
    base = root / "tiles" if z <= public_max_zoom else root / "members" / "tiles"
    return base / layer / str(z) / str(x) / f"{y}.png"


def decode(path: Path) -> np.ndarray:
    """(256, 256, 4) uint8 RGBA, whatever PNG mode was written."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def drawn(cells: np.ndarray, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global pixel centres and splat radii of the cells drawn at zoom ``z`` (parents)."""
    res = resolution_for_zoom(z, RES)
    parents = np.unique(np.array([h3i.cell_to_parent(int(c), res) for c in cells], np.uint64))
    latlng = np.array([h3i.cell_to_latlng(int(c)) for c in parents])
    px, py = lnglat_to_global_px(latlng[:, 1], latlng[:, 0], z)
    return px, py, splat_radius_px(cell_radius_m(parents), latlng[:, 0], z)


def street(a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Res-11 cells along the H3 grid path between two (lat, lng) points."""
    start = h3i.latlng_to_cell(a[0], a[1], RES)
    end = h3i.latlng_to_cell(b[0], b[1], RES)
    return np.array(h3i.grid_path_cells(start, end), dtype=np.uint64)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


# --- tile maths ----------------------------------------------------------------------


def test_global_px_golden_values() -> None:
    px, py = lnglat_to_global_px(0.0, 0.0, 1)
    assert (float(px), float(py)) == (256.0, 256.0)
    px, py = lnglat_to_global_px(np.array([-180.0, 180.0]), np.array([MAX_LAT, -MAX_LAT]), 0)
    np.testing.assert_allclose(px, [0.0, 256.0])
    np.testing.assert_allclose(py, [0.0, 256.0], atol=1e-9)
    # Beyond the Mercator limit, latitudes clamp to the world's edge.
    assert float(lnglat_to_global_px(0.0, 89.9, 3)[1]) == pytest.approx(0.0, abs=1e-9)


def test_global_px_matches_slow_reference() -> None:
    rng = np.random.default_rng(7)
    lng, lat = rng.uniform(-180, 180, 200), rng.uniform(-85, 85, 200)
    for z in (0, 5, 12, 16):
        px, py = lnglat_to_global_px(lng, lat, z)
        ref = np.array([slow_global_px(a, b, z) for a, b in zip(lng, lat, strict=True)])
        np.testing.assert_allclose(px, ref[:, 0], rtol=1e-12)
        np.testing.assert_allclose(py, ref[:, 1], rtol=1e-11)


def test_tile_of_northampton_and_its_bounds() -> None:
    # Standard formula: x = 1221.63, y = 1515.59 (so y is 1515, not 1514).
    assert lnglat_to_tile(NORTHAMPTON["lng"], NORTHAMPTON["lat"], 12) == (1221, 1515)
    b = tile_bounds(1221, 1515, 12)
    assert b.west < NORTHAMPTON["lng"] < b.east
    assert b.south < NORTHAMPTON["lat"] < b.north
    assert b.west == pytest.approx(1221 / 4096 * 360 - 180)
    # Neighbours share edges exactly; the world tile spans the whole Mercator square.
    assert tile_bounds(1222, 1515, 12).west == b.east
    assert tile_bounds(1221, 1516, 12).north == b.south
    world = tile_bounds(0, 0, 0)
    assert (world.west, world.east) == (-180.0, 180.0)
    assert world.north == pytest.approx(MAX_LAT) and world.south == pytest.approx(-MAX_LAT)


def test_resolution_per_zoom() -> None:
    got = {z: resolution_for_zoom(z, RES) for z in range(2, 17)}
    assert got == {
        2: 4, 3: 4, 4: 5, 5: 6, 6: 6, 7: 7, 8: 8, 9: 9, 10: 9, 11: 10,
        12: 11, 13: 11, 14: 11, 15: 11, 16: 11,
    }  # fmt: skip
    assert resolution_for_zoom(18, 15) == 15 and resolution_for_zoom(18, RES) == RES


def test_splat_radius_at_street_zoom() -> None:
    cell = np.array([h3i.latlng_to_cell(NORTHAMPTON["lat"], NORTHAMPTON["lng"], RES)], np.uint64)
    r_m = cell_radius_m(cell)
    assert r_m[0] == pytest.approx(h3i.average_hexagon_edge_length(RES, "m"), rel=0.25)
    # res-11 at z16 near lat 42: ~16 px circumradius; at z2 the smallest visible disc.
    r16 = splat_radius_px(r_m, np.array([NORTHAMPTON["lat"]]), 16)[0]
    assert 14 < r16 < 19
    assert splat_radius_px(r_m, np.array([NORTHAMPTON["lat"]]), 2)[0] == 0.71


def test_intensity_is_a_stable_log_scale() -> None:
    heat = np.array([5.0, 1.0, 5.0, 100.0, 2.0])
    got = intensity(heat)
    assert got[0] == got[2]  # ties equal
    assert got[3] > 0.95 and got.min() == got[1] < 0.5 and got.min() >= 0.25
    assert intensity(np.r_[np.ones(200), 128.0, 500.0])[-2:].tolist() == [1.0, 1.0]  # top 1%
    assert list(np.argsort(got, kind="stable")) == [1, 4, 0, 2, 3]
    # The reference is the 99th percentile rounded up to a power of two...
    assert reference_heat(heat) == 128.0 and reference_heat(np.array([3.0])) == 4.0
    # ...so raising one quiet cell leaves every other cell's intensity as it was: the
    # property that lets a rebuild re-render only the tiles a change touched.
    changed = heat.copy()
    changed[4] = 3.0
    same = np.arange(5) != 4
    np.testing.assert_array_equal(intensity(changed)[same], got[same])
    # A city 100x busier than a town still spreads over the whole ramp.
    assert intensity(heat * 100).min() < 0.7 and intensity(heat * 100).max() > 0.95


def test_ramp_is_hot_and_visible() -> None:
    lut = heat_ramp()
    assert tuple(lut[0]) == (0, 0, 0, 0)
    drawn_part = lut[64:].astype(int)  # intensities 0.25..1
    assert drawn_part[:, 3].min() >= MIN_ALPHA and lut[255, 3] == 255
    assert (np.diff(drawn_part, axis=0) >= 0).all()  # brighter and more opaque upwards
    assert (drawn_part[:, 0] >= drawn_part[:, 1]).all()  # red >= green >= blue: "hot"
    assert (drawn_part[:, 1] >= drawn_part[:, 2]).all()
    assert tuple(lut[64, :3]) < (130, 20, 20) and min(lut[255, :3]) > 200  # dark red .. white


def test_png_decodes_to_the_ramp_colours() -> None:
    rng = np.random.default_rng(1)
    levels = rng.integers(0, 256, (256, 256)).astype(np.uint8)
    levels[:100] = 0
    assert np.array_equal(decode_bytes(encode_png(levels)), levels_to_rgba(levels))


def decode_bytes(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA"))


# --- a street at every zoom ----------------------------------------------------------

STREET_A = (42.311, -72.641)
STREET_B = (42.327, -72.622)  # ~2.4 km north-east of A


@pytest.fixture(scope="module")
def street_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    cells = street(STREET_A, STREET_B)
    root = tmp_path_factory.mktemp("street")
    stats = write_heat_tiles(
        cells, np.full(cells.size, 5.0), layer="ride", out_root=root, heat_resolution=RES, **ZOOMS
    )
    assert set(stats.tiles_per_zoom) == set(range(2, 17))
    assert all(n >= 1 for n in stats.tiles_per_zoom.values())
    s, w, n, e = stats.bounds
    assert 42.30 < s < n < 42.33 and -72.65 < w < e < -72.61
    return root, cells


@pytest.mark.parametrize("z", range(2, 17))
def test_street_is_drawn_and_nothing_far_from_it(
    street_site: tuple[Path, np.ndarray], z: int
) -> None:
    root, cells = street_site
    mid = h3i.cell_to_latlng(int(cells[cells.size // 2]))
    x, y = lnglat_to_tile(mid[1], mid[0], z)
    path = tile_path(root, "ride", z, x, y, ZOOMS["public_max_zoom"])
    other = tile_path(root, "ride", z, x, y, -1 if z <= ZOOMS["public_max_zoom"] else 99)
    assert path.exists() and not other.exists()
    rgba = decode(path)
    alpha = rgba[:, :, 3]

    # The street's midpoint projects onto a lit pixel (within a pixel at the coarse zooms,
    # where a parent hexagon's centre stands for it).
    mpx, mpy = (float(v) for v in lnglat_to_global_px(mid[1], mid[0], z))
    col, row = int(mpx) - 256 * x, int(mpy) - 256 * y
    window = alpha[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2]
    assert window.max() >= MIN_ALPHA, f"z{z}: street midpoint not lit"
    if z >= 12:
        assert alpha[row, col] >= MIN_ALPHA

    # Every pixel farther than 3 splat radii from the street's centre line is transparent.
    _, _, radii = drawn(cells, z)
    (ax, ay), (bx, by) = (
        (float(v) for v in lnglat_to_global_px(p[1], p[0], z)) for p in (STREET_A, STREET_B)
    )
    gy, gx = np.mgrid[0:256, 0:256] + 0.5
    gx, gy = gx + 256 * x, gy + 256 * y
    t = np.clip(
        ((gx - ax) * (bx - ax) + (gy - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1
    )
    dist = np.hypot(gx - (ax + t * (bx - ax)), gy - (ay + t * (by - ay)))
    far = dist > 3 * radii.max() + 1
    assert far.sum() > 10_000, "the test would prove nothing"
    assert not rgba[far].any(), f"z{z}: heat far from the street"
    assert alpha[alpha > 0].min() >= MIN_ALPHA


def test_public_and_members_trees(street_site: tuple[Path, np.ndarray]) -> None:
    root, _ = street_site
    public = {int(p.name) for p in (root / "tiles" / "ride").iterdir()}
    members = {int(p.name) for p in (root / "members" / "tiles" / "ride").iterdir()}
    assert public == set(range(2, 13)) and members == set(range(13, 17))


def test_only_tiles_with_heat_are_written(street_site: tuple[Path, np.ndarray]) -> None:
    root, _ = street_site
    for path in root.rglob("*.png"):
        assert decode(path)[:, :, 3].max() >= MIN_ALPHA, path


# --- seams, against a slow per-pixel reference ----------------------------------------


def reference_tile(cells: np.ndarray, heat: np.ndarray, x: int, y: int, z: int) -> np.ndarray:
    """Slow renderer: per pixel, the max level of the cells whose disc holds its centre."""
    assert resolution_for_zoom(z, RES) == RES
    latlng = np.array([h3i.cell_to_latlng(int(c)) for c in cells])
    px, py = lnglat_to_global_px(latlng[:, 1], latlng[:, 0], z)
    radius = splat_radius_px(cell_radius_m(cells), latlng[:, 0], z)
    level = np.rint(255 * intensity(heat)).astype(np.uint8)
    out = np.zeros((256, 256), np.uint8)
    gy, gx = np.mgrid[0:256, 0:256] + 0.5
    for cx, cy, r, lev in zip(px - 256 * x, py - 256 * y, radius, level, strict=True):
        inside = (gx - cx) ** 2 + (gy - cy) ** 2 <= r**2
        out[inside] = np.maximum(out[inside], lev)
    return levels_to_rgba(out)


def test_no_seam_where_a_street_crosses_a_tile_border(tmp_path: Path) -> None:
    z = 16
    x, y = lnglat_to_tile(NORTHAMPTON["lng"], NORTHAMPTON["lat"], z)
    border = tile_bounds(x, y, z).west  # between tiles x-1 and x
    lat = (tile_bounds(x, y, z).north + tile_bounds(x, y, z).south) / 2
    cells = street((lat, border - 0.002), (lat + 0.0003, border + 0.002))
    heat = np.arange(1.0, cells.size + 1.0)  # varied heat: the max-composite matters too
    write_heat_tiles(
        cells, heat, layer="all", out_root=tmp_path, min_zoom=z, public_max_zoom=z, max_zoom=z,
        heat_resolution=RES,
    )  # fmt: skip
    left = decode(tile_path(tmp_path, "all", z, x - 1, y, z))
    right = decode(tile_path(tmp_path, "all", z, x, y, z))
    # The row of the street cell nearest the border: its splat reaches across it.
    px, py, _ = drawn(cells, z)
    nearest = int(np.argmin(np.abs(px - 256 * x)))
    row = int(py[nearest]) - 256 * y
    assert 0 <= row < 256
    assert left[row, 255, 3] >= MIN_ALPHA and right[row, 0, 3] >= MIN_ALPHA
    # Pixel for pixel what a single renderer of the whole plane draws, on both sides.
    assert np.array_equal(left, reference_tile(cells, heat, x - 1, y, z))
    assert np.array_equal(right, reference_tile(cells, heat, x, y, z))


# --- empty input, determinism, arguments ---------------------------------------------


def test_empty_input_writes_nothing(tmp_path: Path) -> None:
    stats = write_heat_tiles(
        np.zeros(0, np.uint64), np.zeros(0), layer="all", out_root=tmp_path,
        heat_resolution=RES, **ZOOMS,
    )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    assert set(stats.tiles_per_zoom.values()) == {0} and stats.bounds == (0.0, 0.0, 0.0, 0.0)


def test_two_runs_write_identical_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    cells = np.concatenate([street(STREET_A, STREET_B), street((42.30, -72.60), (42.34, -72.66))])
    heat = rng.integers(1, 50, cells.size).astype(float)
    runs = []
    for name in ("one", "two"):
        write_heat_tiles(
            cells, heat, layer="all", out_root=tmp_path / name, heat_resolution=RES, **ZOOMS
        )
        runs.append(all_files(tmp_path / name))
    assert len(runs[0]) > 20 and runs[0] == runs[1]
    # Shuffled input is the same data.
    order = rng.permutation(cells.size)
    write_heat_tiles(
        cells[order], heat[order], layer="all", out_root=tmp_path / "three",
        heat_resolution=RES, **ZOOMS,
    )  # fmt: skip
    assert all_files(tmp_path / "three") == runs[0]


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    one = np.array([h3i.latlng_to_cell(42.32, -72.63, RES)], np.uint64)
    with pytest.raises(ValueError, match="1 cells but 2 heat"):
        write_heat_tiles(
            one, np.ones(2), layer="all", out_root=tmp_path, heat_resolution=RES, **ZOOMS
        )
    with pytest.raises(ValueError, match="layer name"):
        write_heat_tiles(
            one, np.ones(1), layer="../x", out_root=tmp_path, heat_resolution=RES, **ZOOMS
        )


# --- property: heat only near cells, and every written tile has heat -------------------

cell_sets = st.lists(
    st.tuples(
        st.floats(42.30, 42.34),
        st.floats(-72.66, -72.60),
        st.integers(1, 100),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell_sets)
def test_heat_only_near_cells(points: list[tuple[float, float, int]]) -> None:
    cells = np.array([h3i.latlng_to_cell(lat, lng, RES) for lat, lng, _ in points], np.uint64)
    heat = np.array([h for _, _, h in points], dtype=float)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stats = write_heat_tiles(
            cells, heat, layer="all", out_root=root, min_zoom=11, public_max_zoom=13,
            max_zoom=15, heat_resolution=RES,
        )  # fmt: skip
        written = 0
        for z in range(11, 16):
            px, py, radii = drawn(cells, z)
            for path in sorted((root).rglob(f"all/{z}/*/*.png")):
                written += 1
                x, y = int(path.parent.name), int(path.stem)
                alpha = decode(path)[:, :, 3]
                rows, cols = np.nonzero(alpha)
                assert rows.size > 0, path
                gx, gy = cols + 0.5 + 256 * x, rows + 0.5 + 256 * y
                d = np.hypot(gx[:, None] - px[None, :], gy[:, None] - py[None, :])
                assert (d <= radii[None, :] + 2).any(axis=1).all(), path
        assert written == sum(stats.tiles_per_zoom.values())


# --- parallel, incremental and PMTiles output ------------------------------------------


def two_streets() -> tuple[np.ndarray, np.ndarray]:
    cells = np.concatenate([street(STREET_A, STREET_B), street((42.30, -72.60), (42.34, -72.66))])
    cells = np.unique(cells)
    return cells, np.random.default_rng(5).integers(3, 40, cells.size).astype(float)


@pytest.fixture
def parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use worker processes even for the few tiles of a test."""
    import heatmetro.site_builder.tiles as tiles_module

    monkeypatch.setattr(tiles_module, "MIN_PARALLEL_TILES", 0)


def test_workers_write_the_same_bytes(tmp_path: Path, parallel: None) -> None:
    cells, heat = two_streets()
    for w in (1, 2):
        write_heat_tiles(
            cells, heat, layer="all", out_root=tmp_path / str(w), heat_resolution=RES,
            workers=w, **ZOOMS,
        )  # fmt: skip
    one = all_files(tmp_path / "1")
    assert len(one) > 20 and one == all_files(tmp_path / "2")


def some_layers() -> list[LayerHeat]:
    cells, heat = two_streets()
    ride = street(STREET_A, STREET_B)
    return [
        LayerHeat("all", cells, heat),
        LayerHeat("empty", np.zeros(0, dtype=np.uint64), np.zeros(0)),
        LayerHeat("ride", ride, np.arange(ride.size, dtype=float) + 3),
        LayerHeat("night", cells[::3], heat[::3] * 2),
        # The input of ``all`` again, in another order: it shares all's plans.
        LayerHeat("twin", cells[::-1], heat[::-1]),
    ]


class CountingPool(ProcessPoolExecutor):
    """A real pool that counts how many were started."""

    started = 0

    def __init__(self, max_workers: int, mp_context: BaseContext) -> None:
        type(self).started += 1
        super().__init__(max_workers=max_workers, mp_context=mp_context)


@pytest.mark.parametrize("fmt", ["png", "pmtiles"])
def test_layers_through_one_pool_write_the_bytes_of_one_layer_at_a_time(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import heatmetro.site_builder.tiles as tiles_module

    layers = some_layers()
    kw = {"heat_resolution": RES, "tiles_format": fmt, **ZOOMS}
    alone = {
        lh.layer: write_heat_tiles(lh.cells, lh.heat, layer=lh.layer, out_root=tmp_path / "1", **kw)  # type: ignore[arg-type]
        for lh in layers
    }
    ride = sum(alone["ride"].tiles_per_zoom.values())
    # Each layer has fewer tiles than the bar, all of them together more: one pool.
    monkeypatch.setattr(tiles_module, "MIN_PARALLEL_TILES", ride + 1)
    monkeypatch.setattr(tiles_module, "ProcessPoolExecutor", CountingPool)
    CountingPool.started = 0
    for w in (1, 2, 3):
        stats = write_layers_tiles(layers, out_root=tmp_path / f"w{w}", workers=w, **kw)  # type: ignore[arg-type]
        assert list(stats) == [lh.layer for lh in layers]
        for name, got in stats.items():
            want = alone[name]
            assert (got.tiles_per_zoom, got.bounds, got.rendered) == (
                want.tiles_per_zoom, want.bounds, want.rendered,
            )  # fmt: skip
        assert all_output(tmp_path / f"w{w}") == all_output(tmp_path / "1")
    assert CountingPool.started == 2  # once for 2 workers, once for 3, never per layer
    assert len(all_output(tmp_path / "1")) > (40 if fmt == "png" else 3)
    assert sum(alone["empty"].tiles_per_zoom.values()) == 0 < ride
    with pytest.raises(ValueError, match="named twice"):
        write_layers_tiles(layers + layers[:1], out_root=tmp_path / "x", **kw)  # type: ignore[arg-type]


def test_layers_through_one_pool_reuse_their_own_unchanged_tiles(
    tmp_path: Path, parallel: None
) -> None:
    layers = some_layers()
    kw = {"heat_resolution": RES, **ZOOMS}
    first = tmp_path / "000001-a"
    full = write_layers_tiles(
        layers,
        out_root=first,
        cache=TileCache(tmp_path / "cache", None, first),
        **kw,  # type: ignore[arg-type]
    )
    # Only the ride layer changes; the others are reused whole from the first build.
    ride = layers[2]
    layers[2] = LayerHeat("ride", ride.cells, ride.heat + np.eye(1, ride.heat.size).ravel())
    second = tmp_path / "000002-b"
    again = write_layers_tiles(
        layers, out_root=second, cache=TileCache(tmp_path / "cache", first, second),
        workers=2, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    write_layers_tiles(layers, out_root=tmp_path / "reference", **kw)  # type: ignore[arg-type]
    assert all_output(second) == all_output(tmp_path / "reference") != all_output(first)
    for name in ("all", "night", "twin"):
        assert again[name].rendered == 0
        assert again[name].reused == full[name].rendered > 0
    assert 0 < again["ride"].rendered < full["ride"].rendered


def test_a_layer_with_another_layers_input_keeps_its_own_tiles_and_manifest(
    tmp_path: Path,
) -> None:
    layers = some_layers()
    kw = {"heat_resolution": RES, **ZOOMS}
    first = tmp_path / "000001-a"
    write_layers_tiles(layers, out_root=first, cache=TileCache(tmp_path / "c", None, first), **kw)  # type: ignore[arg-type]
    assert all_output(first / "tiles" / "twin") == all_output(first / "tiles" / "all")
    # The twin changes, all does not: all is reused whole, the twin drawn where it changed.
    twin = layers[-1]
    layers[-1] = LayerHeat("twin", twin.cells, twin.heat + np.eye(1, twin.heat.size).ravel())
    second = tmp_path / "000002-b"
    again = write_layers_tiles(
        layers, out_root=second, cache=TileCache(tmp_path / "c", first, second), **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    assert again["all"].rendered == 0 < again["twin"].rendered
    write_layers_tiles(layers, out_root=tmp_path / "reference", **kw)  # type: ignore[arg-type]
    assert all_output(second) == all_output(tmp_path / "reference")
    assert all_output(second / "tiles" / "twin") != all_output(second / "tiles" / "all")


@pytest.mark.parametrize("fmt", ["png", "pmtiles"])
def test_a_twin_s_tiles_are_drawn_once_for_both_layers(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import heatmetro.site_builder.tiles as tiles_module

    encoded = []

    def counting(scanlines: np.ndarray, header: bytes) -> bytes:
        encoded.append(1)
        return encode_scanlines(scanlines, header)

    monkeypatch.setattr(tiles_module, "encode_scanlines", counting)
    layers = some_layers()
    kw = {"heat_resolution": RES, "tiles_format": fmt, **ZOOMS}
    stats = write_layers_tiles(layers, out_root=tmp_path / "both", **kw)  # type: ignore[arg-type]
    alone = {lh.layer: sum(stats[lh.layer].tiles_per_zoom.values()) for lh in layers}
    assert alone["twin"] == alone["all"] == stats["twin"].rendered > 0
    assert len(encoded) == sum(alone.values()) - alone["twin"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_twin_s_png_tiles_are_links_to_the_original_s_or_copies_without_links(
    tmp_path: Path, workers: int, parallel: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A twin's tiles are drawn once, by its original: its files are hard links of the
    original's, or files of their own where the file system has no hard links."""
    import heatmetro.site_builder.tile_output as tile_output

    layers = some_layers()
    kw = {"heat_resolution": RES, "workers": workers, **ZOOMS}
    linked = tmp_path / "linked"
    write_layers_tiles(layers, out_root=linked, **kw)  # type: ignore[arg-type]
    twin, original = linked / "tiles" / "twin", linked / "tiles" / "all"
    files = sorted(p.relative_to(twin) for p in twin.rglob("*.png"))
    assert files and all((twin / f).samefile(original / f) for f in files)

    def no_links(*args: object, **kwargs: object) -> None:
        msg = "no hard links here"
        raise PermissionError(msg)

    monkeypatch.setattr(tile_output.os, "link", no_links)
    copied = tmp_path / "copied"
    write_layers_tiles(layers, out_root=copied, **kw)  # type: ignore[arg-type]
    assert all_output(copied) == all_output(linked)
    twin, original = copied / "tiles" / "twin", copied / "tiles" / "all"
    assert not any((twin / f).samefile(original / f) for f in files)


def all_output(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.suffix in (".png", ".pmtiles")
    }


@pytest.mark.parametrize("fmt", ["png", "pmtiles"])
def test_rebuild_renders_only_changed_tiles_and_matches_a_full_build(
    tmp_path: Path, fmt: str, parallel: None
) -> None:
    cells, heat = two_streets()
    first = tmp_path / "000001-a"
    cache = TileCache(tmp_path / "cache", None, first)
    kw = {"layer": "all", "heat_resolution": RES, "tiles_format": fmt, **ZOOMS}
    full = write_heat_tiles(cells, heat, out_root=first, cache=cache, **kw)  # type: ignore[arg-type]
    assert full.reused == 0 and full.rendered == sum(full.tiles_per_zoom.values())
    # One cell near the end of a street gets busier: a few tiles change, not the rest.
    changed = heat.copy()
    changed[0] += 1
    second = tmp_path / "000002-b"
    cache = TileCache(tmp_path / "cache", first, second)
    again = write_heat_tiles(cells, changed, out_root=second, cache=cache, workers=2, **kw)  # type: ignore[arg-type]
    reference = tmp_path / "reference"
    write_heat_tiles(cells, changed, out_root=reference, **kw)  # type: ignore[arg-type]
    assert all_output(second) == all_output(reference)
    assert all_output(second) != all_output(first)
    assert again.reused > 0.8 * full.rendered and 0 < again.rendered < 0.2 * full.rendered
    if fmt == "png":  # reused tiles are links to the published build's files, not copies
        linked = [p for p in second.rglob("*.png") if p.stat().st_nlink == 2]
        assert len(linked) == again.reused
    # A manifest of a build that was never published is not trusted.
    stale = TileCache(tmp_path / "cache", first, tmp_path / "000003-c")
    assert stale.load("all", fmt) is None
    # Nor one of another site (another out_dir, same state_dir) whose build has this name.
    elsewhere = TileCache(tmp_path / "cache", tmp_path / "other" / second.name, tmp_path / "x")
    assert elsewhere.load("all", fmt) is None
    assert TileCache(tmp_path / "cache", second, tmp_path / "x").load("all", fmt) is not None


def test_a_rebuild_without_hard_links_copies_the_reused_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system has no hard links, a reused PNG tile is a copy of the
    published build's file: the same bytes as a full build, the published files intact."""
    import heatmetro.site_builder.tile_output as tile_output

    cells, heat = two_streets()
    first = tmp_path / "000001-a"
    kw = {"layer": "all", "heat_resolution": RES, "tiles_format": "png", **ZOOMS}
    cache = TileCache(tmp_path / "cache", None, first)
    write_heat_tiles(cells, heat, out_root=first, cache=cache, **kw)  # type: ignore[arg-type]
    published = all_output(first)
    changed = heat.copy()
    changed[0] += 1
    reference = tmp_path / "reference"
    write_heat_tiles(cells, changed, out_root=reference, **kw)  # type: ignore[arg-type]

    def no_links(*args: object, **kwargs: object) -> None:
        msg = "no hard links here"
        raise PermissionError(msg)

    monkeypatch.setattr(tile_output.os, "link", no_links)
    second = tmp_path / "000002-b"
    cache = TileCache(tmp_path / "cache", first, second)
    again = write_heat_tiles(cells, changed, out_root=second, cache=cache, **kw)  # type: ignore[arg-type]
    assert again.reused > 0 and again.rendered > 0
    assert all_output(second) == all_output(reference)
    assert all_output(first) == published
    assert all(p.stat().st_nlink == 1 for p in second.rglob("*.png"))


@pytest.mark.parametrize("fmt", ["png", "pmtiles"])
def test_an_unchanged_layer_is_taken_whole_without_planning_a_zoom(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer whose input and settings are those of the published build is linked whole
    (its archives, or every file): no zoom planned. Another setting, or a published file
    gone, and it is planned as usual, with a full build's bytes."""
    import heatmetro.site_builder.tiles as tiles_module

    cells, heat = two_streets()
    kw: dict[str, Any] = {"layer": "all", "heat_resolution": RES, "tiles_format": fmt, **ZOOMS}
    first = tmp_path / "000001-a"
    full = write_heat_tiles(
        cells, heat, out_root=first, cache=TileCache(tmp_path / "c", None, first), **kw
    )
    planned: list[int] = []
    real_plan = tiles_module.plan_zoom

    def counting_plan(*args: Any) -> Any:
        planned.append(args[-1])
        return real_plan(*args)

    monkeypatch.setattr(tiles_module, "plan_zoom", counting_plan)

    second = tmp_path / "000002-b"
    again = write_heat_tiles(
        cells, heat, out_root=second, cache=TileCache(tmp_path / "c", first, second), **kw
    )
    assert not planned
    assert (again.tiles_per_zoom, again.bounds) == (full.tiles_per_zoom, full.bounds)
    assert again.rendered == 0 and again.reused == sum(full.tiles_per_zoom.values())
    files = sorted(p.relative_to(second) for p in second.rglob("*.p*"))
    assert files and all((second / f).samefile(first / f) for f in files)
    assert all_output(second) == all_output(first)

    # The next build takes it whole from this one too (the manifest was saved for it).
    third = tmp_path / "000003-c"
    write_heat_tiles(
        cells, heat, out_root=third, cache=TileCache(tmp_path / "c", second, third), **kw
    )
    assert not planned and all_output(third) == all_output(first)

    # Another public zoom: the same input, other trees: planned, drawn where it differs.
    fourth = tmp_path / "000004-d"
    other = {**kw, "public_max_zoom": ZOOMS["public_max_zoom"] - 1}
    write_heat_tiles(
        cells, heat, out_root=fourth, cache=TileCache(tmp_path / "c", third, fourth), **other
    )
    write_heat_tiles(cells, heat, out_root=tmp_path / "ref4", **other)
    assert planned and all_output(fourth) == all_output(tmp_path / "ref4") != all_output(first)

    # A file of the published build gone: planned, the rest reused, nothing half-linked.
    planned.clear()
    fifth = tmp_path / "000005-e"
    write_heat_tiles(
        cells, heat, out_root=fifth, cache=TileCache(tmp_path / "c", fourth, fifth), **other
    )
    assert not planned
    gone = sorted(fifth.rglob("*.p*"))[-1]
    gone.unlink()
    published = all_output(fifth)
    sixth = tmp_path / "000006-f"
    write_heat_tiles(
        cells, heat, out_root=sixth, cache=TileCache(tmp_path / "c", fifth, sixth), **other
    )
    assert planned and all_output(sixth) == all_output(tmp_path / "ref4")
    assert all_output(fifth) == published


def test_sites_sharing_a_state_dir_keep_their_own_manifests(tmp_path: Path) -> None:
    cells, heat = two_streets()
    kw = {"layer": "all", "heat_resolution": RES, **ZOOMS}
    state = tmp_path / "state" / "tile_cache"
    a1, b1 = tmp_path / ".a.builds" / "000001-m", tmp_path / ".b.builds" / "000001-m"
    write_heat_tiles(cells, heat, out_root=a1, cache=TileCache(state, None, a1), **kw)  # type: ignore[arg-type]
    write_heat_tiles(cells, heat, out_root=b1, cache=TileCache(state, None, b1), **kw)  # type: ignore[arg-type]
    # Site a's next build still finds a's manifest: b's build did not replace it.
    a2 = tmp_path / ".a.builds" / "000002-m"
    again = write_heat_tiles(cells, heat, out_root=a2, cache=TileCache(state, a1, a2), **kw)  # type: ignore[arg-type]
    assert again.rendered == 0 and again.reused == sum(again.tiles_per_zoom.values()) > 0


def test_pmtiles_archives_hold_the_same_tiles(tmp_path: Path) -> None:
    from pmtiles.reader import MmapSource, Reader, all_tiles

    cells, heat = two_streets()
    write_heat_tiles(
        cells, heat, layer="all", out_root=tmp_path / "png", heat_resolution=RES, **ZOOMS
    )
    for name in ("pm1", "pm2"):
        write_heat_tiles(
            cells, heat, layer="all", out_root=tmp_path / name, heat_resolution=RES,
            tiles_format="pmtiles", **ZOOMS,
        )  # fmt: skip
    public = tmp_path / "pm1" / "tiles" / "all.pmtiles"
    members = tmp_path / "pm1" / "members" / "tiles" / "all.pmtiles"
    assert public.read_bytes() == (tmp_path / "pm2" / "tiles" / "all.pmtiles").read_bytes()
    assert sorted(p.name for p in (tmp_path / "pm1").rglob("*") if p.is_file()) == [
        "all.pmtiles",
        "all.pmtiles",
    ]
    got: dict[str, bytes] = {}
    for archive in (public, members):
        with archive.open("rb") as fh:
            reader = Reader(MmapSource(fh))
            header = reader.header()
            zooms = (header["min_zoom"], header["max_zoom"])
            assert zooms == ((2, 12) if archive == public else (13, 16))
            for (z, x, y), data in all_tiles(reader.get_bytes):
                got[str(tile_path(Path(), "all", z, x, y, ZOOMS["public_max_zoom"]))] = data
    assert got == all_files(tmp_path / "png")


# --- streets are lines at street zoom ---------------------------------------------------

M_PER_DEG_LAT = 111_320.0


def ridden_cells(lat: float, lng0: float, lng1: float, offset_m: float, res: int) -> np.ndarray:
    """The res-``res`` cells of an east-west ride ``offset_m`` north of ``lat`` (a fix a metre)."""
    n = int((lng1 - lng0) * M_PER_DEG_LAT * math.cos(math.radians(lat)))
    lats = np.full(n, lat + offset_m / M_PER_DEG_LAT)
    lngs = np.linspace(lng0, lng1, n)
    return np.unique([h3i.latlng_to_cell(a, b, res) for a, b in zip(lats, lngs, strict=True)])


def test_z16_streets_30_m_apart_are_two_thin_lines_and_a_street_of_two_is_dark(
    tmp_path: Path,
) -> None:
    from heatmetro.site_builder.load import publishable_heat
    from heatmetro.state.records import HEAT_DTYPE, with_athlete

    res, z = 13, 16
    lat0, lng0, lng1 = 42.3200, -72.6400, -72.6330  # ~575 m of street
    streets = {  # street: (metres north of lat0, riders)
        "A": (0.0, 3),
        "B": (30.0, 3),
        "C": (60.0, 2),  # one rider short of min_athletes
    }
    rows, athlete = [], 0
    for north, riders in streets.values():
        for _ in range(riders):
            cells = ridden_cells(lat0 + north / M_PER_DEG_LAT, lng0, lng1, 0.0, res)
            arr = np.zeros(cells.size, HEAT_DTYPE)
            arr["cell"], arr["n"] = cells, 1
            rows.append(with_athlete(arr, athlete))
            athlete += 1
    published = publishable_heat("all", np.concatenate(rows), 3, 10, threshold_ring=1)
    write_heat_tiles(
        published.cells, published.heat, layer="all", out_root=tmp_path, min_zoom=z,
        public_max_zoom=z, max_zoom=z, heat_resolution=res,
    )  # fmt: skip

    # Stitch the z16 tiles around the streets; look at the columns of the middle 80%.
    x0, y0 = lnglat_to_tile(lng0, lat0 + 90 / M_PER_DEG_LAT, z)
    x1, y1 = lnglat_to_tile(lng1, lat0 - 30 / M_PER_DEG_LAT, z)
    alpha = np.zeros(((y1 - y0 + 1) * 256, (x1 - x0 + 1) * 256), np.uint8)
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            path = tile_path(tmp_path, "all", z, x, y, z)
            if path.exists():
                alpha[(y - y0) * 256 : (y - y0 + 1) * 256, (x - x0) * 256 : (x - x0 + 1) * 256] = (
                    decode(path)[:, :, 3]
                )
    gx0, gy0 = 256 * x0, 256 * y0

    def row_of(north_m: float) -> int:
        return int(lnglat_to_global_px(lng0, lat0 + north_m / M_PER_DEG_LAT, z)[1]) - gy0

    c0, c1 = (int(lnglat_to_global_px(v, lat0, z)[0]) - gx0 for v in (lng0, lng1))
    cols = range(c0 + (c1 - c0) // 10, c1 - (c1 - c0) // 10)
    ra, rb, rc = row_of(0.0), row_of(30.0), row_of(60.0)
    assert rb < ra - 15  # 30 m is ~17 px at z16 here
    for col in cols:
        lit = np.flatnonzero(alpha[:, col] > 0)
        line_a = lit[np.abs(lit - ra) <= 8]
        line_b = lit[np.abs(lit - rb) <= 8]
        # Continuous: every column of each street is lit, close to the street.
        assert line_a.size and line_b.size, f"column {col}: a street has a hole"
        # Thin: at most 8 px across; and separate: unlit rows between the two.
        assert line_a.max() - line_a.min() + 1 <= 8 and line_b.max() - line_b.min() + 1 <= 8
        assert not (alpha[line_b.max() + 1 : line_a.min(), col] > 0).all()
        assert (alpha[line_b.max() + 1 : line_a.min(), col] == 0).any()
        # The street of two riders draws nothing, nor does anything else.
        assert set(lit.tolist()) <= set(line_a.tolist()) | set(line_b.tolist())
    assert not alpha[max(rc - 8, 0) : rc + 9].any()


def noisy_ride(
    lat: float, lng0: float, lng1: float, offset_m: float, rng: np.random.Generator, res: int
) -> np.ndarray:
    """Res-``res`` cells of an east-west ride ``offset_m`` north of ``lat``, with GPS noise:
    a north-south error of sd 2 m drawn every 10 m and varying smoothly between (a fix a metre)."""
    n = int((lng1 - lng0) * M_PER_DEG_LAT * math.cos(math.radians(lat)))
    knots = rng.normal(0.0, 2.0, n // 10 + 2)
    error = np.interp(np.arange(n), np.arange(len(knots)) * 10.0, knots)
    lats = lat + (offset_m + error) / M_PER_DEG_LAT
    lngs = np.linspace(lng0, lng1, n)
    cells = [h3i.latlng_to_cell(a, b, res) for a, b in zip(lats, lngs, strict=True)]
    return np.unique(np.array(cells, dtype=np.uint64))


def stitched_alpha(root: Path, z: int, west: float, north: float, east: float, south: float):  # type: ignore[no-untyped-def]
    """Alpha of the z-``z`` tiles covering the box, stitched; and the box's first global pixel."""
    x0, y0 = lnglat_to_tile(west, north, z)
    x1, y1 = lnglat_to_tile(east, south, z)
    alpha = np.zeros(((y1 - y0 + 1) * 256, (x1 - x0 + 1) * 256), np.uint8)
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            path = tile_path(root, "all", z, x, y, z)
            if path.exists():
                alpha[(y - y0) * 256 : (y - y0 + 1) * 256, (x - x0) * 256 : (x - x0 + 1) * 256] = (
                    decode(path)[:, :, 3]
                )
    return alpha, 256 * x0, 256 * y0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_z16_street_of_exactly_min_athletes_with_tracks_metres_apart_is_one_line(
    tmp_path: Path, seed: int
) -> None:
    """Exactly min_athletes riders on a street, each in their own lane (0, 4 and 8 m north
    of the kerb) with GPS noise: few res-13 cells hold all three, so a per-cell threshold
    draws dashes. With the threshold over each cell's neighbourhood (``threshold_ring``)
    the street is one line in every column, at most 8 px wide; a street 30 m north stays
    a second line, and a street of two riders 30 m further draws nothing."""
    from heatmetro.core.config import Config
    from heatmetro.site_builder.window import publishable_heat
    from heatmetro.state.records import HEAT_DTYPE, with_athlete

    k, res, z = 3, 13, 16
    lat0, lng0, lng1 = 42.3200, -72.6400, -72.6330  # ~575 m of street
    lanes = (0.0, 4.0, 8.0)
    streets = {"A": (0.0, k), "B": (30.0, k), "C": (60.0, k - 1)}  # kerb north of lat0, riders
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    for north, riders in streets.values():
        for lane in lanes[:riders]:
            cells = noisy_ride(lat0 + north / M_PER_DEG_LAT, lng0, lng1, lane, rng, res)
            arr = np.zeros(cells.size, HEAT_DTYPE)
            arr["cell"], arr["n"] = cells, 1
            rows.append(with_athlete(arr, len(rows)))
    ring = Config().threshold_ring
    published = publishable_heat("all", np.concatenate(rows), k, 10, threshold_ring=ring)
    write_heat_tiles(
        published.cells, published.heat, layer="all", out_root=tmp_path, min_zoom=z,
        public_max_zoom=z, max_zoom=z, heat_resolution=res,
    )  # fmt: skip
    alpha, gx0, gy0 = stitched_alpha(
        tmp_path, z, lng0, lat0 + 90 / M_PER_DEG_LAT, lng1, lat0 - 30 / M_PER_DEG_LAT
    )

    def row_of(north_m: float) -> int:
        return int(lnglat_to_global_px(lng0, lat0 + north_m / M_PER_DEG_LAT, z)[1]) - gy0

    c0, c1 = (int(lnglat_to_global_px(v, lat0, z)[0]) - gx0 for v in (lng0, lng1))
    ra, rb, rc = row_of(4.0), row_of(34.0), row_of(64.0)  # the middle lanes
    assert rb < ra - 15  # 30 m is ~17 px at z16 here
    for col in range(c0 + (c1 - c0) // 10, c1 - (c1 - c0) // 10):
        lit = np.flatnonzero(alpha[:, col] > 0)
        line_a = lit[np.abs(lit - ra) <= 8]
        line_b = lit[np.abs(lit - rb) <= 8]
        assert line_a.size and line_b.size, f"column {col}: a street has a hole (dashes)"
        assert line_a.max() - line_a.min() + 1 <= 8, f"column {col}: street A is too wide"
        assert line_b.max() - line_b.min() + 1 <= 8, f"column {col}: street B is too wide"
        assert (alpha[line_b.max() + 1 : line_a.min(), col] == 0).any()  # two lines, apart
        assert set(lit.tolist()) <= set(line_a.tolist()) | set(line_b.tolist())
    # One line each: the lit pixels near a street are one 8-connected piece.
    cols = slice(c0 + (c1 - c0) // 10, c1 - (c1 - c0) // 10)
    for r in (ra, rb):
        _, pieces = ndimage.label(alpha[r - 8 : r + 9, cols] > 0, structure=np.ones((3, 3)))
        assert pieces == 1, f"the street at row {r} is {pieces} pieces"
    assert not alpha[max(rc - 8, 0) : rc + 9].any(), "the street of two riders is drawn"


@given(st.lists(st.tuples(st.integers(0, 24), st.integers(0, 2**24 - 1)), max_size=30))
def test_tile_zxy_undoes_tile_ids(tiles: list[tuple[int, int]]) -> None:
    from heatmetro.site_builder.tile_cache import tile_ids, tile_zxy

    for z, k in tiles:
        n = 1 << z
        key = k % (n * n)
        got = tile_zxy(tile_ids(z, np.array([key], dtype=np.uint64)))
        assert [int(a[0]) for a in got] == [z, key // n, key % n]
