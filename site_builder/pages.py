"""The site's HTML: the heatmap page (folium/Leaflet) and the about page.

Both pages are rendered from the jinja2 templates in ``site_template/``. The map itself
is built with folium, then its three parts (head, body, script) are dropped into
``index.html.j2`` so the page keeps our own layout, controls and wording.

Two properties matter more than looks:

* **Self-contained.** The published site must work offline and from any sub-path, so
  every URL is relative: Leaflet is copied from the ``js_lib_leaflet`` package into
  ``assets/leaflet/`` and folium's CDN links (Leaflet, jQuery, Bootstrap, fonts) are
  replaced on the map instance. The only absolute URL ever written is the optional
  basemap, when the operator configures one.
* **Deterministic.** folium names every element ``<kind>_<32 random hex digits>``;
  those names are replaced by counters in tree order so two builds are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, replace
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from heatmetro.core.errors import PublishError
from heatmetro.core.sports import NIGHT_LAYER, SPORT_LAYER_LABELS
from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.templates import environment, static_files
from heatmetro.site_builder.tile_colours import (
    ON_LIGHT,
    SCHEME_LABELS,
    scheme_gradient,
    scheme_tables,
)
from heatmetro.site_builder.tile_math import EQUATOR_M_PER_PX

_GROUP_LABELS = {
    "all": "All",
    "ride": "Ride",
    "run": "Run/Walk/Hike",
    "water": "Water",
    "winter": "Winter",
}
#: Heat layers in the order the layer switcher lists them, with their labels. A sport
#: named like a group (the ``Ride`` type in the ``ride`` group) is "Ride only": two
#: entries with one label would leave one unreachable in the switcher.
LAYER_LABELS: dict[str, str] = {
    **_GROUP_LABELS,
    **{
        layer: f"{label} only" if label in _GROUP_LABELS.values() else label
        for layer, label in SPORT_LAYER_LABELS.items()
    },  # per-sport layers (config ``sport_layers``), e.g. sport_trailrun
    NIGHT_LAYER: "Night",
}

#: Colour schemes ``(value, label)``; all but "hot" are SVG filters over the hot tiles.
SCHEMES: tuple[tuple[str, str], ...] = tuple(SCHEME_LABELS.items())

#: The weekly map's "all" layer, offered in the monthly page's switcher once published.
WEEKLY_TILES = "weekly/tiles/all"
WEEKLY_LABEL = "Last 7 days"

HEAT_ATTRIBUTION = "heatmetro · data: the contributing athletes"
HEAT_PANE = "heat"  # Leaflet gives the pane the class ``leaflet-heat-pane``.
HEAT_PANE_Z = 410  # above the basemap (tilePane, 200) and overlays (400), below markers

ASSETS = "assets"
LEAFLET_FILES = ("leaflet.js", "leaflet.css")


@dataclass(frozen=True)
class SiteMeta:
    """Everything the pages say about one build.

    Attributes:
        month: last month of the window, ``YYYY-MM``.
        first_month: first month of the window, ``YYYY-MM``.
        min_athletes: distinct athletes a cell or edge needs to be published.
        max_per_athlete: cap on one athlete's activities counted in one cell.
        round_to: Metro counts are rounded to a multiple of this.
        min_zoom: lowest zoom of the tile pyramid.
        public_max_zoom: highest zoom of the public tiles; the map overzooms past it.
        max_zoom: highest zoom of the members' tiles (and of the map).
        hide_start_end_m: default hidden distance at the start and end of an activity.
        hide_jitter_m: the random extra hidden distance, at most.
        bounds: ``(south, west, north, east)`` of the published heat; ``None`` = no heat.
        layers: layers that have tiles, a subset of :data:`LAYER_LABELS`.
        counts: figures shown on the about page (athletes, activities, cells, ...).
        version: heatmetro version.
        build_date: the build's date, given so that builds are reproducible.
        basemap_url: Leaflet URL template of a basemap, or ``""`` for none.
        basemap_attribution: the basemap's required attribution (HTML allowed).
        has_metro: link to ``metro/index.html``.
        weekly_min_athletes: distinct athletes a cell of the weekly map needs.
        weekly_public_max_zoom: the weekly map's deepest zoom.
        has_weekly: link to ``weekly/index.html`` (the last 7 days).
        weekly_format: the published weekly map's tile format (``png`` or ``pmtiles``).
        weekly_days: the weekly map's first and last day (its layer is named by them).
        weekly_bounds: where the weekly map has heat (its tiles are asked for only there).
        view: ``(south, west, north, east)`` the map opens on (the densest heat);
            ``None`` = ``bounds``.
        tiles_format: ``png`` (a ``{z}/{x}/{y}.png`` tree) or ``pmtiles`` (one archive
            per layer, read with the vendored pmtiles.js).
        metro_epsilon, metro_delta: differential privacy of the Metro counts (``None``: off).
        threshold_across_m: metres across the patch of cells, centred on a heat cell, in
            which ``min_athletes`` people must have been (``threshold_ring``); 0: the cell.
    """

    month: str
    first_month: str
    min_athletes: int
    max_per_athlete: int
    round_to: int
    min_zoom: int
    public_max_zoom: int
    max_zoom: int
    hide_start_end_m: float
    hide_jitter_m: float
    bounds: tuple[float, float, float, float] | None
    layers: tuple[str, ...]
    counts: dict[str, int]
    version: str
    build_date: str
    basemap_url: str
    basemap_attribution: str
    has_metro: bool
    osm_attribution: str = ""  # with a street base map: "© OpenStreetMap contributors"
    weekly_min_athletes: int = 5
    weekly_public_max_zoom: int = 11
    has_weekly: bool = False
    weekly_format: str = "png"
    weekly_days: tuple[str, str] | None = None  # first and last day of the weekly map
    weekly_bounds: tuple[float, float, float, float] | None = None
    view: tuple[float, float, float, float] | None = None
    tiles_format: str = "png"
    metro_epsilon: float | None = None
    metro_delta: float | None = None
    threshold_across_m: int = 0  # the patch a heat cell's threshold counts over; 0: the cell
    month_in_progress: bool = False  # ``month`` was not over at the build (``--partial``)

    def ground_per_pixel(self, zoom: int) -> str:
        """What one screen pixel covers on the ground at ``zoom``, in the middle of the
        map's opening view: "zoom 12" means nothing to a visitor, "28 m" does."""
        box = self.view or self.bounds
        lat = (box[0] + box[2]) / 2 if box else 0.0
        metres = EQUATOR_M_PER_PX * math.cos(math.radians(lat)) / 2**zoom
        return f"{metres:,.0f} m" if metres >= 10 else f"{metres:.1f} m"


