"""Metro count files: direction, hours, privacy threshold and rounding, downloads page.

The window is built by hand from real H3 cells on streets of Northampton, MA, and the
assertions read the published files back as a planner would (CSV rows, GeoJSON through
GDAL's ``ogrinfo``, the downloads page parsed as HTML, the zip opened).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import shutil
import struct
import subprocess
import tempfile
import zipfile
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import h3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.core.errors import ConfigError, PublishError
from heatmetro.site_builder import metro_gpkg, metro_rows
from heatmetro.site_builder.metro import MetroSettings, human_size, write_metro
from heatmetro.site_builder.metro_columns import (
    EDGE_COLUMNS,
    HEX_COLUMNS,
    HOURLY_COLUMNS,
    OD_COLUMNS,
)
from heatmetro.site_builder.metro_dp import DpNoise
from heatmetro.site_builder.metro_tables import BAND_OF_HOUR, Publication, bearing_deg
from heatmetro.site_builder.window import WindowData
from heatmetro.state.records import EDGE_DTYPE, HEX_DTYPE, OD_DTYPE, with_athlete

NORTHAMPTON = (42.3251, -72.6412)  # Main Street, Northampton MA (lat, lng)
CSV_FILES = (
    "edges.csv",
    "edges_hourly.csv",
    "edges_hourly_wide.csv",
    "edges_monthly.csv",
    "hexagons.csv",
    "hexagons_monthly.csv",
    "od.csv",
    "od_monthly.csv",
)
DATA_FILES = (*CSV_FILES, "edges.geojson", "metro.gpkg")
GPKG_LAYERS = ("edges", "hexagons", "od")
# Every other CSV file is an attribute table of the GeoPackage.
GPKG_TABLES = tuple(n.removesuffix(".csv") for n in CSV_FILES if n[:-4] not in GPKG_LAYERS)
ALL_FILES = (*DATA_FILES, "README.md", "heatmetro-metro-2021-02.zip")
COUNT_SUFFIX = "_count"


def _cell(lat: float, lng: float, res: int = 10) -> int:
    return h3.str_to_int(h3.latlng_to_cell(lat, lng, res))


def _centre(cell: int) -> tuple[float, float]:
    return h3.cell_to_latlng(h3.int_to_str(cell))


def _edge_heading(target: float) -> tuple[int, int]:
    """An edge ``a < b`` on a real street whose a->b bearing is closest to ``target``.

    Adjacent res-10 hexagons lie at 60-degree steps, so the best is within 30 degrees.
    """
    path = h3.grid_path_cells(
        h3.latlng_to_cell(*NORTHAMPTON, 10), h3.latlng_to_cell(42.3301, -72.6362, 10)
    )
    best: tuple[float, int, int] | None = None
    for cell in path:
        for other in h3.grid_ring(cell, 1):
            a, b = sorted((h3.str_to_int(cell), h3.str_to_int(other)))
            (la, ga), (lb, gb) = _centre(a), _centre(b)
            bearing = float(bearing_deg(*(np.array([v]) for v in (la, ga, lb, gb)))[0])
            off = abs((bearing - target + 180) % 360 - 180)
            if best is None or (off, a, b) < best:
                best = (off, a, b)
    assert best is not None and best[0] <= 30
    return best[1], best[2]


NORTH = _edge_heading(0.0)
HOME8 = _cell(*NORTHAMPTON, 8)
EAST = _edge_heading(90.0)


def edges(
    athletes: list[int],
    edge: tuple[int, int],
    *,
    fwd: int = 1,
    hour: int = 8,
    weekend: int = 0,
    commute: int = 0,
    trips: int = 1,
    speed_mps: float = 5.0,
) -> np.ndarray:
    """One EDGE_DTYPE row per athlete (with the athlete index), all alike."""
    rows = []
    for athlete in athletes:
        rec = np.zeros(1, dtype=EDGE_DTYPE)
        rec["a"], rec["b"] = edge
        rec["fwd"], rec["hour"], rec["weekend"], rec["commute"] = fwd, hour, weekend, commute
        rec["trips"], rec["speed_sum"], rec["speed_n"] = trips, speed_mps * trips, trips
        rows.append(with_athlete(rec, athlete))
    return np.concatenate(rows) if rows else with_athlete(np.zeros(0, EDGE_DTYPE), 0)


def hexes(athletes: list[int], cell: int, trips: int = 1, speed_mps: float = 4.0) -> np.ndarray:
    rec = np.zeros(1, dtype=HEX_DTYPE)
    rec["cell"], rec["trips"], rec["speed_sum"], rec["speed_n"] = cell, trips, speed_mps, 1
    return np.concatenate([with_athlete(rec, i) for i in athletes])


def ods(athletes: list[int], o: int, d: int) -> np.ndarray:
    rec = np.zeros(1, dtype=OD_DTYPE)
    rec["o"], rec["d"], rec["trips"] = o, d, 1
    return np.concatenate([with_athlete(rec, i) for i in athletes])


def window(
    edge_arr: np.ndarray | None = None,
    hex_arr: np.ndarray | None = None,
    od_arr: np.ndarray | None = None,
) -> WindowData:
    def or_empty(arr: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
        return with_athlete(np.zeros(0, dtype), 0) if arr is None else arr

    e = or_empty(edge_arr, EDGE_DTYPE)
    x = or_empty(hex_arr, HEX_DTYPE)
    o = or_empty(od_arr, OD_DTYPE)
    empty = {k: v[:0] for k, v in (("edges", e), ("hexagons", x), ("od", o))}
    return WindowData(
        month="2021-02",
        first_month="2020-03",
        heat={},
        # "ride" repeats "all" as the layers do; "winter" is empty, as often in real data.
        edges={"all": e, "ride": e, "winter": empty["edges"]},
        hexagons={"all": x, "winter": empty["hexagons"]},
        od={"all": o, "winter": empty["od"]},
        athletes=100,
        activities=100,
    )


def build(
    out: Path,
    data: WindowData,
    *,
    min_athletes: int = 3,
    round_to: int = 5,
    base_map: str | None = None,
) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    cfg = MetroSettings(
        min_athletes=min_athletes,
        round_to=round_to,
        month="2021-02",
        first_month="2020-03",
        version="0.1.0",
        build_date="2021-03-01",
        base_map=base_map,
    )
    return write_metro(data, cfg, out)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def only(rows: list[dict[str, str]], layer: str = "all") -> dict[str, str]:
    picked = [r for r in rows if r["layer"] == layer]
    assert len(picked) == 1, picked
    return picked[0]


# --- direction and bearing -------------------------------------------------------------


def test_riding_north_fills_forward_only_and_bearing_points_north(tmp_path: Path) -> None:
    build(tmp_path, window(edges([0, 1, 2, 3], NORTH, fwd=1, speed_mps=5.0)))
    rows = read_csv(tmp_path / "edges.csv")
    assert [r["layer"] for r in rows] == ["all", "ride"]
    row = only(rows)
    a, b = NORTH
    assert row["edge_id"] == f"{h3.int_to_str(a)}-{h3.int_to_str(b)}"
    assert row["forward_trip_count"] == "5"  # 4 trips, rounded to 5
    assert row["forward_people_count"] == "5"
    assert row["total_trip_count"] == "5"
    assert row["forward_average_speed_kmh"] == "18.0"  # 5 m/s
    assert row["forward_leisure_trip_count"] == "5"
    assert row["forward_commute_trip_count"] == ""  # nobody commuted: hidden, not 0
    for name in ("trip", "people", "commute_trip", "leisure_trip", "morning_trip"):
        assert row[f"reverse_{name}_count"] == ""
    assert row["reverse_average_speed_kmh"] == ""
    bearing = float(row["forward_bearing_deg"])
    assert min(bearing, 360 - bearing) <= 30


def test_riding_east_points_east_and_b_to_a_fills_reverse(tmp_path: Path) -> None:
    data = np.concatenate(
        [edges([0, 1, 2], EAST, fwd=1), edges([3, 4, 5, 6, 7, 8], NORTH, fwd=0, trips=2)]
    )
    build(tmp_path, window(data))
    rows = {r["edge_id"]: r for r in read_csv(tmp_path / "edges.csv") if r["layer"] == "all"}
    east = rows[f"{h3.int_to_str(EAST[0])}-{h3.int_to_str(EAST[1])}"]
    assert abs(float(east["forward_bearing_deg"]) - 90) <= 30
    south = rows[f"{h3.int_to_str(NORTH[0])}-{h3.int_to_str(NORTH[1])}"]
    assert south["forward_trip_count"] == "" and south["forward_people_count"] == ""
    assert south["reverse_trip_count"] == "10"  # 12 trips -> 10
    assert south["reverse_people_count"] == "5"  # 6 people -> 5
    # The bearing describes the forward (a to b) direction even when only b->a was ridden.
    bearing = float(south["forward_bearing_deg"])
    assert min(bearing, 360 - bearing) <= 30


def test_geojson_line_runs_from_a_to_b_in_lng_lat_order(tmp_path: Path) -> None:
    build(tmp_path, window(edges([0, 1, 2], NORTH)))
    collection = json.loads((tmp_path / "edges.geojson").read_text())
    features = collection["features"]
    assert len(features) == 2
    (lng_a, lat_a), (lng_b, lat_b) = features[0]["geometry"]["coordinates"]
    (ca_lat, ca_lng), (cb_lat, cb_lng) = _centre(NORTH[0]), _centre(NORTH[1])
    assert (lat_a, lng_a) == pytest.approx((ca_lat, ca_lng), abs=1e-6)
    assert (lat_b, lng_b) == pytest.approx((cb_lat, cb_lng), abs=1e-6)
    assert lat_b > lat_a  # b is north of a on this edge
    props = features[0]["properties"]
    assert list(props) == [c.name for c in EDGE_COLUMNS]  # the CSV's order, as QGIS shows it
    assert props["forward_trip_count"] == 5 and props["reverse_trip_count"] is None


def test_geojson_is_one_feature_per_line_with_the_csv_values(tmp_path: Path) -> None:
    data = np.concatenate([edges([0, 1, 2], NORTH, speed_mps=4.37), edges([3, 4, 5], EAST, fwd=0)])
    build(tmp_path, window(data))
    lines = (tmp_path / "edges.geojson").read_text(encoding="utf-8").split("\n")
    assert lines[0] == '{"features":[' and lines[-1] == ""
    features = [json.loads(line.removesuffix(",")) for line in lines[1:-2]]
    with (tmp_path / "edges.csv").open(encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(features) == len(table) == 4
    for feature, row in zip(features, table, strict=True):
        props = feature["properties"]
        assert list(props) == list(row)  # the CSV header order
        # The very same text for every value (floats: shortest round-trip text).
        assert {k: "" if v is None else str(v) for k, v in props.items()} == row


# --- hours, bands, day types -----------------------------------------------------------


def test_hour_7_lands_in_hour_7_rows_and_morning_band(tmp_path: Path) -> None:
    data = np.concatenate(
        [
            edges([0, 1, 2], NORTH, hour=7),
            edges([3, 4, 5], NORTH, hour=22, weekend=1, commute=1),
        ]
    )
    build(tmp_path, window(data))
    hourly = [r for r in read_csv(tmp_path / "edges_hourly.csv") if r["layer"] == "all"]
    assert [(r["hour"], r["day_type"]) for r in hourly] == [("7", "weekday"), ("22", "weekend")]
    assert hourly[0]["forward_trip_count"] == "5"
    assert hourly[0]["forward_leisure_trip_count"] == "5"
    assert hourly[1]["forward_commute_trip_count"] == "5"
    assert list(hourly[0]) == [c.name for c in HOURLY_COLUMNS]
    row = only(read_csv(tmp_path / "edges.csv"))
    assert row["forward_trip_count"] == "5"  # 6 trips
    assert row["forward_morning_trip_count"] == "5"
    assert row["forward_overnight_trip_count"] == "5"
    assert row["forward_midday_trip_count"] == row["forward_evening_trip_count"] == ""


def test_each_hour_row_is_thresholded_on_its_own(tmp_path: Path) -> None:
    # 4 people in total, but never 3 in the same hour: the edge shows, no hour does.
    data = np.concatenate([edges([0, 1], NORTH, hour=7), edges([2, 3], NORTH, hour=17)])
    build(tmp_path, window(data))
    row = only(read_csv(tmp_path / "edges.csv"))
    assert row["forward_people_count"] == "5"
    assert row["forward_morning_trip_count"] == row["forward_evening_trip_count"] == ""
    assert read_csv(tmp_path / "edges_hourly.csv") == []


# --- threshold and rounding ------------------------------------------------------------


def test_min_athletes_minus_one_people_publish_no_row_anywhere(tmp_path: Path) -> None:
    cell8 = _cell(*NORTHAMPTON, 8)
    counts = build(
        tmp_path,
        window(
            edges([0, 1], NORTH, trips=40),  # many trips, but only 2 people
            hexes([0, 1], cell8, trips=40),
            ods([0, 1], cell8, cell8),
        ),
    )
    expected = {name: 0 for name in (*CSV_FILES, "edges.geojson")}
    gpkg = {f"metro.gpkg:{layer}": 0 for layer in (*GPKG_LAYERS, *GPKG_TABLES)}
    assert counts == expected | gpkg
    for name in CSV_FILES:
        assert read_csv(tmp_path / name) == []
    assert json.loads((tmp_path / "edges.geojson").read_text())["features"] == []


def test_hidden_direction_is_empty_and_left_out_of_total(tmp_path: Path) -> None:
    data = np.concatenate(
        [edges([0, 1, 2, 3, 4, 5, 6], NORTH, fwd=1), edges([7, 8], NORTH, fwd=0, trips=9)]
    )
    build(tmp_path, window(data))
    row = only(read_csv(tmp_path / "edges.csv"))
    assert row["forward_trip_count"] == "5" and row["forward_people_count"] == "5"
    assert row["reverse_trip_count"] == row["reverse_people_count"] == ""
    assert row["reverse_average_speed_kmh"] == ""
    assert row["total_trip_count"] == "5"  # the 18 hidden trips do not leak through the total


def test_hexagons_and_od_counts(tmp_path: Path) -> None:
    home, work = _cell(*NORTHAMPTON, 8), _cell(42.3170, -72.6300, 8)
    assert home != work
    build(
        tmp_path,
        window(
            hex_arr=np.concatenate([hexes(list(range(8)), home, trips=2), hexes([0, 1], work)]),
            od_arr=np.concatenate([ods([0, 1, 2], home, work), ods([3], work, home)]),
        ),
    )
    hex_row = only(read_csv(tmp_path / "hexagons.csv"))
    assert list(hex_row) == [c.name for c in HEX_COLUMNS]
    assert hex_row == {
        "hex_id": h3.int_to_str(home),
        "layer": "all",
        "trip_count": "15",  # 16 -> 15
        "people_count": "10",  # 8 -> 10
        "average_speed_kmh": "14.4",  # 4 m/s
        "average_speed_ms": "4.0",
    }
    od_row = only(read_csv(tmp_path / "od.csv"))
    assert list(od_row) == [c.name for c in OD_COLUMNS]
    assert (od_row["origin_hex_id"], od_row["destination_hex_id"]) == (
        h3.int_to_str(home),
        h3.int_to_str(work),
    )
    assert od_row["trip_count"] == od_row["people_count"] == "5"


@pytest.mark.parametrize(
    ("min_athletes", "round_to", "raw", "published"),
    [
        (3, 5, [3, 7, 8, 12, 13, 2], [5, 5, 10, 10, 15, -1]),
        (1, 5, [1, 2, 3], [5, 5, 5]),  # never rounded down to 0
        (7, 5, [7, 8], [10, 10]),  # never published below min_athletes
        (3, 10, [14, 15, 25], [10, 20, 30]),  # exact halves go up
        (3, 1, [3, 4], [3, 4]),
    ],
)
def test_rounding(min_athletes: int, round_to: int, raw: list[int], published: list[int]) -> None:
    counts = np.array(raw, dtype=np.int64)
    got = Publication(min_athletes, round_to).publish(counts, counts)
    assert got.tolist() == published


def test_bad_settings_and_records_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="round_to"):
        build(tmp_path, window(), round_to=0)
    with pytest.raises(PublishError, match="hour = 24"):
        build(tmp_path, window(edges([0, 1, 2], NORTH, hour=24)))


# --- no identifiers --------------------------------------------------------------------


def test_no_athlete_index_or_identifier_column_is_published(tmp_path: Path) -> None:
    athletes = [918273, 827364, 736455, 645546]  # distinctive numbers to look for
    cell8 = _cell(*NORTHAMPTON, 8)
    build(
        tmp_path,
        window(edges(athletes, NORTH), hexes(athletes, cell8), ods(athletes, cell8, cell8)),
    )
    for name in ALL_FILES:
        if name.endswith(".zip"):
            continue
        if name.endswith(".gpkg"):  # binary: read every feature back through GDAL
            args = ["ogrinfo", "-ro", "-al", "-q", name]
            text = subprocess.run(
                args, capture_output=True, text=True, check=True, cwd=tmp_path
            ).stdout
            assert "OGRFeature(edges)" in text
            for column in ("athlete", "activity"):
                assert column not in text.lower(), name
        else:
            text = (tmp_path / name).read_text(encoding="utf-8")
        for athlete in athletes:
            assert str(athlete) not in text, name
    for name in CSV_FILES:
        header = (tmp_path / name).read_text().splitlines()[0].lower()
        assert "athlete" not in header and "activity" not in header


# --- GeoJSON through GDAL --------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="GDAL's ogrinfo is not installed")
def test_ogrinfo_reads_the_geojson(tmp_path: Path) -> None:
    data = np.concatenate([edges([0, 1, 2], NORTH), edges([3, 4, 5], EAST, fwd=0)])
    counts = build(tmp_path, window(data))
    result = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-so", str(tmp_path / "edges.geojson")],
        capture_output=True,
        text=True,
        check=True,
    )
    feature_count = re.search(r"^Feature Count: (\d+)$", result.stdout, re.MULTILINE)
    assert feature_count is not None and int(feature_count.group(1)) == 4 == counts["edges.geojson"]
    assert "Geometry: Line String" in result.stdout
    fields = dict(re.findall(r"^(\w+): (\w+) \(", result.stdout, re.MULTILINE))
    assert set(fields) == {c.name for c in EDGE_COLUMNS}
    # Numbers come through as numbers (GDAL types a column empty in every row as String).
    for name in ("forward_trip_count", "reverse_people_count", "total_trip_count"):
        assert fields[name] == "Integer"
    assert fields["forward_bearing_deg"] == fields["reverse_average_speed_kmh"] == "Real"


# --- downloads page, zip, README, reproducibility --------------------------------------


class _Downloads(HTMLParser):
    """Collects the download table (name, data-bytes, sha256) and the links."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.links: list[str] = []
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag == "tr" and a.get("class") == "download":
            self.rows.append({})
        if tag == "td" and self.rows:
            self._cell = (a.get("class") or "").split(" ")[-1]
            if "data-bytes" in a:
                self.rows[-1]["bytes"] = a["data-bytes"] or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell and data.strip():
            self.rows[-1][self._cell] = self.rows[-1].get(self._cell, "") + data.strip()


