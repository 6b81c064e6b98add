"""Metro on an OSM street base map, through the CLI, on the real Helsinki extract.

Noisy tracks (seeded, sigma 5 m) are routed along real streets of
``../shared/data/osm/helsinki.osm.pbf``; ``heatmetro ingest`` map-matches them and
``heatmetro snapshot`` writes ``metro/streets.*``. The published rows must sit on the
edges ridden, in the direction ridden, and nowhere else: not on a parallel street ~25 m
away, not against a one-way street for bikes (while walkers the other way still count).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from heatmetro.site_builder.metro_streets import nearest_street_names
from heatmetro.state.street_network import StreetNetwork
from tests.conftest import cli_env, heatmetro, write_config
from tests.streams import activity, athlete, to_jsonl
from tests.street_tracks import HELSINKI, Route, by_uid, helsinki, noisy_track, route_through
from tests.test_cluster import cluster, site
from tests.test_metro_differencing import edge_problems

pytestmark = pytest.mark.skipif(not HELSINKI.is_file(), reason=f"{HELSINKI} is absent")

SDE_ENV = cli_env(SOURCE_DATE_EPOCH="1700000000")
PEOPLE = 4  # per route: above min_athletes = 3
# Two cycleways ~25 m apart (found in the extract: every point of the middle of one is
# 24-27 m from the other); only the first is ridden.
RIDDEN = "38966499:331822733-581077545"
PARALLEL = "538562840:409705484-409705445"
# Siltasaarenkatu: a one-way street (oneway=yes, no contraflow for bikes, no cycle track
# beside it) with no sidewalk mapped as a way of its own (where one is, walkers are
# counted on it: test_map_match).
ONE_WAY = "26448756:313781294-1876042658"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> StreetNetwork:
    return helsinki(tmp_path_factory.mktemp("network"))


def _events(net: StreetNetwork, routes: dict[str, tuple[Route, str]], prefix: str = "") -> list:
    """``PEOPLE`` athletes per route, each with their own noise (hidden ends off)."""
    events = []
    for r, (name, (route, sport)) in enumerate(sorted(routes.items())):
        for p in range(PEOPLE):
            who = f"{prefix}{name}-{p}"
            speed = 5.0 if sport == "Ride" else 3.0
            pts = noisy_track(net, route, seed=1000 * r + p, speed_ms=speed)
            events.append(athlete(who, hide_start_end_m=0))
            events.append(activity(f"{who}-1", who, pts, sport_type=sport))
    return events


def build(project: Path, events: list, workers: int = 1, **config: object) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    write_config(project, base_map=str(HELSINKI), **config)
    path = project / "events.jsonl"
    path.write_bytes(to_jsonl(events))
    cfg = str(project / "config.toml")
    ingest = ["ingest", "-c", cfg, str(path), "-w", str(workers)]
    for args in (ingest, ["snapshot", "-c", cfg, "--month", "2021-06"]):
        proc = heatmetro(*args, env=SDE_ENV)
        assert proc.returncode == 0, f"heatmetro {args[0]} failed:\n{proc.stderr}"
    return project / "site" / "metro"


def rows(metro: Path, name: str = "streets.csv") -> list[dict[str, str]]:
    with (metro / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def published(metro: Path, layer: str) -> dict[str, tuple[bool, bool]]:
    """edge_uid -> (forward shown, reverse shown) for ``layer``."""
    return {
        r["edge_uid"]: (r["forward_trip_count"] != "", r["reverse_trip_count"] != "")
        for r in rows(metro)
        if r["layer"] == layer
    }


@pytest.fixture(scope="module")
def scenario(net: StreetNetwork, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ridden = route_through(net, by_uid(net, RIDDEN), True, bike=True)
    legal = route_through(net, by_uid(net, ONE_WAY), True, bike=True)
    against = route_through(net, by_uid(net, ONE_WAY), False, bike=False)
    routes = {"cyc": (ridden, "Ride"), "one": (legal, "Ride"), "walk": (against, "Run")}
    metro = build(tmp_path_factory.mktemp("streets"), _events(net, routes))
    return routes, metro


def test_counts_land_on_the_edges_ridden_in_the_direction_ridden(net, scenario) -> None:  # type: ignore[no-untyped-def]
    routes, metro = scenario
    for layer, names in (("ride", ("cyc", "one")), ("run", ("walk",))):
        truth = {(str(net.uid[e]), fwd) for n in names for e, fwd in routes[n][0]}
        got = {
            (uid, d)
            for uid, (f, r) in published(metro, layer).items()
            for d in (True, False)
            if (f, r)[not d]
        }
        length = {str(u): float(m) for u, m in zip(net.uid, net.length_m, strict=True)}
        ridden_m = sum(length[u] for u, _ in truth)
        hit_m = sum(length[u] for u, d in truth & got)
        wrong_way = {(u, d) for u, d in got if (u, not d) in truth and (u, d) not in truth}
        elsewhere_m = sum(length[u] for u, d in got - truth if (u, not d) not in truth)
        assert hit_m >= 0.85 * ridden_m, (
            f"{layer}: only {hit_m:.0f} of {ridden_m:.0f} m ridden were counted"
        )
        assert not wrong_way, f"{layer}: counted against the direction ridden: {sorted(wrong_way)}"
        # Junctions of short sidewalk and crossing edges leave a little ambiguity; the
        # threshold (3 people) keeps one athlete's slip off the files.
        assert elsewhere_m <= 0.1 * ridden_m, f"{layer}: {elsewhere_m:.0f} m counted off the routes"


def test_the_parallel_street_30_m_away_gets_nothing(net, scenario) -> None:  # type: ignore[no-untyped-def]
    _, metro = scenario
    ride = published(metro, "ride")
    assert ride[RIDDEN] == (True, False)
    every = {r["edge_uid"] for r in rows(metro)}
    assert PARALLEL not in every
    # Streets far from every route get nothing at all.
    assert len(every) < len(net) // 10


def test_one_way_street_bikes_legal_way_walkers_both(net, scenario) -> None:  # type: ignore[no-untyped-def]
    _, metro = scenario
    row = {r["layer"]: r for r in rows(metro) if r["edge_uid"] == ONE_WAY}
    # 4 riders the legal way, 4 walkers against it (and one walker's noisy track matched
    # the legal way too): nobody rode against it.
    assert row["all"]["forward_people_count"] == "5" and row["all"]["reverse_people_count"] == "5"
    assert row["run"]["reverse_trip_count"] == "5" and row["run"]["forward_trip_count"] == ""
    # The riders' own row is hidden: `all` minus it would be that one walker's trips
    # (secondary suppression across layers, metro_plan).
    assert "ride" not in row or row["ride"]["reverse_trip_count"] == ""
    assert row["all"]["street_name"] == "Siltasaarenkatu" and row["all"]["oneway"] == "yes"
    assert row["all"]["osm_reference_id"] == ONE_WAY.split(":")[0]


def test_sidewalks_and_cycle_tracks_name_the_street_they_run_beside(net, scenario) -> None:  # type: ignore[no-untyped-def]
    """OSM maps sidewalks and cycle tracks unnamed: without ``nearest_street`` a planner
    could not find a street's pedestrian counts without a spatial join."""
    nearest = nearest_street_names(net)
    # A sidewalk running north-south 7 m from Unioninkatu's carriageway, and the road.
    assert nearest[by_uid(net, "30795885:3688552944-340372293")] == "Unioninkatu"
    assert nearest[by_uid(net, ONE_WAY)] == ""  # a named way: its own name says it
    sidewalks = np.flatnonzero(net.footway == "sidewalk")
    assert sum(bool(nearest[e]) for e in sidewalks) >= 0.95 * len(sidewalks)
    _, metro = scenario
    run = [r for r in rows(metro) if r["layer"] == "run"]
    assert all(r["nearest_street"] == "" for r in run if r["street_name"])
    beside = {r["nearest_street"] for r in run if r["footway"] == "sidewalk"}
    assert beside and "" not in beside
    assert all(r["highway"] and "bicycle" in r and "oneway" in r for r in run)


