"""Write the Metro count files for planners into ``out/metro/``: the orchestration.

``write_metro`` publishes, for the snapshot window, the files of
``metro_columns.FILE_DESCRIPTIONS`` (edges, hourly long and wide, monthly, hexagons, O/D,
the GeoPackage and the data dictionary), a deterministic zip of all of them and
``index.html`` with a chart of segment crossings (published trips summed over segments) per month.

Each job lives in its own module: counting, suppression and rounding in
``metro_tables``; rows in ``metro_rows``; columns and their descriptions in
``metro_columns``; CSV/GeoJSON/zip in ``metro_files``; the GeoPackage in ``metro_gpkg``;
the chart in ``metro_chart``; the optional differentially-private noise in ``metro_dp``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from markupsafe import Markup

from heatmetro.core.environment import source_date_epoch
from heatmetro.core.months import check_month
from heatmetro.site_builder import metro_columns as cols
from heatmetro.site_builder.forked import ForkedJob
from heatmetro.site_builder.metro_cache import MetroCache
from heatmetro.site_builder.metro_chart import chart_svg, monthly_totals, window
from heatmetro.site_builder.metro_dp import DpNoise
from heatmetro.site_builder.metro_files import sha256, write_csv, write_geojson
from heatmetro.site_builder.metro_gpkg import (
    Named,
    gdal_version,
    rows_from_csv,
    rows_from_geojson,
    write_gpkg,
)
from heatmetro.site_builder.metro_gpkg_reuse import (
    GPKG_CACHE,
    GpkgPlan,
    gpkg_key,
    plan_reuse,
    save_record,
)
from heatmetro.site_builder.metro_reuse import OutputCache, inputs_digest, link_or_copy
from heatmetro.site_builder.metro_rows import (
    Rows,
    cell_plan,
    direction_values,
    edge_plan,
    edge_rows,
    hexagon_rows,
    hourly_rows,
    hourly_wide_rows,
    od_rows,
)
from heatmetro.site_builder.metro_streets import FILES as STREET_FILES
from heatmetro.site_builder.metro_streets import StreetWindow, write_streets
from heatmetro.site_builder.metro_tables import BANDS, Publication
from heatmetro.site_builder.metro_text_cache import TEXT_CACHE, TextCache
from heatmetro.site_builder.metro_zip import Packed, ZipPacker, pack
from heatmetro.site_builder.templates import environment
from heatmetro.site_builder.window import WindowData
from heatmetro.state.street_network import ATTRIBUTION as OSM_ATTRIBUTION

FILE_TIME_FLOOR = datetime(1980, 1, 1, tzinfo=UTC)  # the earliest time a zip entry can hold


@dataclass(frozen=True)
class MetroSettings:
    """What one Metro build needs besides the data.

    Attributes:
        min_athletes: a count is published only with at least this many distinct people.
        round_to: published counts are rounded half up to a multiple of this.
        month: the snapshot month, ``YYYY-MM``.
        first_month: the first month of the 12-month window, ``YYYY-MM``.
        version: heatmetro version that built the files.
        build_date: ISO date of the build (given, so builds are reproducible).
        epsilon, delta: differential privacy of the counts (``None``: exact counts).
        salt: seeds the noise, so a rebuild draws the same noise (secret).
        base_map: the OSM extract the edges are matched to, if any (for attribution).
        month_in_progress: ``month`` was not over at the build (``--partial``).
    """

    min_athletes: int
    round_to: int
    month: str
    first_month: str
    version: str
    build_date: str
    epsilon: float | None = None
    delta: float | None = None
    salt: str = ""
    base_map: str | None = None
    month_in_progress: bool = False


def file_time() -> datetime:
    """Timestamp inside the zip and GeoPackage: ``SOURCE_DATE_EPOCH`` if set, else 1980-01-01.

    Never the wall clock, so two builds of the same data are byte-identical.
    """
    return max(source_date_epoch() or FILE_TIME_FLOOR, FILE_TIME_FLOOR)


def human_size(n: int) -> str:
    """``2,342,189`` bytes as ``2.2 MB`` (binary units, as a file manager shows them)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:,} bytes"


