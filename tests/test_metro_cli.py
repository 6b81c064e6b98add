"""Metro count files end to end: stream -> ``heatmetro ingest`` -> ``heatmetro snapshot``.

Direction, local hour, rounding and threshold are read back from the published CSVs as a
planner would; the GeoJSON through GDAL's ``ogrinfo``; erasure by comparing bytes with a
build of the stream without the erased events; and the real ValleyBike rides must put
their busiest street segments in Northampton/Amherst, Massachusetts.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import h3
import pytest

from heatmetro.site_builder.metro_columns import EDGE_COLUMNS
from tests.conftest import cli_env, heatmetro, write_config
from tests.store_rows import query
from tests.streams import (
    NORTH_EAST,
    NORTH_WEST,
    NORTHAMPTON_EAST,
    NORTHAMPTON_WEST,
    activity,
    athlete,
    deleted,
    line,
    street_rides,
    to_jsonl,
)

Run = Callable[..., subprocess.CompletedProcess[str]]

SDE_ENV = cli_env(SOURCE_DATE_EPOCH="1700000000")
MIN_ATHLETES = 3
ROUND_TO = 5
METRO_FILES = (
    "edges.csv",
    "edges.geojson",
    "edges_hourly.csv",
    "hexagons.csv",
    "od.csv",
    "README.md",
)
# A parallel street ~1.1 km south of Elm Street, for the erasure case.
SOUTH_WEST, SOUTH_EAST = (42.3095, -72.6450), (42.3095, -72.6250)
# Northampton and Amherst, MA (where ValleyBike ran).
VALLEY = {"lat": (42.2, 42.45), "lng": (-72.75, -72.45)}


# --------------------------------------------------------------------------- helpers


def build(project: Path, events: list[dict], month: str = "2021-06") -> Path:
    """Ingest ``events`` and publish ``month``; returns the site's ``metro/`` folder."""
    path = project / "events.jsonl"
    path.write_bytes(to_jsonl(events))
    config = str(project / "config.toml")
    for args in (["ingest", "-c", config, str(path)], ["snapshot", "-c", config, "--month", month]):
        proc = heatmetro(*args, env=SDE_ENV)
        assert proc.returncode == 0, f"heatmetro {args[0]} failed:\n{proc.stderr}"
    return project / "site" / "metro"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def centre(edge_id: str) -> tuple[float, float]:
    """Midpoint (lat, lng) of an edge's two cell centres."""
    a, b = edge_id.split("-")
    (lat_a, lng_a), (lat_b, lng_b) = h3.cell_to_latlng(a), h3.cell_to_latlng(b)
    return (lat_a + lat_b) / 2, (lng_a + lng_b) / 2


def on_street(edge_id: str, street_lat: float) -> bool:
    return abs(centre(edge_id)[0] - street_lat) < 0.002  # within ~220 m


def filled_direction(row: dict[str, str]) -> str:
    """``forward`` or ``reverse``: the one direction with counts (asserts there is one)."""
    fwd, rev = row["forward_trip_count"] != "", row["reverse_trip_count"] != ""
    assert fwd != rev, f"expected exactly one direction in {row['edge_id']}: {row}"
    return "forward" if fwd else "reverse"


def travel_bearing(row: dict[str, str]) -> float:
    """Compass bearing of the published travel: a->b if forward, else b->a."""
    bearing = float(row["forward_bearing_deg"])
    return bearing if filled_direction(row) == "forward" else (bearing + 180.0) % 360.0


def check_published_counts(metro: Path) -> int:
    """Every count is a multiple of round_to and >= the floor; people >= min_athletes.

    Returns how many numbers were checked.
    """
    checked = 0
    for name in ("edges.csv", "edges_hourly.csv", "hexagons.csv", "od.csv"):
        for row in read_csv(metro / name):
            for column, value in row.items():
                if not column.endswith("_count") or value == "":
                    continue
                n = int(value)  # a count is an integer, never "3.0"
                assert n % ROUND_TO == 0, f"{name} {column} = {n}: not a multiple of {ROUND_TO}"
                assert n >= max(ROUND_TO, MIN_ATHLETES), f"{name} {column} = {n}"
                if "people" in column:
                    assert n >= MIN_ATHLETES
                checked += 1
            if name == "edges.csv":
                parts = [row["forward_trip_count"], row["reverse_trip_count"]]
                assert int(row["total_trip_count"]) == sum(int(v) for v in parts if v)
    return checked


# --------------------------------------------------------------------------- fixtures


def two_streets_events() -> list[dict]:
    """Three people ride Elm Street west->east at 07:10 local in New York summer time
    (11:10Z, offset -4 h); three others ride the street 1.1 km north east->west at 07:10
    local in a UTC+2 zone (05:10Z). 2021-06-15 is a Tuesday."""
    elm = street_rides(
        3, prefix="e", start=datetime(2021, 6, 15, 11, 10, tzinfo=UTC), utc_offset_s=-14400
    )
    north_pts = line(NORTH_EAST, NORTH_WEST)
    north = [
        activity(
            f"w{i}-r1",
            f"w{i}",
            north_pts,
            start=datetime(2021, 6, 15, 5, 10, tzinfo=UTC),
            utc_offset_s=7200,
        )
        for i in range(3)
    ]
    return elm + north


