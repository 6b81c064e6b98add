"""Write the Metro count files for planners into ``out/metro/``.

``write_metro`` publishes, for the snapshot window:

* ``edges.csv`` / ``edges.geojson``: one row per street segment (H3 edge) and layer;
* ``edges_hourly.csv``: the same counts by local hour and weekday/weekend;
* ``hexagons.csv`` and ``od.csv``: H3 res-8 counts and origin -> destination counts;
* ``README.md`` (data dictionary), a deterministic zip of all of them, and ``index.html``.

The counting, suppression and rounding live in ``heatmetro.site_builder.metro_tables``; this module
only formats. Column names and their descriptions are defined once here and rendered
into the README, so the dictionary cannot drift from the files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h3
import jinja2
import numpy as np

from heatmetro.core.cells import cell_centres
from heatmetro.core.environment import source_date_epoch
from heatmetro.core.months import check_month
from heatmetro.site_builder.metro_streets import FILES as STREET_FILES
from heatmetro.site_builder.metro_streets import StreetWindow, write_streets
from heatmetro.site_builder.metro_tables import (
    BANDS,
    DirectionTable,
    Publication,
    bearing_deg,
    cell_table,
    direction_table,
)
from heatmetro.site_builder.templates import environment
from heatmetro.site_builder.window import WindowData
from heatmetro.state.records import LAYERS
from heatmetro.state.street_network import ATTRIBUTION as OSM_ATTRIBUTION

DIRECTIONS = ("forward", "reverse")
ZIP_MIN_DATE = datetime(1980, 1, 1, tzinfo=UTC)  # the earliest time a zip entry can hold

Value = int | float | str | None
Line = tuple[float, float, float, float]  # lng_a, lat_a, lng_b, lat_b (GeoJSON order)


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
    """

    min_athletes: int
    round_to: int
    month: str
    first_month: str
    version: str
    build_date: str


@dataclass(frozen=True)
class Column:
    """One published column and its data-dictionary entry."""

    name: str
    description: str


def _direction_columns(*, with_bands: bool) -> list[Column]:
    """Per-direction count columns shared by ``edges.csv`` and ``edges_hourly.csv``."""

    def pair(stem: str, text: str) -> list[Column]:
        return [
            Column(f"{d}_{stem}", f"{text}, {d} ({'a to b' if d == 'forward' else 'b to a'})")
            for d in DIRECTIONS
        ]

    cols = [
        *pair("trip_count", "Trips over the segment"),
        *pair("people_count", "Distinct people who made those trips"),
        Column("total_trip_count", "forward_trip_count + reverse_trip_count (empty counts as 0)"),
        *pair("commute_trip_count", "Trips flagged as commutes"),
        *pair("leisure_trip_count", "Trips not flagged as commutes"),
    ]
    if with_bands:
        for name, start, end in BANDS:
            cols += pair(
                f"{name}_trip_count", f"Trips crossing between {start:02d}:00 and {end:02d}:00"
            )
    cols += pair("average_speed_kmh", "Average speed in km/h (1 decimal)")
    return cols


EDGE_ID = Column(
    "edge_id", "Street segment: H3 cell a and H3 cell b (res 10, a < b as integers) joined by '-'"
)
LAYER = Column("layer", "Activity layer: all, ride, run (run, walk, hike), water or winter")
EDGE_COLUMNS = [
    EDGE_ID,
    LAYER,
    *_direction_columns(with_bands=True),
    Column("forward_bearing_deg", "Compass bearing from a's centre to b's, degrees 0-360"),
]
HOURLY_COLUMNS = [
    EDGE_ID,
    LAYER,
    Column("hour", "Local hour of the crossing, 0-23 (12 = 12:00-12:59)"),
    Column("day_type", "weekday (Monday-Friday) or weekend, local time"),
    *_direction_columns(with_bands=False),
]
HEX_COLUMNS = [
    Column("hex_id", "H3 cell at res 8 (about 0.7 km2)"),
    LAYER,
    Column("trip_count", "Trips that passed through the cell"),
    Column("people_count", "Distinct people who made those trips"),
    Column("average_speed_kmh", "Average speed in the cell in km/h (1 decimal)"),
]
OD_COLUMNS = [
    Column("origin_hex_id", "H3 cell (res 8) where the published part of the trip starts"),
    Column("destination_hex_id", "H3 cell (res 8) where the published part of the trip ends"),
    LAYER,
    Column("trip_count", "Trips from origin to destination"),
    Column("people_count", "Distinct people who made those trips"),
]

FILE_DESCRIPTIONS = {
    "edges.csv": "Per street segment and layer: trips and people per direction, over the window",
    "edges.geojson": "edges.csv as lines from cell a's centre to cell b's, for GIS",
    "edges_hourly.csv": "The same counts by local hour and weekday/weekend",
    "hexagons.csv": "Trips, people and speed per H3 res-8 cell and layer",
    "od.csv": "Trips and people from origin cell to destination cell (H3 res 8), per layer",
    "README.md": "Data dictionary: every column, the window and the privacy rules",
}