def write_metro(
    window_data: WindowData,
    settings: MetroSettings,
    metro_dir: Path,
    streets: StreetWindow | None = None,
    cache: MetroCache | None = None,
    output: OutputCache | None = None,
    *,
    parallel: bool = False,
) -> dict[str, int]:
    """Write every Metro file into ``metro_dir`` (which exists).

    Args:
        window_data: the snapshot window, not yet thresholded.
        settings: privacy numbers, month and build identity.
        metro_dir: output folder, usually ``out/metro``.
        streets: with a base map, the street records (``metro_streets``): adds the
            ``streets*`` files.
        cache: the edge tables' sums of the last build (``metro_cache``): only edges
            of changed athletes are recounted; this build's sums are saved back to it.
        output: the published build's files and what they were written from
            (``metro_reuse``): with the same inputs, its data files are kept.
        parallel: write the GeoPackage in a forked process while this one writes the
            text files (``forked``): a rebuild's last second, on the core the heat's
            process has left idle by then.

    Returns:
        Data rows per file name (the GeoPackage as ``metro.gpkg:<layer>``).

    Raises:
        PublishError: ``min_athletes`` or ``round_to`` below 1, or malformed records.
        ConfigError: a month is not ``YYYY-MM``, ``SOURCE_DATE_EPOCH`` is unusable or
            the privacy budget is out of range.
    """
    for name in ("month", "first_month"):
        check_month(getattr(settings, name), what=f"metro: settings.{name} =")
    packer = ZipPacker()  # deflates each file for the zip as soon as it is written
    try:
        return _write_metro(
            window_data, settings, metro_dir, streets, cache, packer, output, parallel
        )
    finally:
        packer.close()


def _write_metro(
    window_data: WindowData,
    settings: MetroSettings,
    metro_dir: Path,
    streets: StreetWindow | None,
    cache: MetroCache | None,
    packer: ZipPacker,
    output: OutputCache | None,
    parallel: bool,
) -> dict[str, int]:
    when = file_time()
    attribution = OSM_ATTRIBUTION if settings.base_map or streets is not None else None
    noise = DpNoise.create(settings.epsilon, settings.delta, settings.salt, settings.month)
    pub = Publication(settings.min_athletes, settings.round_to, noise)
    stem = f"heatmetro-metro-{settings.month}"
    zip_name = f"{stem}.zip"

    # The same inputs as the published build's: its data files, as they are (metro_reuse).
    digest = None
    if output is not None and streets is None:
        digest = inputs_digest(window_data, settings, when)
    kept = output.kept(digest, zip_name) if output is not None and digest is not None else None
    if kept is not None:
        for name, source in kept.paths.items():
            link_or_copy(source, metro_dir / name)
            packer.adopt(metro_dir / name, kept.packed[name])
        rows, totals, gpkg_tables = dict(kept.rows), kept.totals, kept.gpkg_tables
        descriptions = dict(cols.FILE_DESCRIPTIONS)
        if cache is not None:
            cache.files_kept = True
    else:
        rows, totals, gpkg_tables, descriptions = _write_data(
            window_data, pub, metro_dir, streets, cache, packer, when, attribution, parallel
        )
    context: dict[str, Any] = {
        "settings": settings,
        "floor": pub.floor,
        "bands": BANDS,
        "tables": [*cols.DICTIONARY, *(streets.tables if streets is not None else [])],
        "gpkg_layers": cols.GPKG_LAYERS | ({"streets": cols.GPKG_STREETS} if streets else {}),
        "gpkg_tables": gpkg_tables,
        "descriptions": descriptions,
        "dp": noise,
        "osm_attribution": attribution,
    }
    env = environment(None, html_only_escape=True)
    readme = env.get_template("metro_README.md.j2").render(context)
    (metro_dir / "README.md").write_bytes(readme.encode("utf-8"))

    members = [metro_dir / name for name in descriptions]
    packer.write(metro_dir / zip_name, stem, members, when)

    downloads = [
        {
            "name": p.name,
            "description": descriptions.get(p.name, "All of the files above, zipped"),
            "size": p.stat().st_size,
            "shown_size": human_size(p.stat().st_size),
            "rows": rows.get(p.name),
            "sha256": packer.packed(p).sha256 if p in members else sha256(p),
        }
        for p in [*members, metro_dir / zip_name]
    ]
    chart = chart_svg(totals, window(settings.first_month, settings.month))
    page = env.get_template("metro_index.html.j2").render(
        context,
        downloads=downloads,
        chart=Markup(chart),  # noqa: S704 - built here, escaped
    )
    (metro_dir / "index.html").write_bytes(page.encode("utf-8"))
    if output is not None:  # what the next build may keep
        data = {n: packer.packed(metro_dir / n) for n in descriptions if n != "README.md"}
        output.save(digest, metro_dir, data, zip_name, rows, totals, gpkg_tables)
    return rows