def test_index_lists_every_file_with_size_rows_and_sha256(tmp_path: Path) -> None:
    counts = build(tmp_path, window(edges([0, 1, 2], NORTH), hexes([0, 1, 2], HOME8)))
    page = _Downloads()
    page.feed((tmp_path / "index.html").read_text(encoding="utf-8"))
    assert "../index.html" in page.links
    listed = {r["name"]: r for r in page.rows}
    assert set(listed) == set(ALL_FILES)
    for name in ALL_FILES:
        data = (tmp_path / name).read_bytes()
        assert listed[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert int(listed[name]["bytes"]) == len(data)
        assert listed[name]["size"] == human_size(len(data))  # 2.2 MB; the exact bytes too
        assert listed[name].get("rows", "") == (f"{counts[name]:,}" if name in counts else "")


def test_sizes_read_as_a_file_manager_shows_them() -> None:
    assert [human_size(n) for n in (0, 999, 1024, 2_342_189, 3 * 2**30)] == [
        "0 bytes", "999 bytes", "1.0 KB", "2.2 MB", "3.0 GB"
    ]  # fmt: skip


def test_zip_holds_every_file(tmp_path: Path) -> None:
    build(tmp_path, window(edges([0, 1, 2], NORTH)))
    with zipfile.ZipFile(tmp_path / "heatmetro-metro-2021-02.zip") as zf:
        names = zf.namelist()
        assert names == sorted(f"heatmetro-metro-2021-02/{n}" for n in (*DATA_FILES, "README.md"))
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            name = info.filename.split("/")[1]
            assert zf.read(info) == (tmp_path / name).read_bytes()


def test_two_builds_are_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1614556800")  # 2021-03-01T00:00:00Z
    data = np.concatenate([edges([0, 1, 2, 3], NORTH, hour=h) for h in (7, 12, 18)])
    build(tmp_path / "one", window(data, hexes([0, 1, 2], HOME8)))
    build(tmp_path / "two", window(data[::-1].copy(), hexes([2, 1, 0], HOME8)))
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted((*ALL_FILES, "index.html"))
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    with zipfile.ZipFile(tmp_path / "one" / "heatmetro-metro-2021-02.zip") as zf:
        assert {i.date_time for i in zf.infolist()} == {(2021, 3, 1, 0, 0, 0)}
    assert b"\r" not in (tmp_path / "one" / "edges.csv").read_bytes()


def test_readme_documents_every_column_and_the_rules(tmp_path: Path) -> None:
    build(tmp_path, window(), min_athletes=4, round_to=10)
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    for column in (*EDGE_COLUMNS, *HOURLY_COLUMNS, *HEX_COLUMNS, *OD_COLUMNS):
        assert f"| `{column.name}` |" in readme
    assert "2020-03 to 2021-02" in readme
    assert "at least **4** distinct people" in readme
    assert "multiple of **10**" in readme
    assert "Add Vector Layer" in readme and "Delimited Text" in readme
    assert "hexadecimal strings" in readme


# --- the privacy property --------------------------------------------------------------

_EDGE_CHOICES = (NORTH, EAST)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 7),  # athlete
            st.integers(0, len(_EDGE_CHOICES) - 1),
            st.integers(0, 1),  # fwd
            st.sampled_from([3, 7, 12, 21]),  # hour
            st.integers(0, 1),  # weekend
            st.integers(0, 1),  # commute
            st.integers(1, 4),  # trips
        ),
        max_size=60,
    ),
    min_athletes=st.integers(1, 5),
    round_to=st.integers(1, 10),
)
def test_published_counts_respect_threshold_and_rounding(
    rows: list[tuple[int, ...]], min_athletes: int, round_to: int
) -> None:
    parts = [
        edges([ath], _EDGE_CHOICES[e], fwd=f, hour=h, weekend=w, commute=c, trips=t)
        for ath, e, f, h, w, c, t in rows
    ]
    arr = np.concatenate(parts) if parts else None
    hex_arr = np.concatenate([hexes([r[0]], HOME8, trips=r[6]) for r in rows]) if rows else None
    floor = math.ceil(min_athletes / round_to) * round_to
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        build(out, window(arr, hex_arr), min_athletes=min_athletes, round_to=round_to)
        for name in ("edges.csv", "edges_hourly.csv", "hexagons.csv"):
            for row in read_csv(out / name):
                for column, value in row.items():
                    if not column.endswith(COUNT_SUFFIX) or value == "":
                        continue
                    assert int(value) % round_to == 0 and int(value) >= max(round_to, floor)
                    if "people" in column:
                        assert int(value) >= min_athletes
        # Slow reference for edges.csv: distinct people and trips per direction by hand.
        people: dict[tuple[int, int], set[int]] = defaultdict(set)
        trips: dict[tuple[int, int], int] = defaultdict(int)
        # The direction's parts (hour and day type, hour, commute or not, band): one with
        # 1..k-1 people may take the direction as its partner (metro_plan).
        pieces: dict[tuple[int, int], dict[tuple[object, ...], set[int]]] = defaultdict(
            lambda: defaultdict(set)
        )
        for ath, e, f, h, w, c, t in rows:
            people[(e, f)].add(ath)
            trips[(e, f)] += t
            for part in (("hd", h, w), ("h", h), ("c", c), ("b", int(BAND_OF_HOUR[h]))):
                pieces[(e, f)][part].add(ath)
        published = {r["edge_id"]: r for r in read_csv(out / "edges.csv") if r["layer"] == "all"}
        for e, (a, b) in enumerate(_EDGE_CHOICES):
            edge_row = published.get(f"{h3.int_to_str(a)}-{h3.int_to_str(b)}")
            for f, direction in ((1, "forward"), (0, "reverse")):
                n = len(people[(e, f)])
                if n < min_athletes:
                    assert edge_row is None or edge_row[f"{direction}_people_count"] == ""
                    continue
                sensitive = any(0 < len(p) < min_athletes for p in pieces[(e, f)].values())
                if sensitive and (edge_row is None or not edge_row[f"{direction}_people_count"]):
                    continue  # hidden as a partner: allowed, not required
                assert edge_row is not None
                expected = max(floor, (2 * n + round_to) // (2 * round_to) * round_to)
                assert int(edge_row[f"{direction}_people_count"]) == expected
                t = trips[(e, f)]
                expected = max(floor, (2 * t + round_to) // (2 * round_to) * round_to)
                assert int(edge_row[f"{direction}_trip_count"]) == expected


# --- base-map attribution --------------------------------------------------------------

OSM = "© OpenStreetMap contributors"


def test_osm_attribution_only_with_a_base_map(tmp_path: Path) -> None:
    data = window(edges([0, 1, 2], NORTH), hexes([0, 1, 2], HOME8))
    build(tmp_path / "plain", data)
    build(tmp_path / "osm", data, base_map="city.osm.pbf")
    for name in ("README.md", "index.html", "edges.geojson"):
        assert OSM not in (tmp_path / "plain" / name).read_text(encoding="utf-8"), name
        assert OSM in (tmp_path / "osm" / name).read_text(encoding="utf-8"), name
    assert json.loads((tmp_path / "osm" / "edges.geojson").read_text())["attribution"] == OSM
    if shutil.which("ogrinfo"):
        for folder, want in (("plain", False), ("osm", True)):
            info = subprocess.run(
                ["ogrinfo", "-ro", "-so", "metro.gpkg", "edges"],
                capture_output=True, text=True, check=True, cwd=tmp_path / folder,
            ).stdout  # fmt: skip
            assert (OSM in info) is want, info


# --- differential privacy ----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 400), min_size=1, max_size=40),
    people=st.lists(st.integers(0, 12), min_size=40, max_size=40),
    min_athletes=st.integers(1, 6),
    round_to=st.sampled_from([1, 5, 10]),
    delta=st.sampled_from([None, 1e-6]),
)
def test_noisy_counts_obey_the_publication_rules(
    counts: list[int], people: list[int], min_athletes: int, round_to: int, delta: float | None
) -> None:
    noise = DpNoise.create(1.0, delta, "salt", "2021-02")
    c = np.array(counts, dtype=np.int64)
    p = np.array(people[: len(counts)], dtype=np.int64)
    got = Publication(min_athletes, round_to, noise).publish(c, p)
    shown = p >= min_athletes
    assert (got[~shown] == -1).all()
    assert (got[shown] % round_to == 0).all()
    assert (got[shown] >= max(round_to, min_athletes)).all()


def test_noise_is_seeded_by_salt_and_month_and_changes_counts() -> None:
    counts = np.arange(100, 200, dtype=np.int64)

    def noisy(salt: str, month: str) -> list[int]:
        noise = DpNoise.create(0.5, None, salt, month)
        return Publication(3, 1, noise).publish(counts, counts).tolist()

    assert noisy("s", "2021-02") == noisy("s", "2021-02")  # a rebuild is byte-identical
    assert noisy("s", "2021-02") != noisy("s", "2021-03")  # a new release, new noise
    assert noisy("s", "2021-02") != noisy("t", "2021-02")
    assert sum(a != b for a, b in zip(noisy("s", "2021-02"), counts.tolist(), strict=True)) > 50
    with pytest.raises(ConfigError, match="metro_delta"):
        DpNoise.create(None, 1e-6, "s", "2021-02")
    assert DpNoise.create(None, None, "s", "2021-02") is None


def test_a_layer_repeating_all_is_written_as_if_counted_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sport layer with the very records of ``all`` (ValleyBike's ``ride``) reuses the
    rows built for ``all``: the files must be those of counting it on its own."""
    data = np.concatenate([edges([0, 1, 2, 3], NORTH), edges([4, 5, 6], EAST, fwd=0)])
    twin = window(data)
    twin.edges["ride"] = data.copy()  # equal, not the same object
    build(tmp_path / "reused", twin)
    monkeypatch.setattr(metro_rows, "_twin", lambda *_: None)
    build(tmp_path / "counted", twin)
    reused, counted = (
        {p.name: p.read_bytes() for p in (tmp_path / d).iterdir()} for d in ("reused", "counted")
    )
    assert reused == counted
    assert {r["layer"] for r in read_csv(tmp_path / "reused" / "edges_hourly.csv")} == {
        "all",
        "ride",
    }


@settings(max_examples=60, deadline=None)
@given(
    layers=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans()), max_size=5),
    asks=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=30),
)
def test_same_records_remembered_is_the_comparison(
    layers: list[tuple[int, int, bool]], asks: list[tuple[int, int]]
) -> None:
    """The row writers' memo of "the same records?" (asked by each of the four edge
    tables, in any order) answers as comparing the two layers' records each time: equal
    copies, the very same array, other values, other lengths."""
    parts: dict[str, np.ndarray] = {}
    for i, (value, n, shared) in enumerate(layers):
        arr = edges([value] * n, NORTH)
        parts[f"l{i}"] = parts["l0"] if shared and i else arr
    names = list(parts)
    memo: dict[tuple[str, str], bool] = {}
    same = metro_rows.same_records(parts, memo)
    for a, b in asks:
        if a < len(names) and b < len(names):
            x, y = parts[names[a]], parts[names[b]]
            plain = x.shape == y.shape and bool(np.array_equal(x, y))
            assert same(names[a], names[b]) == plain


# --- encodings of the writers ----------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-89, 89), st.floats(-179, 179), st.integers(0, 15)), max_size=20)
)
def test_cell_ids_are_h3_strings(points: list[tuple[float, float, int]]) -> None:
    cells = [h3.latlng_to_cell(lat, lng, res) for lat, lng, res in points]
    ints = np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64)
    assert metro_rows._ids(ints) == cells
    pairs = [f"{a}-{b}" for a, b in zip(cells, cells[::-1], strict=True)]
    assert metro_rows._edge_ids(ints, ints[::-1]) == pairs


def _wkb_reference(kind: str, coords: list[tuple[float, float]]) -> bytes:
    points = b"".join(struct.pack("<2d", x, y) for x, y in coords)
    if kind == "LineString":
        return struct.pack("<BII", 1, 2, len(coords)) + points
    return struct.pack("<BIII", 1, 3, 1, len(coords)) + points


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["LineString", "Polygon"]),
    st.lists(
        st.lists(st.tuples(st.floats(-180, 180), st.floats(-90, 90)), min_size=2, max_size=8),
        max_size=12,
    ),
)
def test_gpkg_geometry_is_standard_wkb(
    kind: str, geometry: list[list[tuple[float, float]]]
) -> None:
    wkbs = metro_gpkg._wkbs(kind, geometry)
    # A line of one repeated point has no length: a null geometry, not an invalid line.
    null = [kind == "LineString" and len(set(g)) < 2 for g in geometry]
    expected = [None if n else _wkb_reference(kind, g) for g, n in zip(geometry, null, strict=True)]
    assert [None if w is None else bytes(w) for w in wkbs] == expected
    # What the GeoPackage writer hands GDAL: the same values as one Arrow array.
    import pyarrow as pa

    assert metro_gpkg._wkb_array(pa, kind, geometry).to_pylist() == expected


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="GDAL's ogrinfo is not installed")
def test_a_round_trip_od_row_has_a_null_geometry_and_every_line_is_valid(tmp_path: Path) -> None:
    elsewhere = _cell(NORTHAMPTON[0] + 0.05, NORTHAMPTON[1], 8)
    trips = np.concatenate([ods([0, 1, 2], HOME8, HOME8), ods([3, 4, 5], HOME8, elsewhere)])
    build(tmp_path, window(hex_arr=hexes([0, 1, 2], HOME8), od_arr=trips))
    sql = (
        "SELECT origin_hex_id AS o, destination_hex_id AS d, geom IS NULL AS no_geom, "
        "ST_IsValid(geom) AS valid FROM od"
    )
    proc = subprocess.run(
        ["ogrinfo", "-ro", "-q", "-dialect", "SQLite", "-sql", sql, str(tmp_path / "metro.gpkg")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = proc.stdout
    assert "partially supported" not in proc.stderr  # a GeoPackage version older GDALs read
    rows = re.findall(
        r"o \(String\) = (\w+)\n\s+d \(String\) = (\w+)\n\s+no_geom \(Integer\) = (\d)\n\s+valid \(Integer\) = (\S+)",
        out,
    )
    home, other = f"{HOME8:x}", f"{elsewhere:x}"
    assert len(rows) == 2, out  # the two O/D pairs
    for o, d, no_geom, valid in rows:
        if d == home:
            assert (o, no_geom) == (home, "1"), out
        else:
            assert (o, d, no_geom, valid) == (home, other, "0", "1"), out
