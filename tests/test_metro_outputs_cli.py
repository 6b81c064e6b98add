"""The planner-facing Metro outputs, through the CLI (ingest + snapshot).

GeoPackage read back by GDAL's ogrinfo, the hourly wide file, rides apart from e-bike
rides, the monthly files with their per-month suppression, the monthly chart on
``metro/index.html``, and the optional differentially-private release.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from heatmetro.site_builder.metro_columns import (
    EDGE_COLUMNS,
    EDGE_MONTHLY_COLUMNS,
    GPKG_LAYERS,
    HEX_MONTHLY_COLUMNS,
    HOURLY_WIDE_COLUMNS,
    OD_MONTHLY_COLUMNS,
)
from tests.conftest import write_config
from tests.streams import NORTH_EAST, NORTH_WEST, activity, line, street_rides
from tests.test_metro_cli import MIN_ATHLETES, ROUND_TO, build, on_street, read_csv

MAY = datetime(2021, 5, 18, 11, 10, tzinfo=UTC)  # a Tuesday, 07:10 local (UTC-4)
JUNE = datetime(2021, 6, 15, 11, 10, tzinfo=UTC)
ELM_LAT = 42.3195
NORTH_LAT = NORTH_WEST[0]
OGR_TYPES = {"int": "Integer64", "float": "Real", "text": "String"}


def events() -> list[dict]:
    """Elm Street (west -> east): 3 riders in May; 3 e-bike riders and 2 riders in June.
    North street (east -> west): 2 riders in May and 2 others in June."""
    out = street_rides(3, prefix="may", start=MAY)
    out += street_rides(3, prefix="ebike", start=JUNE, sport_type="EBikeRide")
    out += street_rides(2, prefix="june", start=JUNE)
    north = line(NORTH_EAST, NORTH_WEST)
    out += [activity(f"nm{i}-r1", f"nm{i}", north, start=MAY) for i in range(2)]
    out += [activity(f"nj{i}-r1", f"nj{i}", north, start=JUNE) for i in range(2)]
    return out


@pytest.fixture(scope="module")
def metro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("outputs")
    write_config(project)
    return build(project, events())


def _filled(row: dict[str, str], stem: str) -> str:
    """The value of ``forward_<stem>`` or ``reverse_<stem>``, whichever direction is filled."""
    direction = "forward" if row["forward_trip_count"] else "reverse"
    return row[f"{direction}_{stem}"]


# --------------------------------------------------------------------------- GeoPackage


def _ogrinfo_summary(path: Path) -> dict[str, dict[str, str]]:
    """Per layer: its geometry, feature count and field types, from ``ogrinfo -so``."""
    proc = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-so", path.name],
        capture_output=True,
        text=True,
        check=True,
        cwd=path.parent,
    )
    layers: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for text in proc.stdout.splitlines():
        if m := re.match(r"Layer name: (\S+)", text):
            current = layers.setdefault(m.group(1), {})
        elif m := re.match(r"Geometry: (.+)", text):
            current["geometry"] = m.group(1)
        elif m := re.match(r"Feature Count: (\d+)", text):
            current["features"] = m.group(1)
        elif m := re.match(r"(\w+): (\w+) \(", text):
            current[m.group(1)] = m.group(2)
    return layers


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin's ogrinfo")
def test_ogrinfo_lists_every_layer_and_field_of_the_geopackage(metro: Path) -> None:
    layers = _ogrinfo_summary(metro / "metro.gpkg")
    assert set(GPKG_LAYERS) <= set(layers)
    csv_of = {"edges": "edges.csv", "hexagons": "hexagons.csv", "od": "od.csv"}
    geometry = {"LineString": "Line String", "Polygon": "Polygon"}
    for name, (kind, columns, _) in GPKG_LAYERS.items():
        info = layers[name]
        assert info["geometry"] == geometry[kind], name
        assert int(info["features"]) == len(read_csv(metro / csv_of[name])) > 0, name
        for column in columns:
            want = "int" if column.name.endswith("_count") else "text"
            if column.name.endswith(("_kmh", "_ms", "_deg")):
                want = "float"
            assert info.get(column.name) == OGR_TYPES[want], (name, column.name, info)


def _ogr_sql(gpkg: Path, sql: str) -> list[dict[str, str]]:
    """The rows ``ogrinfo -sql`` returns, as {column: printed value} ('' for a null)."""
    proc = subprocess.run(
        ["ogrinfo", "-ro", "-q", "-sql", sql, gpkg.name],
        capture_output=True,
        text=True,
        check=True,
        cwd=gpkg.parent,
    )
    rows: list[dict[str, str]] = []
    for text in proc.stdout.splitlines():
        if text.startswith("OGRFeature"):
            rows.append({})
        elif m := re.match(r"\s+(\w+) \(\w+\) = (.*)", text):
            rows[-1][m.group(1)] = "" if m.group(2) == "(null)" else m.group(2)
    return rows


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin's ogrinfo")
def test_every_other_csv_file_is_a_table_of_the_geopackage(metro: Path) -> None:
    """A planner opens one file: the hourly and monthly rows are in it, row for row."""
    layers = _ogrinfo_summary(metro / "metro.gpkg")
    tables = sorted(p.stem for p in metro.glob("*.csv") if p.stem not in GPKG_LAYERS)
    assert {"edges_hourly", "edges_monthly", "od_monthly"} <= set(tables)
    for table in tables:
        assert layers[table]["geometry"] == "None", table
        csv_rows = read_csv(metro / f"{table}.csv")
        assert int(layers[table]["features"]) == len(csv_rows) > 0, table
        got = _ogr_sql(metro / "metro.gpkg", f"SELECT * FROM {table}")
        assert len(got) == len(csv_rows), table
        for want, row in zip(csv_rows, got, strict=True):
            for column, value in want.items():
                if value and column.endswith(("_kmh", "_ms")):
                    assert float(row[column]) == float(value), (table, column)
                else:
                    assert row[column] == value, (table, column, row)


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin's ogrinfo")
def test_the_readmes_join_of_hours_to_segments_runs(metro: Path) -> None:
    readme = (metro / "README.md").read_text(encoding="utf-8")
    sql = re.search(r"```sql\n(.*?)```", readme, re.S)
    assert sql is not None
    joined = _ogr_sql(metro / "metro.gpkg", sql.group(1).strip().rstrip(";"))
    hourly = [
        r for r in read_csv(metro / "edges_hourly.csv")
        if r["layer"] == "all" and r["day_type"] == "weekday"
    ]  # fmt: skip
    assert len(joined) == len(hourly) > 0
    assert sorted((r["edge_id"], r["hour"], r["forward_trip_count"]) for r in joined) == sorted(
        (r["edge_id"], r["hour"], r["forward_trip_count"]) for r in hourly
    )


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin's ogrinfo")
def test_geopackage_features_hold_the_csv_values(metro: Path) -> None:
    proc = subprocess.run(
        ["ogrinfo", "-ro", "-q", "metro.gpkg", "edges"],
        capture_output=True,
        text=True,
        check=True,
        cwd=metro,
    )
    features: dict[tuple[str, str], dict[str, str]] = {}
    current: dict[str, str] = {}
    for text in proc.stdout.splitlines():
        if text.startswith("OGRFeature"):
            current = {}
        elif m := re.match(r"\s+(\w+) \(\w+\) = (.*)", text):
            current[m.group(1)] = m.group(2)
            if m.group(1) == "layer":
                features[(current["edge_id"], current["layer"])] = current
    for row in read_csv(metro / "edges.csv"):
        got = features[(row["edge_id"], row["layer"])]
        for column in ("forward_trip_count", "reverse_trip_count", "forward_average_speed_kmh"):
            if row[column]:
                assert float(got[column]) == float(row[column]), (row["edge_id"], column)


# --------------------------------------------------------------------------- columns


def test_hourly_wide_file_matches_the_long_file(metro: Path) -> None:
    wide = read_csv(metro / "edges_hourly_wide.csv")
    assert list(wide[0]) == [c.name for c in HOURLY_WIDE_COLUMNS]
    assert len(HOURLY_WIDE_COLUMNS) == 2 + 2 * 24 * 2
    long = {(r["edge_id"], r["layer"], r["hour"]): r for r in read_csv(metro / "edges_hourly.csv")}
    assert len(wide) == len({(r["edge_id"], r["layer"]) for r in read_csv(metro / "edges.csv")})
    for row in wide:
        for direction in ("forward", "reverse"):
            for hour in range(24):
                got = row[f"{direction}_hour_{hour}_trip_count"]
                match = long.get((row["edge_id"], row["layer"], str(hour)))
                # All rides here are on weekdays: the hour's all-days total is the long row.
                want = match[f"{direction}_trip_count"] if match else ""
                assert got == want, (row["edge_id"], direction, hour)
    assert any(r["forward_hour_7_trip_count"] or r["reverse_hour_7_trip_count"] for r in wide)


def test_rides_and_ebike_rides_are_counted_apart(metro: Path) -> None:
    elm = [
        r
        for r in read_csv(metro / "edges.csv")
        if r["layer"] == "all" and on_street(r["edge_id"], ELM_LAT)
    ]
    # Hidden starts and ends differ per activity: take the segments all 8 people rode.
    elm = [r for r in elm if _filled(r, "people_count") == "10"]
    assert elm
    monthly = [r for r in read_csv(metro / "edges_monthly.csv")
               if r["layer"] == "all" and on_street(r["edge_id"], ELM_LAT)]  # fmt: skip
    for row in elm:
        # 5 riders (3 in May, 2 in June) and 3 e-bike riders; 8 trips round to 10.
        assert _filled(row, "trip_count") == "10"
        # May's 3 riders are published in the monthly file; the window's 5 riders would
        # then give June's 2 away (5 - 3): hidden, and the e-bike count as its partner.
        assert _filled(row, "ride_count") == "" and _filled(row, "ebike_ride_count") == ""
    may = [r for r in monthly if r["month"] == "2021-05"]
    assert may and all(_filled(r, "ride_count") == "5" for r in may)  # 3 riders, not e-bikes
    assert all(_filled(r, "ebike_ride_count") == "" for r in may)
    for name in ("edges.csv", "edges_monthly.csv"):
        for row in read_csv(metro / name):
            if row["layer"] == "run":
                pytest.fail(f"{name}: nobody ran, yet a run row was published: {row}")
    speed_columns = [c.name for c in EDGE_COLUMNS if "speed" in c.name]
    assert speed_columns and all(c.endswith(("_kmh", "_ms")) for c in speed_columns)


# --------------------------------------------------------------------------- monthly


def test_monthly_files_suppress_each_month_on_its_own(metro: Path) -> None:
    monthly = read_csv(metro / "edges_monthly.csv")
    assert list(monthly[0]) == [c.name for c in EDGE_MONTHLY_COLUMNS]
    assert list(read_csv(metro / "hexagons_monthly.csv")[0]) == [
        c.name for c in HEX_MONTHLY_COLUMNS
    ]
    assert list(read_csv(metro / "od_monthly.csv")[0]) == [c.name for c in OD_MONTHLY_COLUMNS]
    all_layer = [r for r in monthly if r["layer"] == "all"]
    elm_months = {r["month"] for r in all_layer if on_street(r["edge_id"], ELM_LAT)}
    assert elm_months == {"2021-05", "2021-06"}
    for row in all_layer:
        if on_street(row["edge_id"], ELM_LAT) and row["month"] == "2021-06":
            assert _filled(row, "trip_count") == "5"  # 5 people
            assert _filled(row, "ride_count") == "", "2 June riders are below min_athletes"
            # ... and the 3 e-bike riders' count would give theirs away (the month's
            # trips minus it): hidden as its partner (metro_secondary).
            assert _filled(row, "ebike_ride_count") == ""
    # North street: 2 people a month, 4 over the window: published only for the window.
    assert not any(on_street(r["edge_id"], NORTH_LAT) for r in monthly)
    window = read_csv(metro / "edges.csv")
    assert any(on_street(r["edge_id"], NORTH_LAT) for r in window if r["layer"] == "all")
    for name in ("hexagons_monthly.csv", "od_monthly.csv"):
        for row in read_csv(metro / name):
            assert row["month"] in {"2021-05", "2021-06"}
            assert int(row["people_count"]) >= MIN_ATHLETES
            assert int(row["trip_count"]) % ROUND_TO == 0


class _Chart(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.points: dict[tuple[str, str], int] = {}
        self.lines: list[str] = []
        self.in_svg = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg" and "metro-chart" in (a.get("class") or ""):
            self.in_svg = True
        if not self.in_svg:
            return
        if tag == "circle":
            self.points[(a["data-layer"] or "", a["data-month"] or "")] = int(a["data-trips"] or 0)
        if tag == "polyline":
            self.lines.append(a["data-layer"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.in_svg = False


def test_index_page_charts_published_trips_per_month(metro: Path) -> None:
    page = (metro / "index.html").read_text(encoding="utf-8")
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    chart = _Chart()
    chart.feed(page)
    expected: dict[tuple[str, str], int] = {}
    for row in read_csv(metro / "edges_monthly.csv"):
        key = (row["layer"], row["month"])
        expected[key] = expected.get(key, 0) + int(row["total_trip_count"])
    layers = {layer for layer, _ in expected}
    assert set(chart.lines) == layers == {"all", "ride"}
    months = [f"2020-{m:02d}" for m in range(7, 13)] + [f"2021-{m:02d}" for m in range(1, 7)]
    for layer in layers:
        assert [chart.points[(layer, m)] for m in months] == [
            expected.get((layer, m), 0) for m in months
        ]
    assert chart.points[("all", "2021-06")] > 0 and chart.points[("all", "2021-05")] > 0
    # A month with nothing published says so: hidden counts are not zero trips.
    n = expected[("all", "2021-06")]
    assert f"<title>all 2021-06: {n:,} segment crossings</title>" in page
    # Named for what it sums: a trip counts once per segment it crossed.
    assert "<h2>Segment crossings per month</h2>" in page and "not as a number of trips" in page
    assert expected.get(("all", "2020-07"), 0) == 0
    assert "<title>all 2020-07: no published counts</title>" in page


# --------------------------------------------------------------------------- DP


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("dp")
    write_config(project, metro_epsilon=1.0, metro_delta=1e-6, salt="dp-test-salt")
    return build(project, events())


def _counts(metro: Path, name: str) -> dict[tuple[str, ...], str]:
    out = {}
    for row in read_csv(metro / name):
        key = tuple(v for k, v in row.items() if not k.endswith(("_count", "_kmh", "_ms")))
        for column, value in row.items():
            if column.endswith("_count"):
                out[(*key, column)] = value
    return out


def test_differentially_private_counts(metro: Path, noisy: Path) -> None:
    exact, dp = _counts(metro, "edges.csv"), _counts(noisy, "edges.csv")
    # The same rows and the same empty cells: suppression is still on exact people.
    assert exact.keys() == dp.keys()
    assert [k for k, v in exact.items() if v == ""] == [k for k, v in dp.items() if v == ""]
    shown = [k for k, v in exact.items() if v]
    differ = [k for k in shown if exact[k] != dp[k]]
    assert len(differ) >= len(shown) // 4, f"noise changed only {len(differ)} of {len(shown)}"
    for name in ("edges.csv", "edges_monthly.csv", "edges_hourly_wide.csv", "hexagons.csv"):
        for key, value in _counts(noisy, name).items():
            if value:
                assert int(value) >= max(MIN_ATHLETES, ROUND_TO), (name, key, value)
                assert int(value) % ROUND_TO == 0, (name, key, value)
    readme = (noisy / "README.md").read_text(encoding="utf-8")
    assert "ε = 1.0" in readme and "δ = 1e-06" in readme
    # Exact counts warn planners that releases can be differenced; noisy ones need not.
    exact_readme = " ".join((metro / "README.md").read_text(encoding="utf-8").split())
    assert "one or two people can come out so" in exact_readme
    assert "can come out so" not in " ".join(readme.split())
    about = (noisy.parent / "about.html").read_text(encoding="utf-8")
    assert "ε = 1.0, δ = 1e-06" in about
    assert "Differential privacy is off" in (metro.parent / "about.html").read_text("utf-8")


def test_data_dictionary_lists_every_column_of_every_file(metro: Path) -> None:
    readme = (metro / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme, flags=re.M))
    csvs = sorted(metro.glob("*.csv"))
    assert len(csvs) >= 8
    for path in csvs:
        header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
        missing = [c for c in header if c not in documented]
        assert not missing, f"{path.name}: undocumented columns {missing}"
        assert f"`{path.name}`" in readme, f"{path.name} is not described"
    assert "`metro.gpkg`" in readme and "δ" in readme and "ε" in readme
