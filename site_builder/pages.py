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

import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import folium
from branca.element import Element, Figure
from folium.map import CustomPane, LayerControl
from folium.raster_layers import TileLayer
from folium.template import Template
from jinja2 import Environment
from markupsafe import Markup

from heatmetro.core.errors import PublishError
from heatmetro.core.sports import NIGHT_LAYER, SPORT_LAYER_LABELS
from heatmetro.site_builder.templates import environment, static_files
from heatmetro.site_builder.tile_colours import SCHEME_LABELS, scheme_gradient, scheme_tables

#: Heat layers in the order the layer switcher lists them, with their labels.
LAYER_LABELS: dict[str, str] = {
    "all": "All",
    "ride": "Ride",
    "run": "Run/Walk/Hike",
    "water": "Water",
    "winter": "Winter",
    **SPORT_LAYER_LABELS,  # per-sport layers (config ``sport_layers``), e.g. sport_trailrun
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

# folium/branca element names end in "_" + 32 hex digits from os.urandom. Only that shape
# is touched: a basemap URL may carry a 32-hex API key, which must survive.
_RANDOM_ID = re.compile(r"(?<=[a-z]_)[0-9a-f]{32}(?![0-9a-f])")


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
        view: ``(south, west, north, east)`` the map opens on (the densest heat);
            ``None`` = ``bounds``.
        tiles_format: ``png`` (a ``{z}/{x}/{y}.png`` tree) or ``pmtiles`` (one archive
            per layer, read with the vendored pmtiles.js).
        metro_epsilon, metro_delta: differential privacy of the Metro counts (``None``: off).
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
    view: tuple[float, float, float, float] | None = None
    tiles_format: str = "png"
    metro_epsilon: float | None = None
    metro_delta: float | None = None


@dataclass(frozen=True)
class MapParts:
    """The rendered folium map, split the way ``index.html.j2`` places it."""

    name: str  # the global JS variable holding the L.Map
    heat_layers: tuple[str, ...]  # the global JS variables holding the heat layers
    retina: bool  # the heat layers can use the next zoom's tiles on high-DPI screens
    head: Markup
    body: Markup
    script: Markup


def write_pages(out_root: Path, meta: SiteMeta, *, template_dir: Path | None = None) -> list[Path]:
    """Write ``index.html``, ``about.html`` and ``assets/`` under ``out_root``.

    Call it after the tiles are written: the page only points at ``tiles/{layer}/``
    for the layers listed in ``meta.layers``.

    Args:
        out_root: the site's root folder (created if missing).
        meta: what this build publishes.
        template_dir: the operator's template overrides (``template_dir`` in the config);
            anything not there comes from the shipped ``site_template/``.

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
    }
    pages = {
        "index.html": env.get_template("index.html.j2").render(map=build_map(meta), **common),
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
    if meta.bounds is not None:
        south, west, north, east = meta.bounds
        location = [(south + north) / 2, (west + east) / 2]
    else:
        location = [20.0, 0.0]  # a world view when there is no heat yet
    fmap = folium.Map(
        location=location,
        zoom_start=max(meta.min_zoom, 2),
        tiles=None,
        zoom_control=False,  # heatmetro.js adds it under the title panel
        control_scale=True,
    )
    # Map() only passes min/max zoom to a tile layer it creates; with tiles=None they
    # must go to the L.map options directly or the map would zoom past the pyramid.
    fmap.options.update(min_zoom=meta.min_zoom, max_zoom=meta.max_zoom)
    # Instance attributes shadow folium's class-level CDN lists (JSCSSMixin reads
    # self.default_js): only our relative copy of Leaflet, nothing from the internet.
    fmap.default_js = [("leaflet", f"{ASSETS}/leaflet/leaflet.js")]
    if meta.tiles_format == "pmtiles" or (meta.has_weekly and meta.weekly_format == "pmtiles"):
        fmap.default_js.append(("pmtiles", f"{ASSETS}/pmtiles.js"))
    fmap.default_css = [("leaflet_css", f"{ASSETS}/leaflet/leaflet.css")]

    if meta.basemap_url:
        TileLayer(
            tiles=meta.basemap_url,
            attr=meta.basemap_attribution,
            name="basemap",
            control=False,  # always on, under whichever heat layer is chosen
            min_zoom=meta.min_zoom,
            max_zoom=meta.max_zoom,
        ).add_to(fmap)

    CustomPane(HEAT_PANE, z_index=HEAT_PANE_Z).add_to(fmap)
    options: dict[str, Any] = {}
    if meta.bounds is not None:
        south, west, north, east = meta.bounds
        # Leaflet then never asks for tiles outside the heat: no stream of 404s.
        options["bounds"] = [[south, west], [north, east]]
    layer_cls = PmtilesLayer if meta.tiles_format == "pmtiles" else TileLayer
    suffix = ".pmtiles" if meta.tiles_format == "pmtiles" else "/{z}/{x}/{y}.png"
    heat_layers = []
    for i, layer in enumerate(_ordered_layers(meta)):
        heat_layers.append(
            layer_cls(
                tiles=f"tiles/{layer}{suffix}",  # relative: works from any sub-path
                attr=HEAT_ATTRIBUTION,
                name=LAYER_LABELS[layer],
                overlay=False,  # base layers = radio buttons, one sport at a time
                show=i == 0,
                min_zoom=meta.min_zoom,
                max_zoom=meta.max_zoom,
                # Public tiles stop here; Leaflet scales them up for closer zooms.
                max_native_zoom=meta.public_max_zoom,
                pane=HEAT_PANE,
                class_name=f"heat-{layer}",
                **options,
            ).add_to(fmap)
        )
    if meta.has_weekly:
        # The last 7 days (snapshot --weekly) as one more choice; its own, lower zoom cap.
        weekly_pmtiles = meta.weekly_format == "pmtiles"
        heat_layers.append(
            (PmtilesLayer if weekly_pmtiles else TileLayer)(
                tiles=WEEKLY_TILES + (".pmtiles" if weekly_pmtiles else "/{z}/{x}/{y}.png"),
                attr=HEAT_ATTRIBUTION,
                name=WEEKLY_LABEL,
                overlay=False,
                show=False,
                min_zoom=meta.min_zoom,
                max_zoom=meta.max_zoom,
                max_native_zoom=meta.weekly_public_max_zoom,
                pane=HEAT_PANE,
                class_name="heat-weekly",
            ).add_to(fmap)
        )
    if meta.layers:
        LayerControl(position="topright", collapsed=False).add_to(fmap)
    view = meta.view or meta.bounds
    if view is not None:
        south, west, north, east = view
        # A single street would otherwise open at street level, far past the public tiles.
        fmap.fit_bounds([[south, west], [north, east]], max_zoom=meta.public_max_zoom)
        # Without a start zoom Leaflet holds every layer back until fitBounds sets the
        # view, so no tiles are fetched for a throwaway view first.
        fmap.options.pop("zoom", None)
    parts = _render(fmap)
    return MapParts(
        name=parts.name,
        # Names are final only after _render has numbered the elements.
        heat_layers=tuple(layer.get_name() for layer in heat_layers),
        # pmtiles.js's layer is a GridLayer: it has no zoomOffset to borrow tiles from.
        retina=meta.tiles_format == "png",
        head=parts.head,
        body=parts.body,
        script=parts.script,
    )


class PmtilesLayer(TileLayer):
    """A heat layer read from a PMTiles archive by pmtiles.js (``leafletRasterLayer``).

    The archive's URL is made absolute against the page, because pmtiles.js fetches it
    with ``fetch`` and HTTP range requests (so a PMTiles site needs an HTTP server).
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            var {{ this.get_name() }} = pmtiles.leafletRasterLayer(
                new pmtiles.PMTiles(new URL({{ this.tiles|tojson }}, document.baseURI).href),
                {{ this.options|tojavascript }}
            );
        {% endmacro %}
        """
    )


def scheme_styles() -> Markup:
    """The SVG filters and CSS of the colour schemes other than "hot" (see tile_colours)."""
    filters, rules = [], []
    for scheme in SCHEME_LABELS:
        rules.append(
            f'[data-scheme="{scheme}"] .hm-legend-bar {{ background: {scheme_gradient(scheme)}; }}'
        )
        if scheme == "hot":
            continue
        funcs = "".join(
            f'<feFunc{c} type="table" tableValues="{" ".join(f"{v:g}" for v in values)}"/>'
            for c, values in zip("RGB", scheme_tables(scheme), strict=True)
        )
        filters.append(
            f'<filter id="hm-scheme-{scheme}" color-interpolation-filters="sRGB">'
            # the hot ramp's green, which rises with intensity, into every channel...
            '<feColorMatrix type="matrix" values="0 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 0 0 1 0"/>'
            # ...then looked up in the scheme's palette
            f"<feComponentTransfer>{funcs}</feComponentTransfer></filter>"
        )
        rules.append(
            f'[data-scheme="{scheme}"] .leaflet-heat-pane {{ filter: url(#hm-scheme-{scheme}); }}'
        )
    svg = (
        '<svg class="hm-filters" width="0" height="0" aria-hidden="true">'
        + "".join(filters)
        + "</svg>"
    )
    return Markup(f"{svg}\n<style>\n" + "\n".join(rules) + "\n</style>")  # noqa: S704 -- our own constants


def _render(fmap: folium.Map) -> MapParts:
    """Render the map's figure into head/body/script with stable element names."""
    figure = fmap.get_root()
    assert isinstance(figure, Figure)
    # Our base template declares the charset itself.
    figure.header._children.pop("meta_http", None)
    _stabilise_ids(figure)
    # What Figure.render() does, minus its page skeleton: the children render into the
    # figure's header/html/script elements, which we then render separately.
    for child in figure._children.values():
        child.render()
    names: dict[str, str] = {}

    def stable(text: str) -> Markup:
        # Elements created during render() (e.g. the "add to map" calls) got random ids
        # after _stabilise_ids ran; any that reach the output are numbered here.
        out = _RANDOM_ID.sub(lambda m: names.setdefault(m.group(0), f"r{len(names)}"), text)
        return Markup(out.strip() + "\n")  # noqa: S704 -- folium's own escaped output

    return MapParts(
        name=fmap.get_name(),
        heat_layers=(),
        retina=False,
        head=stable(figure.header.render()),
        body=stable(figure.html.render()),
        script=stable(figure.script.render()),
    )


def _stabilise_ids(root: Element) -> None:
    """Replace branca's random element ids by counters in tree order."""
    counter = 0
    stack: list[Element] = [root]
    while stack:
        element = stack.pop(0)
        element._id = f"{counter}"
        counter += 1
        if isinstance(element, Figure):
            stack.extend([element.header, element.html, element.script])
        stack.extend(element._children.values())


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
