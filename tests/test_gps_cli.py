"""Messy phone GPS through the real CLI: ``heatmetro ingest``, ``stats``, ``snapshot``.

* 30 people walk, ride a bus, walk again ("Walk", "walk" or " WALK ", as apps
  write it): both walks are published on the ``run`` layer, the bus ride nowhere,
  nothing is a dead letter, and ``stats`` counts 30 stretches cut as vehicles.
* The contract's fix limit: 200,000 fixes (a still watch jittering for 55 hours, with
  one spike dropped and counted) are
  accepted, 200,001 are a dead letter naming the activity and the count, and the stream
  goes on after it.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import orjson

from heatmetro.core.contract import MAX_FIXES_PER_ACTIVITY
from heatmetro.core.geo import haversine_m
from heatmetro.state.records import PATH_DTYPE, from_blob
from tests.conftest import write_config
from tests.store_rows import query
from tests.streams import activity, athlete, street_rides, to_jsonl
from tests.test_snapshot_cli import alpha_near, global_px, rgba_window

Run = Callable[..., subprocess.CompletedProcess[str]]
START = (42.3195, -72.6450)  # Elm Street, Northampton MA; the day runs east from here
M_PER_DEG_LNG = 111_195.0 * math.cos(math.radians(START[0]))
WALK_S, BUS_S, STEP_S = 20 * 60, 24 * 60, 2
WALK_V, BUS_V = 1.4, 14.0
WALK_M, BUS_M = WALK_S * WALK_V, BUS_S * BUS_V
SPIKE_FIXES = 3


def east(metres: float, north: float = 0.0) -> tuple[float, float]:
    return START[0] + north / 111_195.0, START[1] + metres / M_PER_DEG_LNG


def walk_bus_walk(i: int) -> dict[str, Any]:
    """A fix every 2 s: 20 min walking, 24 min on a bus, 20 min walking, all eastwards."""
    t = np.arange(0, 2 * WALK_S + BUS_S + 1, STEP_S, dtype=np.float64)
    x = np.where(
        t <= WALK_S,
        t * WALK_V,
        np.where(
            t <= WALK_S + BUS_S,
            WALK_M + (t - WALK_S) * BUS_V,
            WALK_M + BUS_M + (t - WALK_S - BUS_S) * WALK_V,
        ),
    )
    north = 3.0 * (i % 5)  # people a few metres apart, as on a real pavement
    pts = [[round(a, 7), round(b, 7)] for a, b in (east(float(m), north) for m in x)]
    # The platform's name as apps write it too: each is the walk, with its speed limit.
    sport = ("Walk", "walk", " WALK ")[i % 3]
    ev = activity(f"w{i}-1", f"w{i}", pts, sport_type=sport, seconds_per_point=STEP_S)
    assert ev["streams"]["time"][-1] == 2 * WALK_S + BUS_S
    return ev


def test_walk_bus_walk_publishes_both_walks_and_not_the_bus(project: Path, run_cli: Run) -> None:
    events = project / "days.jsonl"
    events.write_bytes(to_jsonl([walk_bus_walk(i) for i in range(30)]))
    cfg = project / "config.toml"
    out = run_cli("ingest", "-c", cfg, events).stdout
    assert "30 active" in out and "0 new dead letters" in out, out
    stats = json.loads(run_cli("stats", "-c", cfg, "--json").stdout)
    assert stats["dead_letters"] == 0
    faults = stats["gps_faults"]
    assert faults["vehicle_stretches"] == 30, faults
    # every bus fix but the stop where the walk goes on
    assert faults["vehicle_fixes"] >= 30 * (BUS_S // STEP_S - 1), faults
    assert faults["spike_fixes"] == faults["bad_end_fixes"] == faults["pause_splits"] == 0
    text = run_cli("stats", "-c", cfg).stdout
    assert "30 stretches cut as vehicles" in text, text
    rows = query(project / "state", "SELECT DISTINCT sport_type, layer FROM activities")
    assert set(rows) == {("Walk", "run")}  # over every shard

    run_cli("snapshot", "-c", cfg, "--month", "2021-06")
    site = project / "site"
    for z in (12, 14):
        # Heat along both walks (clear of the hidden start and end, up to 350 m)...
        for metres in (600, 1000, WALK_M + BUS_M + 600, WALK_M + BUS_M + 1000):
            assert alpha_near(site, "run", z, *east(metres, 6.0)) > 0, (z, metres)
        # ... but not at the bus stops: each walk's ends are hidden like the day's (the
        # bus may have left from home, or brought the walker there).
        for metres in (WALK_M - 100, WALK_M + BUS_M + 100):
            assert alpha_near(site, "run", z, *east(metres, 6.0)) == 0, (z, metres)
        # ... and none along the 20 km bus ride (beyond a hexagon of each bus stop).
        (x0, y0) = global_px(*east(WALK_M + 150), z)
        (x1, _) = global_px(*east(WALK_M + BUS_M - 150), z)
        win = rgba_window(site, "run", z, int(x0), int(y0) - 8, int(x1), int(y0) + 8)
        assert win[..., 3].max() == 0, f"heat along the bus ride at z{z}"
        assert (
            rgba_window(site, "all", z, int(x0), int(y0) - 8, int(x1), int(y0) + 8)[..., 3].max()
            == 0
        )


def _jitter_watch(n: int, activity_id: str) -> bytes:
    """A watch left on a table recording once a second, jittering a few metres (sigma 4 m,
    independent), with one spike: 3 fixes half-way through thrown 500 m north."""
    rng = np.random.default_rng(n)
    north = rng.normal(0, 4.0, n)
    north[n // 2 : n // 2 + SPIKE_FIXES] += 500.0
    lat = np.round(START[0] + north / 111_195.0, 7)
    lng = np.round(START[1] + rng.normal(0, 4.0, n) / M_PER_DEG_LNG, 7)
    ev = activity(activity_id, "watch", [], sport_type="Walk")
    ev["streams"] = {"latlng": np.stack([lat, lng], axis=1), "time": np.arange(n)}
    return orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def test_fix_limit_is_a_dead_letter_and_the_stream_goes_on(project: Path, run_cli: Run) -> None:
    limit = MAX_FIXES_PER_ACTIVITY
    later = datetime(2021, 6, 16, 9, tzinfo=UTC)
    after = street_rides(1, prefix="after", start=later, updated=later + timedelta(hours=1))
    events = project / "long.jsonl"
    # Hidden ends off: with them, a watch that never left its table keeps nothing at all
    # (tests/test_trim_properties.py); here its cleaning is what is looked at.
    events.write_bytes(
        to_jsonl([athlete("watch", hide_start_end_m=0)])
        + _jitter_watch(limit, "still-200000")
        + _jitter_watch(limit + 1, "still-200001")
        + to_jsonl(after)
    )
    cfg = project / "config.toml"
    run_cli("ingest", "-c", cfg, events)
    dead = [
        json.loads(x) for x in (project / "state" / "dead_letters.jsonl").read_text().splitlines()
    ]
    assert [d["position"] for d in dead] == [3]  # the third line
    assert dead[0]["reason"] == (
        "activity still-200001: 200,001 fixes: more than the limit of 200,000 per activity "
        "(max_fixes_per_activity)"
    )
    rows = dict(query(project / "state", "SELECT activity_id, status FROM activities"))
    ((path, spikes),) = query(
        project / "state",
        "SELECT path, spike_fixes FROM activities WHERE activity_id = 'still-200000'",
    )
    assert rows == {"still-200000": "active", "after0-r1": "active"}
    # 55 hours of jitter draw only the watch's own spot (a couple of hexagons)...
    cells = np.unique(from_blob(path, PATH_DTYPE)["cell"]).tolist()
    centres = np.array([h3.cell_to_latlng(c) for c in cells])
    # "Its spot": the cells cover no more than a 25 m disc (or a dozen cells, at coarse
    # resolutions where one cell is already bigger than that).
    area = h3.average_hexagon_area(h3.get_resolution(cells[0]), "m^2")
    assert 0 < len(cells) <= max(12, math.pi * 25.0**2 / area), len(cells)
    assert haversine_m(centres[:, 0], centres[:, 1], *START).max() < 60.0
    # ... its spike is dropped as one, and the jitter itself is no spike (it is the
    # watch's own noise: the slack grows with it).
    assert spikes == SPIKE_FIXES
    assert "fixes dropped as spikes" in run_cli("stats", "-c", cfg).stdout


def test_fix_limit_comes_from_the_config(tmp_path: Path, run_cli: Run) -> None:
    cfg = write_config(tmp_path, max_fixes_per_activity=100)
    events = tmp_path / "two.jsonl"
    events.write_bytes(_jitter_watch(100, "w-100") + _jitter_watch(101, "w-101"))
    run_cli("ingest", "-c", cfg, events)
    dead = (tmp_path / "state" / "dead_letters.jsonl").read_text()
    assert "activity w-101: 101 fixes: more than the limit of 100 per activity" in dead
    assert "w-100" not in dead