@pytest.fixture(scope="module")
def streets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("streets")
    write_config(project)
    return build(project, two_streets_events())


@pytest.fixture(scope="module")
def real_metro(june2018_site: Path) -> Path:
    """Metro files of the bundled real ValleyBike rides of June 2018."""
    return june2018_site / "metro"


# --------------------------------------------------------------------------- direction


def test_direction_follows_the_travel(streets: Path) -> None:
    rows = [r for r in read_csv(streets / "edges.csv") if r["layer"] == "all"]
    elm = [r for r in rows if on_street(r["edge_id"], NORTHAMPTON_WEST[0])]
    north = [r for r in rows if on_street(r["edge_id"], NORTH_WEST[0])]
    assert len(elm) >= 5 and len(north) >= 5, "both streets must publish segments"
    assert len(elm) + len(north) == len(rows), "a segment away from both streets"

    for row in rows:
        a, b = row["edge_id"].split("-")
        assert h3.str_to_int(a) < h3.str_to_int(b), f"{row['edge_id']}: a must be < b"
        assert h3.are_neighbor_cells(a, b)
    # A straight street zig-zags over the hexagon grid: where it clips a corner it crosses
    # into a neighbour up to 90 degrees off its heading (here 168 deg on an eastward ride).
    # So every published direction must head east (a positive east component), and most
    # segments roughly east (45-135 deg). A swapped forward/reverse would point all west.
    for row in elm:  # ridden west -> east only
        assert 0.0 < travel_bearing(row) < 180.0, row
    for row in north:  # ridden east -> west only
        assert 180.0 < travel_bearing(row) < 360.0, row
    assert sum(45.0 <= travel_bearing(r) <= 135.0 for r in elm) >= 0.75 * len(elm)
    assert sum(225.0 <= travel_bearing(r) <= 315.0 for r in north) >= 0.75 * len(north)
    # Both directions occur as a->b: the labels really follow the integer order of the cells.
    assert {filled_direction(r) for r in elm} == {"forward", "reverse"}


# --------------------------------------------------------------------------- hour


def test_local_hour_and_band(streets: Path) -> None:
    hourly = [r for r in read_csv(streets / "edges_hourly.csv") if r["layer"] == "all"]
    assert {r["hour"] for r in hourly} == {"7"}, "07:10 local is hour 7, whatever the UTC offset"
    assert {r["day_type"] for r in hourly} == {"weekday"}
    assert any(on_street(r["edge_id"], NORTHAMPTON_WEST[0]) for r in hourly)  # UTC-4
    assert any(on_street(r["edge_id"], NORTH_WEST[0]) for r in hourly)  # UTC+2

    edges = [r for r in read_csv(streets / "edges.csv") if r["layer"] == "all"]
    assert {r["edge_id"] for r in edges} == {r["edge_id"] for r in hourly}
    for row in edges:
        d = filled_direction(row)
        assert row[f"{d}_morning_trip_count"] == row[f"{d}_trip_count"] != ""
        for band in ("midday", "evening", "overnight"):
            assert row[f"{d}_{band}_trip_count"] == "", f"{band} filled for a 07:10 ride"


# --------------------------------------------------------------------------- rounding


def test_published_counts_are_rounded_and_thresholded(streets: Path, real_metro: Path) -> None:
    assert check_published_counts(streets) > 50
    assert check_published_counts(real_metro) > 500


# --------------------------------------------------------------------------- erasure


def test_opt_out_and_delete_publish_what_the_stream_without_them_publishes(tmp_path: Path) -> None:
    later = datetime(2021, 7, 2, tzinfo=UTC)
    north, south = line(NORTH_WEST, NORTH_EAST), line(SOUTH_WEST, SOUTH_EAST)
    # Elm Street: 3 people, always published. North: 2 people + x. South: 2 people + e0's ride.
    base = street_rides(3, prefix="e")
    base += [activity(f"n{i}-r1", f"n{i}", north) for i in range(2)]
    base += [activity(f"s{i}-r1", f"s{i}", south) for i in range(2)]
    erased = [
        activity("x-r1", "x", north),
        activity("x-r2", "x", line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)),
        activity("e0-r2", "e0", south),
    ]
    erasing = [
        athlete("x", updated=later, aggregate_opt_out=True),
        deleted("e0-r2", "e0", updated=later),
    ]
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    write_config(tmp_path / "with")
    write_config(tmp_path / "without")
    with_erasure = build(tmp_path / "with", base + erased + erasing)
    without = build(tmp_path / "without", base)

    for name in METRO_FILES:
        assert (with_erasure / name).read_bytes() == (without / name).read_bytes(), name
    # The erased events mattered: without them only Elm Street is published.
    rows = read_csv(without / "edges.csv")
    assert rows and all(on_street(r["edge_id"], NORTHAMPTON_WEST[0]) for r in rows)
    # The site says the same: x and e0's deleted ride are not counted.
    meta_with = (with_erasure.parent / "metadata.json").read_text()
    assert meta_with == (without.parent / "metadata.json").read_text()