def test_hourly_wide_file_has_each_street_hour_as_the_long_file(net, scenario) -> None:  # type: ignore[no-untyped-def]
    """streets_hourly_wide.csv: one row per street edge and layer, each direction and
    hour its own published count. The riders of each route rode on weekdays only (the
    long file says so), so each published hour matches the long file's weekday row."""
    _, metro = scenario
    wide = {(r["edge_uid"], r["layer"]): r for r in rows(metro, "streets_hourly_wide.csv")}
    long = rows(metro, "streets_hourly.csv")
    assert {r["day_type"] for r in long} == {"weekday"}
    assert wide and set(wide) <= {(r["edge_uid"], r["layer"]) for r in rows(metro)}
    checked = 0
    for r in long:
        w = wide[r["edge_uid"], r["layer"]]
        for d in ("forward", "reverse"):
            for what in ("trip", "people"):
                column = f"{d}_hour_{r['hour']}_{what}_count"
                assert w[column] == r[f"{d}_{what}_count"], (r["edge_uid"], column)
                checked += bool(w[column])
    assert checked > 20
    assert w["street_name"] == net.name[by_uid(net, w["edge_uid"])]


def test_metadata_and_about_count_the_street_rows(scenario) -> None:  # type: ignore[no-untyped-def]
    _, metro = scenario
    n = len(rows(metro))
    meta = json.loads((metro.parent / "metadata.json").read_text(encoding="utf-8"))
    assert meta["counts"]["streets"] == n > 0
    about = (metro.parent / "about.html").read_text(encoding="utf-8")
    assert f"Metro street rows (one per OpenStreetMap street edge and layer)</th><td>{n:,}" in about