def _layers(by_layer: dict[str, np.ndarray]) -> list[str]:
    """Layers in publication order: the known ones first, then any others by name."""
    return [k for k in LAYERS if k in by_layer] + sorted(set(by_layer) - set(LAYERS))


def _counts(arr: np.ndarray) -> list[Value]:
    return [None if v < 0 else v for v in arr.tolist()]


def _decimals(arr: np.ndarray) -> list[Value]:
    # Text-rounded so the CSV and the GeoJSON print the very same number.
    return [None if v != v else float(f"{v:.1f}") for v in arr.tolist()]


def _ids(cells: np.ndarray) -> list[str]:
    return [h3.int_to_str(c) for c in cells.tolist()]


def _edge_ids(a: np.ndarray, b: np.ndarray) -> list[str]:
    return [f"{x}-{y}" for x, y in zip(_ids(a), _ids(b), strict=True)]


def _direction_values(t: DirectionTable) -> list[list[Value]]:
    """Columns of a ``DirectionTable`` in ``_direction_columns`` order."""
    cols = [_counts(t.trips[:, d]) for d in (0, 1)]
    cols += [_counts(t.people[:, d]) for d in (0, 1)]
    cols.append(_counts(t.total))
    cols += [_counts(t.commute[:, d]) for d in (0, 1)]
    cols += [_counts(t.leisure[:, d]) for d in (0, 1)]
    if t.bands is not None:
        cols += [_counts(t.bands[:, d, i]) for i in range(len(BANDS)) for d in (0, 1)]
    cols += [_decimals(t.speed_kmh[:, d]) for d in (0, 1)]
    return cols


def _edge_rows(window: WindowData, pub: Publication) -> Iterator[tuple[tuple[Value, ...], Line]]:
    """Rows of ``edges.csv``, each with its line from ``a``'s centre to ``b``'s."""
    for layer in _layers(window.edges):
        t = direction_table(window.edges[layer], ("a", "b"), pub, with_bands=True)
        if not len(t):
            continue
        a, b = t.keys["a"], t.keys["b"]
        lat_a, lng_a = cell_centres(a)
        lat_b, lng_b = cell_centres(b)
        cols = [_edge_ids(a, b), [layer] * len(t), *_direction_values(t)]
        cols.append(_decimals(bearing_deg(lat_a, lng_a, lat_b, lng_b)))
        coords = np.round(np.stack([lng_a, lat_a, lng_b, lat_b], axis=1), 6).tolist()
        yield from zip(zip(*cols, strict=True), map(tuple, coords), strict=True)


def _hourly_rows(window: WindowData, pub: Publication) -> Iterator[tuple[Value, ...]]:
    key = ("a", "b", "hour", "weekend")
    for layer in _layers(window.edges):
        t = direction_table(window.edges[layer], key, pub, with_bands=False)
        day = ["weekend" if w else "weekday" for w in t.keys["weekend"].tolist()]
        cols = [
            _edge_ids(t.keys["a"], t.keys["b"]),
            [layer] * len(t),
            t.keys["hour"].tolist(),
            day,
            *_direction_values(t),
        ]
        yield from zip(*cols, strict=True)


def _hexagon_rows(window: WindowData, pub: Publication) -> Iterator[tuple[Value, ...]]:
    for layer in _layers(window.hexagons):
        t = cell_table(window.hexagons[layer], ("cell",), pub)
        cols = [
            _ids(t.keys["cell"]),
            [layer] * len(t),
            _counts(t.trips),
            _counts(t.people),
            _decimals(t.speed_kmh),
        ]
        yield from zip(*cols, strict=True)


def _od_rows(window: WindowData, pub: Publication) -> Iterator[tuple[Value, ...]]:
    for layer in _layers(window.od):
        t = cell_table(window.od[layer], ("o", "d"), pub)
        cols: list[Sequence[Value]] = [_ids(t.keys["o"]), _ids(t.keys["d"]), [layer] * len(t)]
        cols += [_counts(t.trips), _counts(t.people)]
        yield from zip(*cols, strict=True)


def _write_csv(path: Path, columns: Sequence[Column], rows: Iterable[Sequence[Value]]) -> int:
    """Write a CSV (``\\n`` line ends, ``None`` as an empty cell); return the data rows."""
    n = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow([c.name for c in columns])
        for row in rows:
            out.writerow(row)
            n += 1
    return n