# --------------------------------------------------------------------------- GIS client


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin's ogrinfo")
def test_ogrinfo_lists_every_feature_and_field(streets: Path) -> None:
    proc = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-so", str(streets / "edges.geojson")],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    out = proc.stdout
    count = re.search(r"^Feature Count: (\d+)$", out, re.M)
    assert count, out
    assert int(count.group(1)) == len(read_csv(streets / "edges.csv")) > 0
    assert re.search(r"^Geometry: Line String$", out, re.M), out
    fields = dict(re.findall(r"^(\w+): (\w+)", out.split("Geometry Column", 1)[-1], re.M))
    for column in EDGE_COLUMNS:
        assert column.name in fields, f"ogrinfo does not list {column.name}"
    assert fields["edge_id"] == "String" and fields["forward_trip_count"] == "Integer"
    assert fields["forward_bearing_deg"] == "Real"


# --------------------------------------------------------------------------- real data


def test_busiest_real_segments_are_in_northampton_and_amherst(real_metro: Path) -> None:
    rows = [r for r in read_csv(real_metro / "edges.csv") if r["layer"] == "all"]
    assert len(rows) > 50
    top = sorted(rows, key=lambda r: (-int(r["total_trip_count"]), r["edge_id"]))[:5]
    ties = sum(r["total_trip_count"] == top[0]["total_trip_count"] for r in rows)
    print(f"\nbusiest ValleyBike segments, June 2018 window ({ties} tie at the top count):")
    for row in top:
        lat, lng = centre(row["edge_id"])
        print(
            f"  {lat:.5f}, {lng:.5f}  trips={row['total_trip_count']}  bearing={row['forward_bearing_deg']}"
        )
        assert VALLEY["lat"][0] <= lat <= VALLEY["lat"][1], row
        assert VALLEY["lng"][0] <= lng <= VALLEY["lng"][1], row
    assert int(top[0]["total_trip_count"]) >= 10


def test_an_opt_out_in_an_otherwise_broken_athlete_record_is_applied(tmp_path: Path) -> None:
    """A privacy request fails closed (a review found it lost whole to a hide distance of
    2,000 m beside it): the opt-out is applied, the record still goes to dead letters."""
    write_config(tmp_path)
    rides = street_rides(MIN_ATHLETES, prefix="r")
    metro = build(tmp_path, rides)
    assert [
        r for r in read_csv(metro / "edges.csv") if on_street(r["edge_id"], NORTHAMPTON_WEST[0])
    ]

    opt_out = athlete("r0", aggregate_opt_out=True, hide_start_end_m=2000)  # 2000 > 1609
    zone_0 = athlete("r1", updated=datetime(2021, 7, 1, tzinfo=UTC), aggregate_opt_out=True,
                     privacy_zones=[{"lat": 42.32, "lng": -72.63, "radius_m": 0}])  # fmt: skip
    metro = build(tmp_path, [*rides, opt_out, zone_0])
    assert not [
        r for r in read_csv(metro / "edges.csv") if on_street(r["edge_id"], NORTHAMPTON_WEST[0])
    ]
    letters = [
        json.loads(line)
        for line in (tmp_path / "state" / "dead_letters.jsonl").read_text().splitlines()
    ]
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(reasons) == 2, reasons
    assert all("its aggregate_opt_out was applied" in r for r in reasons), reasons
    assert "hide_start_end_m = 2000" in reasons[0] and "radius_m = 0" in reasons[1], reasons


def test_a_broken_opt_out_keeps_the_athletes_zones_and_hide_distance(tmp_path: Path) -> None:
    """The opt-out of a broken record is applied, and nothing else: a change's review
    found it replaced the athlete's zone and 1,000 m hidden start by none and the
    default, and their next activities were stored 2 m from home."""
    write_config(tmp_path)
    zone = {"lat": 42.32, "lng": -72.63, "radius_m": 400}
    own = athlete("z0", hide_start_end_m=1000, privacy_zones=[zone])
    broken = athlete("z0", updated=datetime(2021, 7, 1, tzinfo=UTC), aggregate_opt_out="true",
                     privacy_zones=[{"lat": 42.32, "lng": -72.63, "radius_m": 0}])  # fmt: skip
    build(tmp_path, [own, broken])
    (row,) = query(tmp_path / "state", "SELECT opt_out, hide_start_end_m, zones FROM athletes")
    assert row[0] == 1 and row[1] == 1000
    (stored,) = json.loads(row[2])
    assert stored[2] >= 400  # the athlete's zone (lat, lng, radius as applied: grown, moved)
