"""The heatmap page's folium map, rendered into deterministic parts (see ``pages``).

Kept apart from ``pages`` so that folium is imported only when a map is drawn.
"""

from __future__ import annotations

import re
from typing import Any

import folium
from branca.element import Element, Figure
from folium.map import CustomPane, FitBounds, LayerControl
from folium.raster_layers import TileLayer
from folium.template import Template
from markupsafe import Markup

from heatmetro.site_builder.pages import (
    ASSETS,
    HEAT_ATTRIBUTION,
    HEAT_PANE,
    HEAT_PANE_Z,
    LAYER_LABELS,
    WEEKLY_LABEL,
    WEEKLY_TILES,
    MapParts,
    SiteMeta,
    _ordered_layers,
    map_centre,
)

# folium/branca element names end in "_" + 32 hex digits from os.urandom. Only that shape
# is touched: a basemap URL may carry a 32-hex API key, which must survive.
_RANDOM_ID = re.compile(r"(?<=[a-z]_)[0-9a-f]{32}(?![0-9a-f])")


def render_map(meta: SiteMeta) -> MapParts:
    """Build the folium map for ``meta`` and render it into deterministic parts."""
    if meta.bounds is not None:
        location = list(map_centre(meta.bounds))
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
    weekly_layer = None
    control = None
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
    if meta.has_weekly and meta.weekly_bounds is not None:
        # The last 7 days (snapshot --weekly) as one more choice; its own, lower zoom cap.
        # (A week without heat is no choice: its page says why; tiles would all be 404s.)
        weekly_pmtiles = meta.weekly_format == "pmtiles"
        weekly_options: dict[str, Any] = {}
        if meta.weekly_bounds is not None:
            south, west, north, east = meta.weekly_bounds
            weekly_options["bounds"] = [[south, west], [north, east]]
        # Named by its days: a weekly job that stopped must not pass for "the last 7 days".
        label = f"7 days to {meta.weekly_days[1]}" if meta.weekly_days else WEEKLY_LABEL
        weekly_layer = (PmtilesLayer if weekly_pmtiles else TileLayer)(
            tiles=WEEKLY_TILES + (".pmtiles" if weekly_pmtiles else "/{z}/{x}/{y}.png"),
            attr=HEAT_ATTRIBUTION,
            name=label,
            overlay=False,
            show=False,
            min_zoom=meta.min_zoom,
            max_zoom=meta.max_zoom,
            max_native_zoom=meta.weekly_public_max_zoom,
            pane=HEAT_PANE,
            class_name="heat-weekly",
            **weekly_options,
        ).add_to(fmap)
        heat_layers.append(weekly_layer)
    if meta.layers:
        control = LayerControl(position="topright", collapsed=False).add_to(fmap)
    view = meta.view or meta.bounds
    if view is not None:
        south, west, north, east = view
        # A single street would otherwise open at street level, far past the public tiles.
        OpeningView([[south, west], [north, east]], max_zoom=meta.public_max_zoom).add_to(fmap)
        # Without a start zoom Leaflet holds every layer back until fitBounds sets the
        # view, so no tiles are fetched for a throwaway view first.
        fmap.options.pop("zoom", None)
    parts = _render(fmap)
    return MapParts(
        name=parts.name,
        # Names are final only after _render has numbered the elements.
        heat_layers=tuple(layer.get_name() for layer in heat_layers),
        weekly_layer=weekly_layer.get_name() if weekly_layer is not None else None,
        layer_control=control.get_name() if control is not None else None,
        # Both tile formats: heatmetro.js asks pmtiles.js's GridLayer for the next zoom's
        # tiles itself (it has no zoomOffset).
        retina=True,
        head=parts.head,
        body=parts.body,
        script=parts.script,
    )


class OpeningView(FitBounds):
    """``fit_bounds``, unless the page's URL asks for a view (``#zoom/lat/lng``, read by
    heatmetro.js's ``openView``): a shared link then fetches its own view's tiles only."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            // (A page from an own template_dir may load heatmetro.js after this.)
            (window.heatmetro ? heatmetro.openView : function (map, bounds, options) {
                map.fitBounds(bounds, options);
            })(
                {{ this._parent.get_name() }},
                {{ this.bounds|tojson }},
                {{ this.options|tojson }}
            );
        {% endmacro %}
        """
    )


class PmtilesLayer(TileLayer):
    """A heat layer read from a PMTiles archive by pmtiles.js (``leafletRasterLayer``).

    The archive's URL is made absolute against the page, because pmtiles.js fetches it
    with ``fetch`` and HTTP range requests (so a PMTiles site needs an HTTP server).
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            // From a file there are no range requests: every tile would throw at the
            // page, so an empty layer stands in (heatmetro.js shows the notice).
            var {{ this.get_name() }} = location.protocol === "file:"
                ? L.layerGroup()
                : pmtiles.leafletRasterLayer(
                    new pmtiles.PMTiles(new URL({{ this.tiles|tojson }}, document.baseURI).href),
                    {{ this.options|tojavascript }}
                );
        {% endmacro %}
        """
    )


_ZOOM_LOCK = re.compile(r",\s*maximum-scale=1\.0,\s*user-scalable=no")


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
        # folium's viewport forbids pinch zoom (WCAG 1.4.4): a visitor may enlarge the page.
        head=stable(_ZOOM_LOCK.sub("", figure.header.render())),
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
