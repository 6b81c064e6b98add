"""The published map page in a real, offline Chromium: what a visitor would see."""

from __future__ import annotations

import dataclasses
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser

from heatmetro.core.config import OSM_ATTRIBUTION, OSM_TILES
from heatmetro.site_builder.pages import SiteMeta, write_pages
from heatmetro.site_builder.serve import start_background
from heatmetro.site_builder.tile_colours import scheme_tables
from heatmetro.site_builder.tiles import write_heat_tiles
from tests.browser import (
    BASEMAP_PREFIX,
    chromium_available,
    heat_mask,
    heat_pixels,
    launch,
    open_site,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not chromium_available(), reason="needs Debian chromium at /usr/bin/chromium"
    ),
]

# Around Northampton, Massachusetts; at 1000x700 px this fits at zoom 12.
BOUNDS = (42.25, -72.75, 42.40, -72.50)
PUBLIC_MAX_ZOOM = 12
RED = (230, 40, 20, 255)  # "all": horizontal bands
YELLOW = (255, 215, 40, 255)  # "ride": vertical bands


def _tile_range(zoom: int) -> tuple[range, range]:
    """Tile columns and rows covering BOUNDS at ``zoom`` (slippy-map scheme)."""

    def tile(lat: float, lng: float) -> tuple[int, int]:
        n = 2**zoom
        x = int((lng + 180.0) / 360.0 * n)
        y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
        return x, y

    south, west, north, east = BOUNDS
    x0, y0 = tile(north, west)
    x1, y1 = tile(south, east)
    return range(x0, x1 + 1), range(y0, y1 + 1)


def _write_tiles(root: Path, layer: str, colour: tuple[int, ...], *, vertical: bool) -> None:
    """Heat tiles for every zoom up to the public max, one 16 px band per tile."""
    band = np.zeros((256, 256, 4), dtype=np.uint8)
    if vertical:
        band[:, 120:136] = colour
    else:
        band[120:136, :] = colour
    for zoom in range(9, PUBLIC_MAX_ZOOM + 1):
        xs, ys = _tile_range(zoom)
        for x in xs:
            for y in ys:
                path = root / "tiles" / layer / str(zoom) / str(x) / f"{y}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(band, "RGBA").save(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    _write_tiles(root, "all", RED, vertical=False)
    _write_tiles(root, "ride", YELLOW, vertical=True)
    write_pages(root, META)
    return root