@dataclass(frozen=True)
class MapParts:
    """The rendered folium map, split the way ``index.html.j2`` places it."""

    name: str  # the global JS variable holding the L.Map
    heat_layers: tuple[str, ...]  # the global JS variables holding the heat layers
    retina: bool  # the heat layers can use the next zoom's tiles on high-DPI screens
    head: Markup
    body: Markup
    script: Markup
    # The weekly layer's variable and the layer switcher's (its top-level ``let``): the
    # weekly job's ``weekly/weekly.js`` brings that layer up to date on the page.
    weekly_layer: str | None = None
    layer_control: str | None = None


def write_pages(
    out_root: Path,
    meta: SiteMeta,
    *,
    template_dir: Path | None = None,
    map_cache: Path | None = None,
    reuse_map: bool = True,
) -> list[Path]:
    """Write ``index.html``, ``about.html`` and ``assets/`` under ``out_root``.

    Call it after the tiles are written: the page only points at ``tiles/{layer}/``
    for the layers listed in ``meta.layers``.

    Args:
        out_root: the site's root folder (created if missing).
        meta: what this build publishes.
        template_dir: the operator's template overrides (``template_dir`` in the config);
            anything not there comes from the shipped ``site_template/``.
        map_cache: a file keeping the rendered map for the next build (``cached_map``).
        reuse_map: draw the map from ``map_cache`` when it holds it (else refresh it).

    Returns:
        Every file written, in a stable order.

    Raises:
        PublishError: ``meta`` names an unknown layer, or a basemap without attribution.
        jinja2.UndefinedError: a template uses a variable that is not given.
    """
    _check(meta)
    env = make_environment(template_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    written = _copy_assets(out_root, template_dir)

    common = {
        "meta": meta,
        "layer_labels": LAYER_LABELS,
        "schemes": SCHEMES,
        "heat_attribution": HEAT_ATTRIBUTION,
        "scheme_styles": scheme_styles(),
        "pmtiles_probe": pmtiles_probe(meta),
    }
    pages = {
        "index.html": env.get_template("index.html.j2").render(
            map=cached_map(meta, map_cache, reuse=reuse_map), **common
        ),
        "about.html": env.get_template("about.html.j2").render(**common),
    }
    for name, html in pages.items():
        path = out_root / name
        # newline="" keeps "\n" on every platform: the bytes must not depend on the OS.
        with path.open("w", encoding="utf-8", newline="") as fh:
            fh.write(html)
        written.append(path)
    return written


def make_environment(template_dir: Path | None) -> Environment:
    """The jinja2 environment for the site templates.

    ``StrictUndefined`` turns a misspelt or missing variable into a build failure
    instead of a silently empty spot on a published page.
    """
    env = environment(template_dir)
    env.filters["thousands"] = lambda n: f"{n:,}"
    env.filters["metres"] = lambda m: f"{m:,.0f} m"
    return env


def build_map(meta: SiteMeta) -> MapParts:
    """Build the folium map for ``meta`` and render it into deterministic parts."""
    # folium (with branca and their templates) costs ~0.4 s to import and compile: only
    # when a map is drawn, not when the map cache already holds it.
    from heatmetro.site_builder.folium_map import render_map

    return render_map(meta)


def map_centre(bounds: tuple[float, float, float, float]) -> tuple[float, float]:
    """Where the map is centred before it fits its view: the middle of ``bounds``."""
    south, west, north, east = bounds
    return (south + north) / 2, (west + east) / 2


# The map's text depends on the bounds and the view only through their numbers and the
# centre: it is drawn once with these stand-ins, cached, and each build writes its own
# numbers in their place (one regex pass). Odd values no real map would have.
_STAND_IN_BOUNDS = (
    -81.11111111111111,
    -171.22222222222223,
    -82.33333333333333,
    -172.44444444444446,
)
_STAND_IN_VIEW = (-83.55555555555556, -173.66666666666666, -84.77777777777777, -174.88888888888889)
_TEXT = ("head", "body", "script")


def _numbers(meta: SiteMeta) -> list[float]:
    assert meta.bounds is not None and meta.view is not None
    return [*meta.bounds, *meta.view, *map_centre(meta.bounds)]


def cached_map(meta: SiteMeta, cache: Path | None, *, reuse: bool = True) -> MapParts:
    """``build_map(meta)``, drawn once per set of map settings and kept in ``cache`` (a
    JSON file): the map depends on the layers, zooms, formats and basemap, which rarely
    change, and on the bounds and view, which are written in for each build. So a
    rebuild does not import folium. The file keeps the last few maps (sites of one
    store in both tile formats share it). Without ``reuse`` the map is drawn directly
    and the file refreshed for the next build."""
    if cache is None or meta.bounds is None or meta.view is None:
        return build_map(meta)
    stand_in = replace(meta, bounds=_STAND_IN_BOUNDS, view=_STAND_IN_VIEW)
    key = _map_key(stand_in)
    maps = _read_maps(cache)
    entry = maps.get(key) if reuse else None
    if not _usable(entry):
        entry = _entry(build_map(stand_in))
        if not _usable(entry):  # folium wrote a stand-in some other way: no caching
            return build_map(meta)
        maps.pop(key, None)
        maps = {**dict(list(maps.items())[-(MAP_CACHE_ENTRIES - 1) :]), key: entry}
        _write_maps(cache, maps)
        if not reuse:
            return build_map(meta)
    assert entry is not None
    numbers = dict(zip((repr(x) for x in _numbers(stand_in)), _numbers(meta), strict=True))
    pattern = re.compile("|".join(re.escape(k) for k in numbers))

    def filled(text: str) -> Markup:
        return Markup(pattern.sub(lambda m: repr(numbers[m.group(0)]), text))  # noqa: S704 -- our own folium render, cached

    return MapParts(
        name=str(entry["name"]),
        heat_layers=tuple(str(n) for n in entry["heat_layers"]),
        retina=bool(entry["retina"]),
        head=filled(entry["head"]),
        body=filled(entry["body"]),
        script=filled(entry["script"]),
        weekly_layer=_str_or_none(entry.get("weekly_layer")),
        layer_control=_str_or_none(entry.get("layer_control")),
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


MAP_CACHE_ENTRIES = 4


def _entry(parts: MapParts) -> dict[str, Any]:
    entry: dict[str, Any] = {f: str(getattr(parts, f)) for f in ("name", *_TEXT)}
    entry["retina"] = parts.retina
    entry["heat_layers"] = list(parts.heat_layers)
    entry["weekly_layer"] = parts.weekly_layer
    entry["layer_control"] = parts.layer_control
    return entry


def _usable(entry: object) -> bool:
    """A well-formed entry whose text holds every stand-in, and only as a whole number
    (a stand-in cut short, e.g. rounded, would survive the substitution)."""
    if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str) for f in _TEXT):
        return False
    if not isinstance(entry.get("name"), str) or not isinstance(entry.get("heat_layers"), list):
        return False
    text = "".join(entry[f] for f in _TEXT)
    for x in (*_STAND_IN_BOUNDS, *_STAND_IN_VIEW):
        whole, prefix = repr(x), repr(x)[:6]
        if whole not in text or text.count(prefix) != text.count(whole):
            return False
    return True