def test_geojson_has_each_edges_own_polyline_and_the_osm_attribution(net, scenario) -> None:  # type: ignore[no-untyped-def]
    _, metro = scenario
    doc = json.loads((metro / "streets.geojson").read_text(encoding="utf-8"))
    assert doc["attribution"] == "© OpenStreetMap contributors"
    feature = next(
        f for f in doc["features"]
        if f["properties"]["edge_uid"] == ONE_WAY and f["properties"]["layer"] == "all"
    )  # fmt: skip
    lat, lng = net.polyline(by_uid(net, ONE_WAY))
    assert np.allclose(feature["geometry"]["coordinates"], np.column_stack([lng, lat]), atol=1e-6)
    # Forward is the way's direction: its bearing from the first node to the last.
    p1, p2, dl = math.radians(lat[0]), math.radians(lat[-1]), math.radians(lng[-1] - lng[0])
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    expected = math.degrees(math.atan2(y, x)) % 360
    assert abs(feature["properties"]["forward_bearing_deg"] - expected) <= 0.05
    assert "© OpenStreetMap contributors" in (metro / "README.md").read_text(encoding="utf-8")
    assert "© OpenStreetMap contributors" in (metro / "index.html").read_text(encoding="utf-8")
    about = (metro.parent / "about.html").read_text(encoding="utf-8")
    assert "© OpenStreetMap contributors" in about
    header = (metro / "streets.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    for column in header:
        assert f"`{column}`" in (metro / "README.md").read_text(encoding="utf-8")
    assert not any("athlete" in c or "activity" in c for c in header)
    assert list(feature["properties"]) == header  # QGIS lists fields in this order


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin's ogrinfo")
def test_geopackage_has_a_streets_layer_with_every_street_column(net, scenario) -> None:  # type: ignore[no-untyped-def]
    _, metro = scenario
    info = subprocess.run(
        ["ogrinfo", "-ro", "-so", "metro.gpkg", "streets"],
        capture_output=True, text=True, check=True, cwd=metro,
    ).stdout  # fmt: skip
    assert "Geometry: Line String" in info
    assert f"Feature Count: {len(rows(metro))}" in info
    assert "© OpenStreetMap contributors" in info
    header = (metro / "streets.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    for column in header:
        assert re.search(rf"^{column}: (Integer64|Real|String) ", info, flags=re.M), column
    assert re.search(r"^osm_reference_id: Integer64 ", info, flags=re.M)


def test_erasure_with_a_base_map_is_byte_identical(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Stream + one athlete's opt-out publishes what the stream without them publishes
    (the second build also runs 2 worker processes: matching is per activity, so the
    worker count changes nothing)."""
    route = route_through(net, by_uid(net, RIDDEN), True, bike=True)
    base = _events(net, {"cyc": (route, "Ride")})
    extra = _events(net, {"cyc": (route, "Ride")}, prefix="x")[:2]  # one more athlete
    opt_out = athlete("xcyc-0", hide_start_end_m=0, aggregate_opt_out=True)
    opt_out["updated_at"] = "2021-07-01T00:00:00Z"
    with_them = build(tmp_path / "a", [*base[:4], *extra, *base[4:], opt_out])
    without = build(tmp_path / "b", base, workers=2)
    for name in ("streets.csv", "streets.geojson", "streets_hourly.csv"):
        assert (with_them / name).read_bytes() == (without / name).read_bytes(), name
    assert rows(without)  # the comparison is not between two empty files


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "no such file"), (b"not a pbf", "cannot read it as OSM data")],
)
def test_a_bad_base_map_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    if content is not None:
        (tmp_path / "city.osm.pbf").write_bytes(content)
    write_config(tmp_path, base_map="city.osm.pbf")
    (tmp_path / "events.jsonl").write_bytes(b"")
    config, events = tmp_path / "config.toml", tmp_path / "events.jsonl"
    proc = heatmetro("ingest", "-c", config, events, env=SDE_ENV, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and f"city.osm.pbf: {reason}" in errors[0], proc.stderr


def test_a_cluster_snapshot_publishes_the_street_counts_of_one_process(  # type: ignore[no-untyped-def]
    net, scenario, tmp_path: Path
) -> None:
    """Two processes, each with its own shards, publish together (process 0 writes the
    Metro files) byte for byte what one process publishes from the whole store."""
    _, metro = scenario
    one = metro.parent.parent
    members = []
    for i in range(2):
        folder = tmp_path / f"machine{i}"
        folder.mkdir()
        members.append(write_config(folder, base_map=str(HELSINKI)))
    events = str(one / "events.jsonl")
    cluster(members, "ingest", events)
    cluster(members, "snapshot", "--month", "2021-06")
    parts = [site(c) for c in members]
    assert all(p for p in parts) and "metro/streets.csv" in parts[0]
    assert {**parts[1], **parts[0]} == site(one / "config.toml")
    assert len(rows(members[0].parent / "site" / "metro")) == len(rows(metro)) > 0


def test_street_rows_split_rides_from_e_bike_rides_and_by_month(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On one cycleway: 4 people ride it in May and 4 others on e-bikes in June (one of
    them twice). streets.csv counts 4 rides and 5 e-bike rides (both rounded to 5); the
    monthly file has May's rides and June's e-bike rides on their own rows."""
    route = route_through(net, by_uid(net, RIDDEN), True, bike=True)
    events = []
    for p in range(PEOPLE):
        for sport, month, n in (("Ride", 5, 1), ("EBikeRide", 6, 2 if p == 0 else 1)):
            who = f"{sport}-{p}"
            events.append(athlete(who, hide_start_end_m=0))
            for k in range(n):
                pts = noisy_track(net, route, seed=100 * p + 10 * month + k)
                start = datetime(2021, month, 10 + k, 8, tzinfo=UTC)
                events.append(activity(f"{who}-{k}", who, pts, sport_type=sport, start=start))
    metro = build(tmp_path / "p", events)
    row = {r["layer"]: r for r in rows(metro) if r["edge_uid"] == RIDDEN}["ride"]
    assert row["forward_trip_count"] == "10" and row["forward_people_count"] == "10"
    assert row["forward_ride_count"] == "5" and row["forward_ebike_ride_count"] == "5"
    assert row["reverse_ride_count"] == "" and row["reverse_ebike_ride_count"] == ""
    monthly = {
        r["month"]: r
        for r in rows(metro, "streets_monthly.csv")
        if r["edge_uid"] == RIDDEN and r["layer"] == "ride"
    }
    assert sorted(monthly) == ["2021-05", "2021-06"]
    may, june = monthly["2021-05"], monthly["2021-06"]
    assert (may["forward_ride_count"], may["forward_ebike_ride_count"]) == ("5", "")
    assert (june["forward_ride_count"], june["forward_ebike_ride_count"]) == ("", "5")
    assert may["street_name"] == row["street_name"] and may["length_m"] == row["length_m"]
    readme = (metro / "README.md").read_text(encoding="utf-8")
    assert "streets_monthly.csv" in readme
    header = (metro / "streets_monthly.csv").read_text(encoding="utf-8").splitlines()[0]
    names = header.split(",")
    assert names[names.index("layer") + 1] == "month"  # right after the street's columns


def test_no_hidden_street_count_is_a_difference_of_published_ones(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The street tables follow the H3 edges' secondary suppression: on one cycleway, 4
    people ride at 8:00 on May weekdays, and one each in June, on a May weekend at
    17:00, and at 22:00: every hidden month, hour or day type had been its published
    total minus the rest. Published with the defaults and with every count exact (the
    truth), the relations of ``test_metro_differencing`` must hold."""
    route = route_through(net, by_uid(net, RIDDEN), True, bike=True)
    plan = [(f"am-{p}", datetime(2021, 5, 3 + p, 8, tzinfo=UTC)) for p in range(PEOPLE)]
    plan += [("june", datetime(2021, 6, 8, 8, tzinfo=UTC)),
             ("sat", datetime(2021, 5, 15, 17, tzinfo=UTC)),
             ("late", datetime(2021, 5, 11, 22, tzinfo=UTC))]  # fmt: skip
    events = []
    for p, (who, start) in enumerate(plan):
        events.append(athlete(who, hide_start_end_m=0))
        pts = noisy_track(net, route, seed=500 + p)
        events.append(activity(f"{who}-1", who, pts, start=start, utc_offset_s=0))
    metro = build(tmp_path / "default", events)
    truth = build(tmp_path / "truth", events, min_athletes=1, round_to=1)
    problems, checked = edge_problems(metro, truth, "streets", "edge_uid")
    assert checked >= 3, checked  # the ridden edges, forward
    assert not problems, f"{len(problems)} hidden counts recoverable, e.g. {problems[:5]}"
    # And the month hidden beside June is May: the street shows its total alone.
    may = [r for r in rows(metro, "streets_monthly.csv") if r["edge_uid"] == RIDDEN]
    assert all(r["forward_trip_count"] == "" for r in may)