def _write_data(
    window_data: WindowData,
    pub: Publication,
    metro_dir: Path,
    streets: StreetWindow | None,
    cache: MetroCache | None,
    packer: ZipPacker,
    when: datetime,
    attribution: str | None,
    parallel: bool,
) -> tuple[dict[str, int], dict[str, dict[str, int]], list[str], dict[str, str]]:
    """Count and write every data file (all but the README, the zip and ``index.html``);
    return the rows per file, the chart's totals, the GeoPackage's attribute tables and
    the description of each file."""
    texts = None
    if cache is not None:
        cache.open(pub.max_trips)
        if pub.noise is None:  # the edge files' rows kept between builds (metro_text_cache)
            made = f"{pub.min_athletes}:{pub.round_to}:{orjson.__version__}:{sys.version_info[:2]}"
            texts = TextCache(cache.path.with_name(TEXT_CACHE), cache, made, reuse=cache.reuse)
    plan = edge_plan(window_data, pub, cache)  # what the four edge tables hide, at once
    edges = edge_rows(window_data, pub, cache=cache, plan=plan)
    edges_monthly = edge_rows(window_data, pub, monthly=True, cache=cache, plan=plan)
    hex_plan = cell_plan(window_data, pub, window_data.hexagons, ("cell",))
    od_plan = cell_plan(window_data, pub, window_data.od, ("o", "d"))
    hexagons = hexagon_rows(window_data, pub, plan=hex_plan)
    od = od_rows(window_data, pub, plan=od_plan)
    # The tables without geometry, by CSV file: also the GeoPackage's attribute tables.
    tables_only: dict[str, tuple[Sequence[cols.Column], Rows]] = {
        "edges_hourly": (cols.HOURLY_COLUMNS, hourly_rows(window_data, pub, cache, plan)),
        "edges_hourly_wide": (
            cols.HOURLY_WIDE_COLUMNS,
            hourly_wide_rows(window_data, pub, cache, plan),
        ),
        "edges_monthly": (cols.EDGE_MONTHLY_COLUMNS, edges_monthly),
        "hexagons_monthly": (
            cols.HEX_MONTHLY_COLUMNS,
            hexagon_rows(window_data, pub, monthly=True, plan=hex_plan),
        ),
        "od_monthly": (
            cols.OD_MONTHLY_COLUMNS,
            od_rows(window_data, pub, monthly=True, plan=od_plan),
        ),
    }
    descriptions = dict(cols.FILE_DESCRIPTIONS)
    street_rows: dict[str, int] = {}
    if streets is not None:  # a base map: counts per OSM street edge too
        street_rows = write_streets(
            streets, pub, metro_dir, cols.direction_columns, direction_values
        )
        descriptions = {**STREET_FILES, **descriptions}
        descriptions["metro.gpkg"] = (
            "GeoPackage: layers edges (lines), hexagons (polygons), od (lines) and streets "
            "(the OSM street edges' lines); every other CSV file as a table"
        )
    tables = {"edges": edges, "hexagons": hexagons, "od": od}
    layers = _gpkg_layers(metro_dir, streets, street_rows, tables, tables_only)
    # Every row is known now: the GeoPackage (GDAL, holding the GIL) is written in a
    # process of its own while this one writes the text files. Forked before the zip's
    # thread starts, so the child inherits no lock that thread could be holding.
    gpkg = metro_dir / "metro.gpkg"
    reuse = None
    if cache is not None:  # before the fork: the child sees the text cache as read
        keys = {name: (len(r), r.edge, r.place) for name, (_, _, r) in layers.items()}
        record = cache.path.with_name(GPKG_CACHE)
        reuse = plan_reuse(record, cache.token, texts, keys)
    gpkg_job = ForkedJob(
        partial(_write_gpkg_packed, gpkg, layers, when, attribution, reuse),
        parallel=parallel,
        what="the GeoPackage writer",
    )
    try:
        # The edge files are deflated from the pieces they are written from, not read back.
        added = packer.add
        rows = {
            "edges.csv": write_csv(metro_dir / "edges.csv", cols.EDGE_COLUMNS, edges, texts, added),
            "edges.geojson": write_geojson(
                metro_dir / "edges.geojson", cols.EDGE_COLUMNS, edges, attribution, texts, added
            ),
            "hexagons.csv": write_csv(metro_dir / "hexagons.csv", cols.HEX_COLUMNS, hexagons),
            "od.csv": write_csv(metro_dir / "od.csv", cols.OD_COLUMNS, od),
        }
        for table, (columns, table_rows) in tables_only.items():
            path = metro_dir / f"{table}.csv"
            rows[path.name] = write_csv(path, columns, table_rows, texts, added)
        for name in rows:  # the others (a file already added is not added again)
            packer.add(metro_dir / name)
        rows |= street_rows
        if streets is not None:
            for name in STREET_FILES:
                packer.add(metro_dir / name)
        if cache is not None:  # nothing published reads them
            cache.save()
            plan.save_cache()  # after: these name the Metro cache file as saved
            if texts is not None:
                texts.save()
        (written, taken), packed, key = gpkg_job.result()
    except BaseException:
        gpkg_job.cancel()
        raise
    if cache is not None:  # after cache.save: its token as saved
        save_record(cache.path.with_name(GPKG_CACHE), key, cache.token, packed.sha256, gpkg)
        cache.gpkg_taken = (taken, sum(written.values()))
    packer.adopt(gpkg, packed)
    for layer, n in written.items():
        rows[f"metro.gpkg:{layer}"] = n

    names = [c.name for c in cols.EDGE_MONTHLY_COLUMNS]
    totals = monthly_totals(
        edges_monthly, names.index("layer"), names.index("month"), names.index("total_trip_count")
    )
    gpkg_tables = [t for t, (kind, _, _) in layers.items() if kind is None]
    return rows, totals, gpkg_tables, descriptions


