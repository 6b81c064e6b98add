"""The site's HTML pages, read as a browser would parse them (no browser needed)."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

from heatmetro.core.errors import PublishError
from heatmetro.site_builder.pages import SiteMeta, write_pages
from heatmetro.site_builder.templates import shipped_templates

META = SiteMeta(
    month="2026-03",
    first_month="2025-04",
    min_athletes=4,
    max_per_athlete=7,
    round_to=10,
    min_zoom=3,
    public_max_zoom=11,
    max_zoom=15,
    hide_start_end_m=250.0,
    hide_jitter_m=175.0,
    bounds=(42.25, -72.75, 42.40, -72.50),
    layers=("all", "ride", "run", "water", "winter"),
    counts={"athletes": 1234, "activities": 56789, "cells": 4321, "edges": 876, "tiles": 95},
    version="9.8.7",
    build_date="2026-04-01",
    basemap_url="",
    basemap_attribution="",
    has_metro=True,
)
RESOURCE_ATTRS = {("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")}


class Page(HTMLParser):
    """The parts of a page the tests look at: links, resources, visible text, scripts."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.resources: list[str] = []
        self.links: list[str] = []
        self.scripts: list[str] = []
        self.text_parts: list[str] = []
        self._in_script = False
        self.feed(html)
        self.text = re.sub(r"\s+", " ", " ".join(self.text_parts))
        self.script = "\n".join(self.scripts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if (tag, name) in RESOURCE_ATTRS and value is not None:
                self.resources.append(value)
            if tag == "a" and name == "href" and value is not None:
                self.links.append(value)
        self._in_script = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)
        else:
            self.text_parts.append(data)


def build(tmp_path: Path, meta: SiteMeta = META, name: str = "site") -> Path:
    root = tmp_path / name
    write_pages(root, meta)
    return root


def read(root: Path, page: str) -> Page:
    return Page((root / page).read_text(encoding="utf-8"))


def test_index_references_only_relative_local_assets(tmp_path: Path) -> None:
    root = build(tmp_path)
    html = (root / "index.html").read_text(encoding="utf-8")
    page = Page(html)

    assert "assets/leaflet/leaflet.js" in page.resources
    assert "assets/leaflet/leaflet.css" in page.resources
    for url in page.resources:
        if url.startswith("data:"):
            continue
        # Relative, so the site works from any sub-path; present, so it works offline.
        assert "://" not in url and not url.startswith("/"), url
        assert (root / url).is_file(), url
    assert "http://" not in html and "https://" not in html
    assert "cdn" not in html.lower() and "jquery" not in html.lower()
    assert '"tiles/all/{z}/{x}/{y}.png"' in page.script
    # leaflet.css draws the layer-control icon from images/.
    assert (root / "assets/leaflet/images/layers.png").stat().st_size > 0


def test_index_has_the_layers_in_order_and_overzooms_past_public_tiles(tmp_path: Path) -> None:
    page = read(build(tmp_path), "index.html")
    labels = re.findall(r'^\s*"([^"]+)" : tile_layer_\d+,$', page.script, flags=re.M)
    assert labels == ["All", "Ride", "Run/Walk/Hike", "Water", "Winter"]
    for layer in META.layers:
        assert f'"tiles/{layer}/{{z}}/{{x}}/{{y}}.png"' in page.script
    assert page.script.count('"maxNativeZoom": 11') == 5
    assert page.script.count('"maxZoom": 15') >= 5
    assert '"minZoom": 3' in page.script
    # Only the first layer starts on the map; the others wait in the layer switcher.
    assert len(re.findall(r"tile_layer_\d+\.addTo\(", page.script)) == 1
    assert _opening_bounds(page.script) == pytest.approx([42.25, -72.75, 42.4, -72.5])
    assert '"pane": "heat"' in page.script


def test_a_sport_named_like_its_group_gets_a_label_of_its_own(tmp_path: Path) -> None:
    """``sport_layers = ["Ride"]``: the Ride type's layer and the ride group's were both
    "Ride", and the switcher kept one of them (an outside review)."""
    meta = dataclasses.replace(META, layers=("all", "ride", "sport_ride", "sport_trailrun"))
    site = build(tmp_path, meta)
    labels = re.findall(
        r'^\s*"([^"]+)" : tile_layer_\d+,$', read(site, "index.html").script, flags=re.M
    )
    assert labels == ["All", "Ride", "Ride only", "Trail Run"]
    assert "All, Ride, Ride only, Trail Run" in (site / "about.html").read_text()


