"""A self-contained heat map (tiles + one page) for the weekly map and personal heatmaps.

The same drawing (``tiles.write_heat_tiles``) and the same map (``pages.build_map``) as
the Global Heatmap; only the words on the page and the folder layout differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from heatmetro.core.config import Config
from heatmetro.site_builder.heat_view import densest_view
from heatmetro.site_builder.pages import (
    HEAT_ATTRIBUTION,
    LAYER_LABELS,
    SCHEMES,
    SiteMeta,
    build_map,
    make_environment,
    pmtiles_probe,
    scheme_styles,
    write_assets,
)
from heatmetro.site_builder.tiles import LayerHeat as TileLayer
from heatmetro.site_builder.tiles import default_workers, write_layers_tiles
from heatmetro.site_builder.window import LayerHeat


@dataclass(frozen=True)
class PageText:
    """What the page says (``site_template/map_page.html.j2``)."""

    title: str
    heading: str
    window: str
    empty: str
    legend: str
    links: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    private: bool = False  # tell search engines to stay away
    zones: list[tuple[float, float, float]] = field(default_factory=list)  # drawn as circles


def write_layer_tiles(
    heat: dict[str, LayerHeat],
    out_root: Path,
    config: Config,
    *,
    max_zoom: int,
    tiles_format: str = "png",
) -> tuple[int, tuple[float, float, float, float] | None]:
    """Every layer's tiles under ``out_root/tiles/`` up to ``max_zoom`` (no members tree).

    ``tiles_format`` is ``png`` (a tree) or ``pmtiles`` (``tiles/{layer}.pmtiles``).

    Returns (tiles written, bounds of the ``all`` layer or of the first layer with heat).
    """
    # Every layer in one call: one pool of workers, forked once, for all their tiles.
    per_layer = write_layers_tiles(
        [TileLayer(name, heat[name].cells, heat[name].heat) for name in LAYER_LABELS
         if name in heat],
        out_root=out_root,
        min_zoom=config.min_zoom,
        public_max_zoom=max_zoom,
        max_zoom=max_zoom,
        heat_resolution=config.heat_resolution,
        tiles_format=tiles_format,
        workers=config.tile_workers or default_workers(),
    )  # fmt: skip
    total, bounds = 0, None
    for stats in per_layer.values():
        n = sum(stats.tiles_per_zoom.values())
        total += n
        if n and bounds is None:
            bounds = stats.bounds
    return total, bounds


def page_meta(
    config: Config,
    *,
    first: str,
    last: str,
    max_zoom: int,
    min_athletes: int,
    layers: tuple[str, ...],
    bounds: tuple[float, float, float, float] | None,
    heat: dict[str, LayerHeat],
    counts: dict[str, int],
    version: str,
    build_date: str,
    basemap: bool = True,
    tiles_format: str = "png",
) -> SiteMeta:
    """The ``SiteMeta`` of a map whose every tile is under ``tiles/`` up to ``max_zoom``."""
    return SiteMeta(
        month=last,
        first_month=first,
        min_athletes=min_athletes,
        max_per_athlete=config.max_per_athlete,
        round_to=config.round_to,
        min_zoom=config.min_zoom,
        public_max_zoom=max_zoom,
        max_zoom=max_zoom,
        hide_start_end_m=config.default_hide_start_end_m,
        hide_jitter_m=config.hide_jitter_m,
        bounds=bounds,
        layers=tuple(name for name in LAYER_LABELS if name in layers),
        counts=counts,
        version=version,
        build_date=build_date,
        basemap_url=config.basemap_url if basemap else "",
        basemap_attribution=config.basemap_attribution if basemap else "",
        has_metro=False,
        # Open on the densest heat, as the Global Heatmap does.
        view=densest_view(heat["all"].cells, heat["all"].heat) if "all" in heat else None,
        tiles_format=tiles_format,
    )


def write_map_page(
    out_root: Path, meta: SiteMeta, page: PageText, *, template_dir: Path | None
) -> Path:
    """``out_root/index.html`` and ``out_root/assets/``; returns the page's path."""
    env = make_environment(template_dir)
    write_assets(out_root, template_dir)
    html = env.get_template("map_page.html.j2").render(
        map=build_map(meta),
        meta=meta,
        page=page,
        schemes=SCHEMES,
        layer_labels=LAYER_LABELS,
        heat_attribution=HEAT_ATTRIBUTION,
        scheme_styles=scheme_styles(),
        pmtiles_probe=pmtiles_probe(meta),
    )
    path = out_root / "index.html"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(html)
    return path