META = SiteMeta(
    month="2026-03",
    first_month="2025-04",
    min_athletes=3,
    max_per_athlete=10,
    round_to=5,
    min_zoom=9,  # the tests' pyramid starts at 9: nothing below may be asked for
    public_max_zoom=PUBLIC_MAX_ZOOM,
    max_zoom=16,
    hide_start_end_m=200.0,
    hide_jitter_m=150.0,
    bounds=BOUNDS,
    layers=("all", "ride"),
    counts={"athletes": 42, "activities": 1234},
    version="0.1.0",
    build_date="2026-04-01",
    basemap_url="",
    basemap_attribution="",
    has_metro=False,
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    # Served from a sub-path, as on a project page of a static host.
    url, stop = start_background(site.parent)
    yield f"{url}{site.name}/"
    stop()


def test_map_loads_offline_and_shows_heat(base_url: str, browser: Browser, tmp_path: Path) -> None:
    with open_site(base_url, browser=browser) as site:
        site.wait_for_map()
        full = site.screenshot(tmp_path / "all.png")  # look at it when this fails
        shot = site.screenshot(hide_controls=True)
        region = site.region_of(BOUNDS)
        zoom = site.page.evaluate("heatmetro.map.getZoom()")
        legend = site.page.locator(".hm-legend-bar").bounding_box()

        assert site.leaflet_loaded()
        # The map is the page's main landmark, named for screen readers.
        landmark = site.page.get_by_role("main")
        assert landmark.count() == 1 and "Global Heatmap" in (
            landmark.get_attribute("aria-label") or ""
        )
        assert site.page_errors == []
        assert site.console_errors == []
        assert site.blocked == []  # nothing tried to leave 127.0.0.1
        assert site.failed == []
        assert site.tiles, "the map asked for no heat tiles"
        assert {status for _, status in site.tiles} == {200}
        # Relative tile URLs resolve under the sub-path the site is served from.
        assert all(u.startswith(f"{base_url}tiles/all/12/") for u, _ in site.tiles)
        assert zoom == PUBLIC_MAX_ZOOM  # fit_bounds opened on the heat

        # A blank square is a missing tile (404): logged by Chromium, tolerated by tests.
        site.page.evaluate("fetch('tiles/all/12/0/0.png')")
        site.page.wait_for_timeout(300)
        assert any("404" in e for e in site.console_errors)
        assert site.console_errors_except_missing_tiles() == []

    left, top, right, bottom = region
    assert right - left > 500 and bottom - top > 400  # the bounds fill the window
    mask = heat_mask(shot)[top:bottom, left:right]
    # Horizontal red bands across the bounds: wide, thin, thousands of pixels.
    assert mask.sum() > 2000
    assert len(np.flatnonzero(mask.any(axis=0))) > 0.8 * (right - left)
    assert len(np.flatnonzero(mask.any(axis=1))) < 0.2 * (bottom - top)
    # The legend's ramp is drawn in the heat colours.
    assert legend is not None
    box = (
        round(legend["x"]),
        round(legend["y"]),
        round(legend["x"] + legend["width"]),
        round(legend["y"] + legend["height"]),
    )
    assert heat_pixels(full, box) > 0.5 * legend["width"] * legend["height"]


def test_switching_layer_and_scheme_changes_what_is_drawn(base_url: str, browser: Browser) -> None:
    with open_site(base_url, browser=browser) as site:
        site.wait_for_map()
        left, top, right, bottom = site.region_of(BOUNDS)
        before = heat_mask(site.screenshot(hide_controls=True))[top:bottom, left:right]

        site.click_layer("Ride")
        ride_shot = site.screenshot(hide_controls=True)[top:bottom, left:right]
        ride = heat_mask(ride_shot)
        ride_tiles = [u for u, _ in site.tiles if "/tiles/ride/" in u]

        site.click_radio("Blue")
        blue = site.screenshot(hide_controls=True)[top:bottom, left:right]
        scheme = site.page.evaluate("document.documentElement.dataset.scheme")

        assert site.page_errors == [] and site.console_errors == [] and site.blocked == []
    assert ride_tiles
    # The ride layer draws vertical bands where "all" drew horizontal ones.
    assert ride.sum() > 2000
    assert len(np.flatnonzero(ride.any(axis=0))) < 0.2 * (right - left)
    assert len(np.flatnonzero(ride.any(axis=1))) > 0.8 * (bottom - top)
    assert (before & ride).sum() < 0.1 * ride.sum()
    # The blue scheme re-colours the heat pane: the bands are still drawn, not in red.
    assert scheme == "blue"
    assert heat_mask(blue).sum() < 0.02 * ride.sum()
    changed = np.abs(blue.astype(int) - ride_shot.astype(int)).sum(axis=2) > 60
    assert changed[ride].mean() > 0.9
    assert blue[ride].astype(int).sum(axis=1).mean() > 300  # bright, not erased


def test_about_page_renders(site: Path, browser: Browser) -> None:
    with open_site(site, browser=browser, path="about.html") as page:
        text = page.page.inner_text("main")
        assert page.page_errors == [] and page.blocked == [] and page.console_errors == []
    assert "at least 3 different people" in text
    assert "1,234" in text


# --- high-DPI tiles, colour schemes, the default basemap, PMTiles ------------------------


def test_high_dpi_screens_get_the_next_zooms_tiles(base_url: str, browser: Browser) -> None:
    with open_site(base_url, browser=browser, device_scale_factor=2) as site:
        site.wait_for_map()
        zoom = site.page.evaluate("heatmetro.map.getZoom()")
        sizes = site.page.evaluate(
            "[...document.querySelectorAll('.leaflet-heat-pane img.leaflet-tile')]"
            ".filter(i => i.naturalWidth).map(i => [i.naturalWidth, i.width])"
        )
        shot = site.screenshot(hide_controls=True)
        assert site.page_errors == [] and site.blocked == [] and site.console_errors == []
    assert zoom == PUBLIC_MAX_ZOOM
    # At map zoom 12 the public pyramid's zoom-12 tiles are drawn at half size: 256 image
    # pixels in 128 CSS pixels, i.e. one tile pixel per screen pixel. No 13s (members).
    assert site.tiles and all(f"{base_url}tiles/all/12/" in u for u, _ in site.tiles)
    assert sizes and all(s == [256, 128] for s in sizes), sizes
    assert heat_mask(shot).sum() > 4 * 2000  # device pixels


# Per scheme, the colour the page must show for the "all" layer's band (hot green 40).
SCHEME_NAMES = [("Blue", "blue"), ("Purple", "purple"), ("Gray", "gray"), ("Blue-red", "bluered")]


@pytest.mark.parametrize(("label", "scheme"), SCHEME_NAMES)
def test_each_scheme_has_its_own_palette(
    base_url: str, browser: Browser, label: str, scheme: str
) -> None:
    with open_site(base_url, browser=browser) as site:
        site.wait_for_map()
        left, top, right, bottom = site.region_of(BOUNDS)
        hot = site.screenshot(hide_controls=True)[top:bottom, left:right]
        site.click_radio(label)
        shot = site.screenshot(hide_controls=True)[top:bottom, left:right]
        assert site.page_errors == [] and site.console_errors == []
    band = heat_mask(hot)
    assert band.sum() > 2000
    # The expected colour of the band: the scheme's table at green 40, over the dark
    # ground with the band's alpha (255: RED is opaque).
    tables = np.array(scheme_tables(scheme, 255))
    expected = np.rint(255 * tables[:, RED[1]])
    got = np.median(shot[band].astype(float), axis=0)
    assert np.abs(got - expected).max() <= 12, (got, expected)


def _street_map_site(tmp_path: Path, colour: tuple[int, ...]) -> Path:
    """A site of one ``all`` layer in ``colour`` over the default OSM basemap."""
    root = tmp_path / "site"
    _write_tiles(root, "all", colour, vertical=False)
    meta = dataclasses.replace(
        META, layers=("all",), basemap_url=OSM_TILES, basemap_attribution=OSM_ATTRIBUTION
    )
    write_pages(root, meta)
    return root


def test_heat_shows_when_the_default_basemap_is_unreachable(
    tmp_path: Path, browser: Browser
) -> None:
    root = _street_map_site(tmp_path, RED)
    with open_site(root, browser=browser) as site:
        site.wait_for_map()
        left, top, right, bottom = site.region_of(BOUNDS)
        shot = site.screenshot(hide_controls=True)
        attribution = site.page.inner_text(".leaflet-control-attribution")
        assert site.page_errors == []
        assert site.blocked and all(u.startswith(BASEMAP_PREFIX) for u in site.blocked)
    assert "OpenStreetMap contributors" in attribution
    assert heat_pixels(shot, (left, top, right, bottom)) > 2000


def street_cells(south: float, west: float, north: float, east: float) -> np.ndarray:
    """Res-11 cells along the diagonal and a horizontal street of the box."""
    import h3.api.basic_int as h3

    def path(a: tuple[float, float], b: tuple[float, float]) -> list[int]:
        return h3.grid_path_cells(h3.latlng_to_cell(*a, 11), h3.latlng_to_cell(*b, 11))

    mid = (south + north) / 2
    cells = path((south, west), (north, east)) + path((mid, west), (mid, east))
    return np.unique(np.array(cells, dtype=np.uint64))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def pmtiles_site(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, tuple[float, float, float, float]]:
    """A PMTiles site of one "all" layer over the default basemap, and its heat's bounds."""
    root = tmp_path_factory.mktemp("pm")
    inner = (42.30, -72.70, 42.36, -72.56)
    cells = street_cells(*inner)
    stats = write_heat_tiles(
        cells, np.full(cells.size, 5.0), layer="all", out_root=root, min_zoom=9,
        public_max_zoom=PUBLIC_MAX_ZOOM, max_zoom=16, heat_resolution=11, tiles_format="pmtiles",
    )  # fmt: skip
    meta = dataclasses.replace(
        META, layers=("all",), bounds=stats.bounds, tiles_format="pmtiles",
        basemap_url=OSM_TILES, basemap_attribution=OSM_ATTRIBUTION,
    )  # fmt: skip
    write_pages(root, meta)
    return root, stats.bounds


def test_pmtiles_site_shows_heat_offline(
    pmtiles_site: tuple[Path, tuple[float, float, float, float]], browser: Browser
) -> None:
    root, bounds = pmtiles_site
    assert not list((root / "tiles").rglob("*.png"))  # one archive per tree, no PNG files
    with open_site(root, browser=browser) as site:
        site.wait_for_map()
        region = site.region_of(bounds)
        shot = site.screenshot(hide_controls=True)
        archive = [(u, s) for u, s in site.tiles if u.endswith("/tiles/all.pmtiles")]
        assert site.page_errors == [] and site.failed == []
        assert site.blocked_except_basemap() == []  # nothing but the aborted basemap left
        site.page.wait_for_function("heatmetro.ranges !== null", timeout=10_000)
        assert site.page.evaluate("heatmetro.ranges") is True  # the host answers ranges
        assert not site.page.is_visible("#hm-tiles-failed")
    assert archive and {s for _, s in archive} == {206}  # read with HTTP range requests
    assert all("/members/" not in u for u, _ in site.tiles)
    assert heat_pixels(shot, region) > 300

    # A host without range requests (Python's http.server): not a blank map, but a notice.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        with open_site(f"http://127.0.0.1:{port}/", browser=browser) as site:
            site.page.wait_for_selector("#hm-tiles-failed", state="visible", timeout=10_000)
            notice = site.page.inner_text("#hm-tiles-failed")
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "range requests" in notice and 'tiles_format = "png"' in notice
    # Opened from a file: the same notice, and no request errors thrown at the page.
    with open_site(f"file://{root}/index.html", browser=browser) as site:
        site.page.wait_for_selector("#hm-tiles-failed", state="visible", timeout=10_000)
        site.page.wait_for_timeout(500)
        assert site.page_errors == [], site.page_errors


# The heat layer's tiles as Leaflet keeps them, and the zooms pmtiles.js read for them
# when the layer is drawn again (its PMTiles source is hidden in a closure, the class is not).
_PMTILES_READS_JS = """() => new Promise(done => {
    let layer = null;
    heatmetro.map.eachLayer(l => { if (l.options.pane === "heat") { layer = l; } });
    const read = [], getZxy = pmtiles.PMTiles.prototype.getZxy;
    pmtiles.PMTiles.prototype.getZxy = function (z, x, y, signal) {
        read.push(z);
        return getZxy.call(this, z, x, y, signal);
    };
    layer.once("load", () => done({
        read: [...new Set(read)],
        keys: [...new Set(Object.values(layer._tiles).map(t => t.coords.z))],
    }));
    layer.redraw();
})"""


@pytest.mark.parametrize(("scale", "tile_zoom", "css_px"), [(1, 11, 256), (2, 12, 128)])
def test_pmtiles_high_dpi_screens_get_the_next_zooms_tiles(
    pmtiles_site: tuple[Path, tuple[float, float, float, float]],
    browser: Browser,
    scale: int,
    tile_zoom: int,
    css_px: int,
) -> None:
    root, bounds = pmtiles_site
    south, west, north, east = bounds
    view = f"index.html#11/{(south + north) / 2:.4f}/{(west + east) / 2:.4f}"
    with open_site(root, browser=browser, path=view, device_scale_factor=scale) as site:
        site.wait_for_map()
        zoom = site.page.evaluate("heatmetro.map.getZoom()")
        reads = site.page.evaluate(_PMTILES_READS_JS)
        site.wait_for_tiles()
        sizes = site.page.evaluate(
            "[...document.querySelectorAll('.leaflet-heat-pane img.leaflet-tile')]"
            ".filter(i => i.naturalWidth).map(i => [i.naturalWidth, i.width])"
        )
        region = site.region_of(bounds)
        shot = site.screenshot(hide_controls=True)
        assert site.page_errors == [] and site.failed == []
        assert site.blocked_except_basemap() == []
    assert zoom == 11
    # Leaflet's own tiles stay at the map's zoom; on a high-DPI screen each is the next
    # zoom's tile, 256 image pixels in 128 CSS pixels: one tile pixel per screen pixel.
    assert reads == {"read": [tile_zoom], "keys": [11]}
    assert sizes and all(s == [256, css_px] for s in sizes), sizes
    left, top, right, bottom = (v * scale for v in region)  # device pixels
    assert heat_pixels(shot, (left, top, right, bottom)) > 500  # ~1200-1700 seen


def test_gray_on_a_street_map_is_dark_enough_to_see(tmp_path: Path, browser: Browser) -> None:
    """Gray's light-grey-to-white heat is made for the dark ground; over a basemap's
    light paper the page draws its light-ground form, light grey to near black."""
    busy = (255, 215, 40, 255)  # near the top of the hot ramp: a busy street
    root = _street_map_site(tmp_path, busy)
    with open_site(root, browser=browser) as site:
        site.wait_for_map()
        left, top, right, bottom = site.region_of(BOUNDS)
        hot = site.screenshot(hide_controls=True)[top:bottom, left:right]
        site.click_radio("Gray")
        shot = site.screenshot(hide_controls=True)[top:bottom, left:right]
        assert site.page_errors == []
    band = heat_mask(hot)
    assert band.sum() > 2000
    got = np.median(shot[band].astype(float), axis=0)
    light = np.rint(255 * np.array(scheme_tables("gray", 255, light=True))[:, busy[1]])
    dark = np.rint(255 * np.array(scheme_tables("gray", 255))[:, busy[1]])
    assert np.abs(got - light).max() <= 12, (got, light)
    assert np.abs(got - dark).max() > 40, "the dark ground's gray was drawn on the street map"


def test_a_busy_street_is_darker_than_the_paper_of_a_street_map(
    tmp_path: Path, browser: Browser
) -> None:
    """Hot's near-white top, made for the dark ground, was the faintest line over a
    street map's paper (a visitor's review: 1.1:1): there the page draws its light-ground
    form, whose busiest streets are the darkest."""
    busy = (255, 215, 40, 255)  # near the top of the hot ramp: a busy street
    root = _street_map_site(tmp_path, busy)
    with open_site(root, browser=browser) as site:
        site.wait_for_map()
        left, top, right, bottom = site.region_of(BOUNDS)
        shot = site.screenshot(hide_controls=True)[top:bottom, left:right]
        assert site.page_errors == []
    band = heat_mask(shot)
    assert band.sum() > 2000
    got = np.median(shot[band].astype(float), axis=0)
    light = np.rint(255 * np.array(scheme_tables("hot", 255, light=True))[:, busy[1]])
    assert np.abs(got - light).max() <= 12, (got, light)
    paper = np.array([242.0, 239.0, 233.0])
    assert (paper - got).mean() > 100, "a busy street is not much darker than the paper"


def test_on_a_phone_the_layer_list_is_a_button_and_the_notes_stay(
    base_url: str, browser: Browser
) -> None:
    """At 375 x 667 the open list of layers covered half the map and the title, and the
    zoom-limit note was hidden (a visitor's review): a button now, opened by a tap."""
    with open_site(base_url, browser=browser, viewport=(375, 667)) as site:
        site.wait_for_map()
        page = site.page
        assert not page.is_visible(".leaflet-control-layers-list")
        assert page.is_visible(".leaflet-control-layers-toggle")
        assert page.is_visible(".hm-members")  # why the map stops at a zoom
        page.click(".leaflet-control-layers-toggle")
        assert page.is_visible(".leaflet-control-layers-list")
        labels = page.locator(".leaflet-control-layers-base label")
        assert labels.count() >= 2 and labels.first.is_visible()
        page.mouse.click(190, 420)  # a tap on the map closes it
        assert not page.is_visible(".leaflet-control-layers-list")
        assert site.page_errors == []
    with open_site(base_url, browser=browser) as site:  # a desktop keeps the open list
        site.wait_for_map()
        assert site.page.is_visible(".leaflet-control-layers-list")


def test_the_view_is_kept_in_the_url(base_url: str, browser: Browser) -> None:
    """``#zoom/lat/lng`` opens that view and follows the map, as OpenStreetMap's site
    does: a visitor can share a street, and a reload keeps it (a visitor's review)."""
    with open_site(base_url + "#12/42.3300/-72.6300", browser=browser) as site:
        site.wait_for_map()
        view = site.page.evaluate(
            "[heatmetro.map.getZoom(), heatmetro.map.getCenter().lat, heatmetro.map.getCenter().lng]"
        )
        assert view[0] == 12 and abs(view[1] - 42.33) < 1e-3 and abs(view[2] + 72.63) < 1e-3
        site.page.evaluate("heatmetro.map.setView([42.3, -72.6], 11)")
        site.page.wait_for_function("window.location.hash.startsWith('#11/')")
        z, lat, lng = site.page.evaluate("window.location.hash").lstrip("#").split("/")
        assert (int(z), round(float(lat), 2), round(float(lng), 2)) == (11, 42.3, -72.6)
        assert site.page_errors == []
    with open_site(base_url + "#99/42.3300/-72.6300", browser=browser) as site:
        site.wait_for_map()  # a zoom out of range opens the deepest one, and says so
        z = site.page.evaluate("heatmetro.map.getZoom()")
        assert site.page.evaluate("window.location.hash").startswith(f"#{z}/") and z < 99


def test_a_shared_view_fetches_only_its_own_tiles(base_url: str, browser: Browser) -> None:
    """A ``#zoom/lat/lng`` link opens straight on that view: no tiles are fetched for the
    page's opening view first (they once were: the link was read after the map had
    fitted the heat, a wasted screenful of requests on every shared link)."""
    with open_site(base_url + "#10/42.3300/-72.6300", browser=browser) as site:
        site.wait_for_map()
        assert site.page.evaluate("heatmetro.map.getZoom()") == 10
        zooms = {int(url.split("/tiles/")[1].split("/")[1]) for url, _ in site.tiles}
        assert zooms == {10}, f"tiles of zooms {sorted(zooms)} fetched for a zoom 10 link"
        assert site.page_errors == []