def test_index_only_lists_layers_that_have_tiles(tmp_path: Path) -> None:
    meta = dataclasses.replace(META, layers=("ride", "all"))
    page = read(build(tmp_path, meta), "index.html")
    labels = re.findall(r'^\s*"([^"]+)" : tile_layer_\d+,$', page.script, flags=re.M)
    assert labels == ["All", "Ride"]
    assert "tiles/run/" not in page.script and "tiles/winter/" not in page.script


def test_index_shows_legend_schemes_links_and_members_note(tmp_path: Path) -> None:
    page = read(build(tmp_path), "index.html")
    assert "Activities per cell, log scale" in page.text
    assert "low" in page.text and "high" in page.text
    assert all(s in page.text for s in ("Hot", "Blue", "Gray"))
    assert "about.html" in page.links and "metro/index.html" in page.links
    assert "Street-level zooms (up to 15) are for signed-in members" in page.text
    assert "heatmetro · data: the contributing athletes" in page.script.encode().decode(
        "unicode_escape"
    )

    no_metro = read(build(tmp_path, dataclasses.replace(META, has_metro=False), "b"), "index.html")
    assert "metro/index.html" not in no_metro.links


def test_basemap_is_the_only_remote_url_and_sits_under_the_heat(tmp_path: Path) -> None:
    url = "https://tile.example.org/{z}/{x}/{y}.png"
    meta = dataclasses.replace(META, basemap_url=url, basemap_attribution="© Example contributors")
    html = (build(tmp_path, meta) / "index.html").read_text(encoding="utf-8")
    page = Page(html)
    assert f'"{url}"' in page.script
    assert re.findall(r"https?://[^\"' )]+", html) == [url]
    assert all("://" not in r for r in page.resources)
    assert "\\u00a9 Example contributors" in page.script
    # The basemap is always on and not one of the radio choices.
    assert '"basemap"' not in page.script


def test_basemap_api_key_survives_id_stabilisation(tmp_path: Path) -> None:
    url = "https://tile.example.org/{z}/{x}/{y}.png?apikey=0123456789abcdef0123456789abcdef"
    meta = dataclasses.replace(META, basemap_url=url, basemap_attribution="Example")
    assert f'"{url}"' in read(build(tmp_path, meta), "index.html").script


def test_basemap_without_attribution_fails(tmp_path: Path) -> None:
    meta = dataclasses.replace(META, basemap_url="https://t.example/{z}/{x}/{y}.png")
    with pytest.raises(PublishError, match="basemap_attribution"):
        write_pages(tmp_path / "site", meta)


def test_unknown_layer_fails(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="'hockey'"):
        write_pages(tmp_path / "site", dataclasses.replace(META, layers=("all", "hockey")))


def test_no_heat_opens_on_the_world_and_says_so(tmp_path: Path) -> None:
    meta = dataclasses.replace(META, bounds=None, layers=(), counts={})
    page = read(build(tmp_path, meta), "index.html")
    assert "No heat is published for this window yet." in page.text
    assert "fitBounds" not in page.script and "L.tileLayer" not in page.script
    assert "L.control.layers" not in page.script


def test_about_shows_this_builds_numbers(tmp_path: Path) -> None:
    page = read(build(tmp_path), "about.html")
    text = page.text
    assert "2025-04 and 2026-03" in text
    assert "at least 4 different people" in text
    assert "at most 7 times" in text
    assert "rounded to a multiple of 10" in text
    assert "first and last 250 m" in text
    assert "up to 175 m" in text
    # A zoom told as ground: Web Mercator's metres per 256-px pixel at the map's middle
    # latitude (42.325: 156,543 m at zoom 0 on the equator).
    flowing = text.replace(" ,", ",")  # the text of <strong>11</strong>, as a browser reads it
    assert "stops at zoom 11, where one screen pixel covers about 57 m of ground" in flowing
    assert "(up to 15, about 3.5 m a pixel)" in text
    for label, value in [
        ("Athletes contributed", "1,234"),
        ("Activities counted", "56,789"),
        ("Map cells published", "4,321"),
        ("Metro rows (one per street segment and layer)", "876"),
        ("Heat tiles", "95"),
        ("Software", "heatmetro 9.8.7"),
        ("Built on", "2026-04-01"),
        ("Layers", "All, Ride, Run/Walk/Hike, Water, Winter"),
    ]:
        assert f"{label} {value}" in text
    assert "index.html" in page.links and "metro/index.html" in page.links
    assert all("://" not in r for r in page.resources)


