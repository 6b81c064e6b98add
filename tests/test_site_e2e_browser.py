"""The whole job in a real, offline Chromium: real ValleyBike rides -> ingest -> snapshot ->
the published site served on 127.0.0.1, looked at as a visitor would."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser

from heatmetro.site_builder.pages import LAYER_LABELS
from heatmetro.site_builder.serve import start_background
from tests.browser import chromium_available, heat_mask, heat_pixels, launch, open_site

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not chromium_available(), reason="needs Debian chromium at /usr/bin/chromium"
    ),
]

# Northampton and Amherst, MA, where ValleyBike ran: (south, west, north, east).
VALLEY = (42.2, -72.75, 42.45, -72.45)


@pytest.fixture(scope="module")
def site(june2018_site: Path) -> Path:
    """The published site of the bundled June 2018 rides (fixture config's zooms)."""
    return june2018_site


@pytest.fixture(scope="module")
def meta(site: Path) -> dict:
    return json.loads((site / "metadata.json").read_text())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    url, stop = start_background(site)
    yield url
    stop()


def test_map_shows_the_real_heat_offline(
    base_url: str, browser: Browser, meta: dict, tmp_path: Path
) -> None:
    south, west, north, east = meta["bounds"]
    assert VALLEY[0] <= south < north <= VALLEY[2] and VALLEY[1] <= west < east <= VALLEY[3]
    with open_site(base_url, browser=browser) as site:
        site.wait_for_map()
        site.screenshot(tmp_path / "all.png")  # look at it when this fails
        shot = site.screenshot(hide_controls=True)
        region = site.region_of((south, west, north, east))
        zoom = site.page.evaluate("heatmetro.map.getZoom()")

        assert site.leaflet_loaded()
        assert site.page_errors == []
        # The default OSM basemap was asked for (and aborted); nothing else left 127.0.0.1.
        assert site.blocked and site.blocked_except_basemap() == []
        assert site.failed == []
        assert site.console_errors_except_missing_tiles() == []
    statuses = {status for _, status in site.tiles}
    assert 200 in statuses and statuses <= {200, 404}, site.tiles  # 404 = a blank square
    assert all(f"{base_url}tiles/all/" in u for u, _ in site.tiles)
    assert meta["thresholds"]["min_zoom"] <= zoom <= meta["thresholds"]["public_max_zoom"]

    # Heat is drawn, and drawn where the data is: inside the published bounds (+ a splat).
    left, top, right, bottom = region
    pad = 12
    inside = heat_pixels(shot, (left - pad, top - pad, right + pad, bottom + pad))
    assert inside > 300, f"only {inside} heat pixels over Northampton/Amherst"
    assert heat_pixels(shot) - inside < 0.02 * inside, "heat drawn away from the data"


def test_ride_layer_shows_what_the_data_holds(base_url: str, browser: Browser, meta: dict) -> None:
    """June 2018 ValleyBike is all bikes: 'Ride' has exactly the cells of 'All', so the
    switch must fetch the ride tiles and draw the same picture; layers without cells are
    not offered at all."""
    offered = [LAYER_LABELS[k] for k in LAYER_LABELS if meta["cells_per_layer"].get(k, 0) > 0]
    # Rides after sunset also make the Night layer; no other sport group has any cells.
    assert offered == ["All", "Ride", "Night"]
    assert 0 < meta["cells_per_layer"]["night"] < meta["cells_per_layer"]["all"]
    assert meta["cells_per_layer"]["ride"] == meta["cells_per_layer"]["all"]
    south, west, north, east = meta["bounds"]
    with open_site(base_url, browser=browser) as site:
        site.wait_for_map()
        labels = site.page.locator(".leaflet-control-layers-base label").all_inner_texts()
        left, top, right, bottom = site.region_of((south, west, north, east))
        before = heat_mask(site.screenshot(hide_controls=True))[top:bottom, left:right]
        n_all = len(site.tiles)

        site.click_layer("Ride")
        after = heat_mask(site.screenshot(hide_controls=True))[top:bottom, left:right]
        ride_tiles = site.tiles[n_all:]
        checked = site.page.evaluate(
            "[...document.querySelectorAll('.leaflet-control-layers-base input')]"
            ".map(i => i.checked)"
        )
        assert site.page_errors == [] and site.blocked_except_basemap() == []
        assert site.console_errors_except_missing_tiles() == []
    assert [label.strip() for label in labels] == offered
    assert checked == [False, True, False]  # All, Ride (chosen), Night
    assert ride_tiles and all("/tiles/ride/" in u for u, _ in ride_tiles)
    assert 200 in {s for _, s in ride_tiles}
    assert before.sum() > 300
    overlap = (before & after).sum() / max((before | after).sum(), 1)
    assert overlap > 0.95, f"ride and all should draw the same heat here, IoU {overlap:.2f}"


def test_about_page_shows_this_builds_numbers(base_url: str, browser: Browser, meta: dict) -> None:
    with open_site(base_url, browser=browser, path="about.html") as page:
        rows = page.page.locator("table.hm-facts tr").evaluate_all(
            "rows => rows.map(r => [r.querySelector('th').innerText, r.querySelector('td').innerText])"
        )
        text = page.page.inner_text("main")
        assert page.page_errors == [] and page.blocked == [] and page.console_errors == []
    facts = dict(rows)
    counts = meta["counts"]
    assert facts["Athletes contributed"] == f"{counts['athletes']:,}"
    assert facts["Activities counted"] == f"{counts['activities']:,}"
    assert facts["Map cells published"] == f"{counts['cells']:,}"
    assert facts["Metro rows (one per street segment and layer)"] == f"{counts['edges']:,}"
    assert facts["Heat tiles"] == f"{counts['tiles']:,}"
    assert facts["Window"] == f"{meta['window']['first_month']} to {meta['window']['last_month']}"
    assert facts["Built on"] == meta["built_at"][:10]
    assert f"heatmetro {meta['software']['version']}" == facts["Software"]
    thresholds = meta["thresholds"]
    assert f"at least {thresholds['min_athletes']} different people" in text
    assert f"at most {thresholds['max_per_athlete']} times" in text
    assert f"stops at zoom {thresholds['public_max_zoom']}" in text
    assert f"multiple of {thresholds['round_to']}" in text


def test_metro_downloads_resolve_and_match_their_sha256(
    base_url: str, browser: Browser, site: Path
) -> None:
    with open_site(base_url, browser=browser, path="metro/index.html") as page:
        listed = page.page.locator("tr.download").evaluate_all(
            """rows => rows.map(r => ({
                href: r.querySelector('td.name a').href,
                bytes: Number(r.querySelector('td.size').dataset.bytes),
                sha256: r.querySelector('td.sha256').innerText.trim(),
            }))"""
        )
        links = page.page.locator("a").evaluate_all("as => as.map(a => a.href)")
        downloads = []
        for item in listed:
            response = page.page.request.get(item["href"])
            downloads.append((item, response.status, response.body()))
        others = {href: page.page.request.get(href).status for href in links}
        assert page.page_errors == [] and page.blocked == [] and page.console_errors == []
    names = {item["href"].rsplit("/", 1)[-1] for item in listed}
    assert {
        "edges.csv",
        "edges.geojson",
        "edges_hourly.csv",
        "hexagons.csv",
        "od.csv",
        "README.md",
    } <= names
    assert "heatmetro-metro-2018-06.zip" in names
    for item, status, body in downloads:
        assert status == 200, item
        assert len(body) == item["bytes"], item
        assert hashlib.sha256(body).hexdigest() == item["sha256"], item
        # What was served is the published file itself.
        assert (site / "metro" / item["href"].rsplit("/", 1)[-1]).read_bytes() == body
    # Every link on the page (back to the map, README, zip) resolves.
    assert others and set(others.values()) == {200}, others
    assert np.all([href.startswith(base_url) for href in others])


def test_metro_downloads_fit_a_phone(base_url: str, browser: Browser) -> None:
    """At 375 px the page was 700 px wide (the chart and the checksums): the chart now
    scales and the table scrolls in its own box."""
    with open_site(base_url, browser=browser, path="metro/index.html", viewport=(375, 667)) as page:
        assert page.page.evaluate("document.documentElement.scrollWidth") <= 375
        chart = page.page.locator("svg.metro-chart").bounding_box()
        assert chart is not None and chart["width"] <= 375
        assert page.page.is_visible("text=edges.csv")
        assert page.page_errors == []


def test_pmtiles_site_from_the_cli_shows_heat_and_rebuilds_identically(
    june2018_site: Path, browser: Browser, tmp_path: Path
) -> None:
    """The same store published with ``tiles_format = "pmtiles"``, twice (the second
    build reuses every tile), then looked at in Chromium with only 127.0.0.1 reachable."""
    import shutil
    import subprocess

    from tests.conftest import HEATMETRO, REPO, cli_env, write_config

    shutil.copytree(june2018_site.parent.parent / "state", tmp_path / "state")
    config = write_config(tmp_path, tiles_format="pmtiles")
    env = cli_env(SOURCE_DATE_EPOCH="1700000000")
    env.pop("HEATMETRO_QUIET")
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [*HEATMETRO, "snapshot", "-c", str(config), "--month", "2018-06"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=True,
        )  # fmt: skip
        site = (tmp_path / "site").resolve()
        runs.append((proc.stderr, (site / "tiles" / "all.pmtiles").read_bytes()))
    assert runs[0][1] == runs[1][1]  # byte-identical archives
    assert " 0 unchanged" in runs[0][0] and " 0 unchanged" not in runs[1][0], runs[1][0]
    assert not list((site / "tiles").rglob("*.png"))
    meta = json.loads((site / "metadata.json").read_text())

    url, stop = start_background(site)
    try:
        with open_site(url, browser=browser) as page:
            page.wait_for_map()
            region = page.region_of(tuple(meta["bounds"]))  # type: ignore[arg-type]
            shot = page.screenshot(hide_controls=True)
            assert page.page_errors == [] and page.failed == []
            assert page.blocked_except_basemap() == []
        archive = {s for u, s in page.tiles if u.endswith("/tiles/all.pmtiles")}
    finally:
        stop()
    assert archive == {206}
    left, top, right, bottom = region
    assert heat_pixels(shot, (left - 12, top - 12, right + 12, bottom + 12)) > 300