def _write_edges(
    csv_path: Path, geojson_path: Path, rows: Iterable[tuple[Sequence[Value], Line]]
) -> int:
    """Write ``edges.csv`` and ``edges.geojson`` in one pass; return the rows of each.

    The GeoJSON is a FeatureCollection of LineStrings, one feature per text line, keys
    sorted, with the CSV's values as properties (``None`` becomes ``null``).
    """
    names = [c.name for c in EDGE_COLUMNS]
    n = 0
    with (
        csv_path.open("w", encoding="utf-8", newline="") as fc,
        geojson_path.open("w", encoding="utf-8", newline="\n") as fg,
    ):
        table = csv.writer(fc, lineterminator="\n")
        table.writerow(names)
        fg.write('{"features":[')
        for row, (x1, y1, x2, y2) in rows:
            table.writerow(row)
            feature = {
                "geometry": {"coordinates": [[x1, y1], [x2, y2]], "type": "LineString"},
                "properties": dict(zip(names, row, strict=True)),
                "type": "Feature",
            }
            fg.write(("\n" if n == 0 else ",\n") + json.dumps(feature, sort_keys=True))
            n += 1
        fg.write('\n],"type":"FeatureCollection"}\n')
    return n


def _zip_date_time() -> tuple[int, int, int, int, int, int]:
    """Entry timestamp: ``SOURCE_DATE_EPOCH`` if set (reproducible builds), else 1980-01-01."""
    when = max(source_date_epoch() or ZIP_MIN_DATE, ZIP_MIN_DATE)
    return (when.year, when.month, when.day, when.hour, when.minute, when.second)


def _write_zip(path: Path, folder: str, members: Sequence[Path]) -> None:
    """Deterministic zip: sorted entries, fixed time and mode, one top folder."""
    date_time = _zip_date_time()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for member in sorted(members, key=lambda p: p.name):
            info = zipfile.ZipInfo(f"{folder}/{member.name}", date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever OS builds it, so the bytes match
            info.external_attr = 0o644 << 16
            with member.open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _environment() -> jinja2.Environment:
    return environment(None, html_only_escape=True)


def write_metro(
    window: WindowData,
    settings: MetroSettings,
    metro_dir: Path,
    streets: StreetWindow | None = None,
) -> dict[str, int]:
    """Write every Metro file into ``metro_dir`` (which exists).

    Args:
        window: the snapshot window, not yet thresholded.
        settings: privacy numbers, month and build identity.
        metro_dir: output folder, usually ``out/metro``.
        streets: with a base map, the street records (``metro_streets``): adds the
            ``streets*`` files.

    Returns:
        Data rows per file name (``edges.csv``, ``edges.geojson``, ``edges_hourly.csv``,
        ``hexagons.csv``, ``od.csv``).

    Raises:
        PublishError: ``min_athletes`` or ``round_to`` below 1, or malformed records.
        ConfigError: a month is not ``YYYY-MM`` or ``SOURCE_DATE_EPOCH`` is unusable.
    """
    for name in ("month", "first_month"):
        value = getattr(settings, name)
        check_month(value, what=f"metro: settings.{name} =")
    pub = Publication(settings.min_athletes, settings.round_to)

    n_edges = _write_edges(
        metro_dir / "edges.csv", metro_dir / "edges.geojson", _edge_rows(window, pub)
    )
    rows = {
        "edges.csv": n_edges,
        "edges.geojson": n_edges,
        "edges_hourly.csv": _write_csv(
            metro_dir / "edges_hourly.csv", HOURLY_COLUMNS, _hourly_rows(window, pub)
        ),
        "hexagons.csv": _write_csv(
            metro_dir / "hexagons.csv", HEX_COLUMNS, _hexagon_rows(window, pub)
        ),
        "od.csv": _write_csv(metro_dir / "od.csv", OD_COLUMNS, _od_rows(window, pub)),
    }
    descriptions = dict(FILE_DESCRIPTIONS)
    if streets is not None:  # a base map: counts per OSM street edge too
        rows |= write_streets(streets, pub, metro_dir, _direction_columns, _direction_values)
        descriptions = {**STREET_FILES, **descriptions}

    env = _environment()
    context: dict[str, Any] = {
        "settings": settings,
        "floor": pub.floor,
        "bands": BANDS,
        "tables": [
            ("edges.csv and edges.geojson", EDGE_COLUMNS),
            ("edges_hourly.csv", HOURLY_COLUMNS),
            ("hexagons.csv", HEX_COLUMNS),
            ("od.csv", OD_COLUMNS),
            *(streets.tables if streets is not None else []),
        ],
        "descriptions": descriptions,
        "osm_attribution": OSM_ATTRIBUTION if streets is not None else "",
    }
    readme = env.get_template("metro_README.md.j2").render(context)
    (metro_dir / "README.md").write_bytes(readme.encode("utf-8"))

    stem = f"heatmetro-metro-{settings.month}"
    members = [metro_dir / name for name in descriptions]
    _write_zip(metro_dir / f"{stem}.zip", stem, members)

    downloads = [
        {
            "name": p.name,
            "description": descriptions.get(p.name, "All of the files above, zipped"),
            "size": p.stat().st_size,
            "rows": rows.get(p.name),
            "sha256": _sha256(p),
        }
        for p in [*members, metro_dir / f"{stem}.zip"]
    ]
    page = env.get_template("metro_index.html.j2").render(context, downloads=downloads)
    (metro_dir / "index.html").write_bytes(page.encode("utf-8"))
    return rows