def _gpkg_layers(
    metro_dir: Path,
    streets: StreetWindow | None,
    street_rows: dict[str, int],
    tables: dict[str, Rows],
    tables_only: dict[str, tuple[Sequence[cols.Column], Rows]],
) -> dict[str, tuple[str | None, Sequence[Named], Rows]]:
    """The GeoPackage's layers: ``edges``, ``hexagons`` and ``od`` with their geometry,
    the OSM streets' lines with a base map, and every other CSV file as an attribute
    table, for a GIS to join the hourly and monthly rows to a layer on its id
    (``edge_id``, ``hex_id``, ``edge_uid`` ...). The rows in hand are taken; only the
    street files (written by ``metro_streets``, named in ``street_rows``) are read back."""
    layers: dict[str, tuple[str | None, Sequence[Named], Rows]] = {
        name: (kind, c, tables[name]) for name, (kind, c, _) in cols.GPKG_LAYERS.items()
    }
    if streets is not None:  # the OSM street edges as a layer too, with their polylines
        street_columns = streets.tables[0][1]
        lines = rows_from_geojson(metro_dir / "streets.geojson", street_columns)
        layers["streets"] = ("LineString", street_columns, lines)
    for table, (columns, table_rows) in tables_only.items():
        layers[table] = (None, columns, table_rows)
    for name in street_rows:
        table = name.removesuffix(".csv")
        if name.endswith(".csv") and table not in layers:
            street_columns_of, street_rows_of = rows_from_csv(metro_dir / name)
            layers[table] = (None, street_columns_of, street_rows_of)
    return layers


def _write_gpkg_packed(
    path: Path,
    layers: dict[str, tuple[str | None, Sequence[Named], Rows]],
    when: datetime,
    attribution: str | None,
    reuse: GpkgPlan | None,
) -> tuple[tuple[dict[str, int], int], Packed, str]:
    """``write_gpkg`` (rows per layer, rows taken from the last build's), the file deflated for
    the zip (with its CRC and SHA-256) and the key its bytes were made with
    (``metro_gpkg_reuse``)."""
    written = write_gpkg(path, layers, when, attribution, reuse)
    return written, pack(path), gpkg_key(gdal_version())