def test_about_explains_the_threshold_patch_when_there_is_one(tmp_path: Path) -> None:
    assert "patch" not in read(build(tmp_path / "a"), "about.html").text  # the cell alone
    meta = dataclasses.replace(META, threshold_across_m=21)
    text = read(build(tmp_path / "b", meta), "about.html").text
    assert "at least 4 different people went there in the window (there or right beside" in text
    assert "in a patch about 21 m across centred on the spot" in text


def test_about_escapes_what_it_is_given(tmp_path: Path) -> None:
    meta = dataclasses.replace(META, version="<script>alert(1)</script>")
    html = (build(tmp_path, meta) / "about.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


def test_a_missing_template_variable_fails_the_build(tmp_path: Path) -> None:
    # An operator override of one template: the rest still comes from the package.
    templates = tmp_path / "templates"
    templates.mkdir()
    shipped = (shipped_templates() / "about.html.j2").read_text(encoding="utf-8")
    (templates / "about.html.j2").write_text(
        shipped.replace("{{ meta.round_to }}", "{{ meta_round_to }}"), encoding="utf-8"
    )
    with pytest.raises(jinja2.UndefinedError, match="meta_round_to"):
        write_pages(tmp_path / "site", META, template_dir=templates)


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    first, second = build(tmp_path, name="one"), build(tmp_path, name="two")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    # folium's random element ids are gone, not just equal by luck.
    assert not re.search(r"[0-9a-f]{32}", (first / "index.html").read_text(encoding="utf-8"))


def test_write_pages_returns_what_it_wrote(tmp_path: Path) -> None:
    root = tmp_path / "site"
    written = write_pages(root, META)
    assert root / "index.html" in written and root / "about.html" in written
    assert sorted(written) == sorted(p for p in root.rglob("*") if p.is_file())


def test_an_operator_template_dir_overrides_one_page_and_one_static_file(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    (templates / "static").mkdir(parents=True)
    shipped = (shipped_templates() / "about.html.j2").read_text(encoding="utf-8")
    (templates / "about.html.j2").write_text(
        shipped.replace("</h1>", " (Example City)</h1>", 1), encoding="utf-8"
    )
    (templates / "static" / "heatmetro.css").write_text("body { color: teal; }\n", encoding="utf-8")
    root = tmp_path / "site"
    write_pages(root, META, template_dir=templates)
    assert "(Example City)</h1>" in (root / "about.html").read_text(encoding="utf-8")
    assert (root / "assets" / "heatmetro.css").read_text(
        encoding="utf-8"
    ) == "body { color: teal; }\n"
    # Everything not overridden is the shipped version.
    assert (root / "assets" / "heatmetro.js").read_bytes() == (
        shipped_templates() / "static" / "heatmetro.js"
    ).read_bytes()
    assert "(Example City)" not in (root / "index.html").read_text(encoding="utf-8")


# --- where the map opens, colour schemes, PMTiles -----------------------------------------


def test_map_opens_on_the_densest_heat_not_the_whole_extent(tmp_path: Path) -> None:
    import h3.api.basic_int as h3
    import numpy as np

    from heatmetro.site_builder.heat_view import densest_view

    def cells_between(a: tuple[float, float], b: tuple[float, float]) -> list[int]:
        return h3.grid_path_cells(h3.latlng_to_cell(*a, 11), h3.latlng_to_cell(*b, 11))

    city = cells_between((42.31, -72.64), (42.36, -72.55))
    # A group ride in Paris: published too (three people), but it is not where people ride.
    paris = sorted(h3.grid_disk(h3.latlng_to_cell(48.85, 2.35, 11), 4))
    cells = np.array(city + paris, dtype=np.uint64)
    heat = np.r_[np.full(len(city), 5.0), np.full(len(paris), 9.0)]
    view = densest_view(cells, heat)
    assert view is not None
    south, west, north, east = view
    assert 42.30 < south < north < 42.37 and -72.65 < west < east < -72.54
    assert densest_view(np.zeros(0, np.uint64), np.zeros(0)) is None
    # Sorted (a layer's cells: centres from the tiles' memo) or not, the same view.
    order = np.argsort(cells)
    assert densest_view(cells[order], heat[order]) == view
    assert densest_view(cells[order][::-1], heat[order][::-1]) == view

    bounds = (42.31, -72.64, 48.86, 2.36)  # the whole extent, Paris included
    page = read(build(tmp_path, dataclasses.replace(META, bounds=bounds, view=view)), "index.html")
    assert _opening_bounds(page.script) == pytest.approx(list(view))


def test_every_scheme_is_offered_with_its_filter(tmp_path: Path) -> None:
    html = (build(tmp_path) / "index.html").read_text()
    page = Page(html)
    for label in ("Hot", "Blue", "Purple", "Gray", "Blue-red"):
        assert label in page.text
    assert '<filter id="hm-scheme-bluered"' in html
    assert '[data-scheme="bluered"] .leaflet-heat-pane { filter: url(#hm-scheme-bluered); }' in html
    # Every scheme whose top is near white has a form for each ground: the light one by
    # default (a basemap), its own on the dark ground (hot's own: the tiles, no filter).
    for scheme in ("blue", "purple", "gray"):
        assert f'<filter id="hm-scheme-{scheme}-light"' in html
        assert f'<filter id="hm-scheme-{scheme}"' in html
        assert (
            f'[data-scheme="{scheme}"] .leaflet-heat-pane '
            f"{{ filter: url(#hm-scheme-{scheme}-light); }}" in html
        )
        assert (
            f'[data-scheme="{scheme}"] .no-basemap .leaflet-heat-pane '
            f"{{ filter: url(#hm-scheme-{scheme}); }}" in html
        )
    assert '[data-scheme="hot"] .leaflet-heat-pane { filter: url(#hm-scheme-hot-light); }' in html
    assert '[data-scheme="hot"] .no-basemap .leaflet-heat-pane { filter: none; }' in html


def test_pmtiles_page_reads_archives_with_the_vendored_library(tmp_path: Path) -> None:
    root = build(tmp_path, dataclasses.replace(META, tiles_format="pmtiles"))
    page = read(root, "index.html")
    assert "assets/pmtiles.js" in page.resources
    assert (root / "assets" / "pmtiles.js").is_file()
    assert (
        "BSD" in (root / "assets" / "LICENSE-pmtiles.txt").read_text()
        or "Redistribution" in (root / "assets" / "LICENSE-pmtiles.txt").read_text()
    )
    assert 'new pmtiles.PMTiles(new URL("tiles/all.pmtiles"' in page.script
    assert "{z}" not in page.script
    assert all(not r.startswith(("http:", "https:", "//")) for r in page.resources)


@pytest.mark.parametrize("tiles_format", ["png", "pmtiles"])
def test_the_cached_map_is_the_map_drawn_for_these_bounds(
    tmp_path: Path, tiles_format: str
) -> None:
    """The map cache draws once with stand-in numbers and writes each build's bounds and
    view in: the result must be the map drawn directly, whatever the numbers."""
    from heatmetro.site_builder.pages import build_map, cached_map

    cache = tmp_path / "map_cache.json"
    rng = random.Random(7)
    for _ in range(4):
        s, w = rng.uniform(-60, 60), rng.uniform(-170, 170)
        n, e = s + rng.uniform(1e-4, 2), w + rng.choice([1e-4, 0.5, 3.25])
        view = (s + (n - s) / 4, w + (e - w) / 3, n, e)
        meta = dataclasses.replace(META, bounds=(s, w, n, e), view=view, tiles_format=tiles_format)
        assert cached_map(meta, cache) == build_map(meta), f"bounds {meta.bounds}"
    assert len(json.loads(cache.read_text())) == 1  # drawn once, filled in four times


def test_every_map_page_lets_a_visitor_pinch_zoom(tmp_path: Path) -> None:
    """folium's viewport says ``user-scalable=no``; WCAG 1.4.4 asks that text may be
    enlarged, and a phone's visitor pinches to read the panels."""
    html = (build(tmp_path) / "index.html").read_text()
    viewports = re.findall(r'<meta name="viewport"[^>]*>', html, re.S)
    assert viewports, "no viewport: a phone would draw the page at desktop width"
    for tag in viewports:
        assert "width=device-width" in tag
        assert "user-scalable=no" not in tag and "maximum-scale" not in tag, tag


def _opening_bounds(script: str) -> list[float]:
    """The bounds the map opens on (``heatmetro.openView``: fitted unless a link asks for
    another view), as south, west, north, east."""
    fit = re.search(
        r"openView : function[^)]*\)[^)]*\)[^)]*\}\)\(\s*map_\d+,\s*"
        r"\[\[([-\d.]+), ([-\d.]+)\], \[([-\d.]+), ([-\d.]+)\]\]",
        script,
    )
    assert fit is not None, "no opening view in the page's script"
    return [float(v) for v in fit.groups()]