def _read_maps(cache: Path) -> dict[str, Any]:
    try:
        maps = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return maps if isinstance(maps, dict) else {}


def _write_maps(cache: Path, maps: dict[str, Any]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # no cache: the next build draws the map again
    tmp = temporary_for(cache)
    try:
        tmp.write_text(json.dumps(maps), encoding="utf-8")
        tmp.replace(cache)  # atomic: a reader sees the old maps or the new ones
    except OSError:
        tmp.unlink(missing_ok=True)  # no cache: the next build draws the map again


def _map_key(meta: SiteMeta) -> str:
    """Digest of everything ``build_map`` reads, and of the code and folium version."""
    fields = (
        "bounds", "view", "min_zoom", "max_zoom", "public_max_zoom", "tiles_format",
        "has_weekly", "weekly_format", "weekly_public_max_zoom", "weekly_days", "weekly_bounds",
        "basemap_url",
        "basemap_attribution",
    )  # fmt: skip
    inputs: dict[str, Any] = {f: getattr(meta, f) for f in fields}
    inputs["layers"] = _ordered_layers(meta)
    here = Path(__file__).resolve().parent
    try:
        code = b"".join((here / f).read_bytes() for f in ("pages.py", "folium_map.py"))
    except OSError:  # not installed as files: a key no cache can match
        code = os.urandom(16)
    inputs["code"] = hashlib.sha256(code).hexdigest()
    inputs["folium"] = metadata.version("folium")
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def scheme_styles() -> Markup:
    """The SVG filters and CSS of the colour schemes (see tile_colours): "hot" on the
    dark ground is the tiles' own colours, every other form a filter.

    A scheme with an ``ON_LIGHT`` form gets both: that one by default (a basemap under
    the heat), its own under ``.no-basemap`` (the dark ground)."""
    filters, rules = [], []
    for scheme in SCHEME_LABELS:
        for light in (True, False) if scheme in ON_LIGHT else (False,):
            ground = "" if not light else "-light"
            within = " .no-basemap" if scheme in ON_LIGHT and not light else ""
            rules.append(
                f'[data-scheme="{scheme}"]{within} .hm-legend-bar '
                f"{{ background: {scheme_gradient(scheme, light=light)}; }}"
            )
            if scheme == "hot" and not light:  # the tiles' own colours
                if scheme in ON_LIGHT:
                    rules.append(
                        f'[data-scheme="hot"]{within} .leaflet-heat-pane {{ filter: none; }}'
                    )
                continue
            funcs = "".join(
                f'<feFunc{c} type="table" tableValues="{" ".join(f"{v:g}" for v in values)}"/>'
                for c, values in zip("RGB", scheme_tables(scheme, light=light), strict=True)
            )
            filters.append(
                f'<filter id="hm-scheme-{scheme}{ground}" color-interpolation-filters="sRGB">'
                # the hot ramp's green, which rises with intensity, into every channel...
                '<feColorMatrix type="matrix" values="0 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 0 0 1 0"/>'
                # ...then looked up in the scheme's palette
                f"<feComponentTransfer>{funcs}</feComponentTransfer></filter>"
            )
            rules.append(
                f'[data-scheme="{scheme}"]{within} .leaflet-heat-pane '
                f"{{ filter: url(#hm-scheme-{scheme}{ground}); }}"
            )
    svg = (
        '<svg class="hm-filters" width="0" height="0" aria-hidden="true">'
        + "".join(filters)
        + "</svg>"
    )
    return Markup(f"{svg}\n<style>\n" + "\n".join(rules) + "\n</style>")  # noqa: S704 -- our own constants


def pmtiles_probe(meta: SiteMeta) -> str | None:
    """The archive a PMTiles page reads first, for ``heatmetro.js`` to check that the host
    answers HTTP range requests (None for a PNG tree: any static host serves it)."""
    layers = _ordered_layers(meta)
    if meta.tiles_format != "pmtiles" or not layers:
        return None
    return f"tiles/{layers[0]}.pmtiles"


def _ordered_layers(meta: SiteMeta) -> list[str]:
    return [layer for layer in LAYER_LABELS if layer in meta.layers]


def _check(meta: SiteMeta) -> None:
    unknown = sorted(set(meta.layers) - set(LAYER_LABELS))
    if unknown:
        msg = f"pages: unknown layer(s) {unknown} in meta.layers; known: {list(LAYER_LABELS)}"
        raise PublishError(msg)
    if meta.basemap_url and not meta.basemap_attribution.strip():
        msg = (
            f"pages: basemap_url = {meta.basemap_url!r} has no basemap_attribution; "
            "a basemap's licence requires its attribution"
        )
        raise PublishError(msg)
    if not meta.min_zoom <= meta.public_max_zoom <= meta.max_zoom:
        msg = (
            "pages: zooms must satisfy min_zoom <= public_max_zoom <= max_zoom, got "
            f"{meta.min_zoom}, {meta.public_max_zoom}, {meta.max_zoom}"
        )
        raise PublishError(msg)


def write_assets(out_root: Path, template_dir: Path | None = None) -> list[Path]:
    """``assets/`` alone, for map pages built outside :func:`write_pages` (weekly, personal)."""
    return _copy_assets(out_root, template_dir)


def _copy_assets(out_root: Path, template_dir: Path | None) -> list[Path]:
    """Copy Leaflet and the site's own static files into ``out_root/assets/``."""
    written: list[Path] = []
    leaflet_src = resources.files("js_lib_leaflet") / "static" / "js_lib_leaflet"
    leaflet_dst = out_root / ASSETS / "leaflet"
    (leaflet_dst / "images").mkdir(parents=True, exist_ok=True)
    sources = [(leaflet_src / name, leaflet_dst / name) for name in LEAFLET_FILES]
    images = sorted((p for p in (leaflet_src / "images").iterdir()), key=lambda p: p.name)
    # leaflet.css points at images/ (layer-control icon, default marker).
    sources += [(p, leaflet_dst / "images" / p.name) for p in images]
    sources += [(src, out_root / ASSETS / name) for name, src in static_files(template_dir)]
    for src, dst in sources:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with src.open("rb") as fin, dst.open("wb") as fout:
            shutil.copyfileobj(fin, fout)
        written.append(dst)
    return written
