"""Per-sport and night layers through the CLI, with the monthly thresholds.

Northampton, 15 December 2021 (sunset 16:18 local): three people trail-run Elm Street
from 16:00 to 16:44, so its west end is run in daylight and its east end after dark;
three people run the street to the north at noon; two trail-run a third street (below
``min_athletes``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tests.streams import NORTH_EAST, NORTH_WEST, NORTHAMPTON_EAST, NORTHAMPTON_WEST, activity, line
from tests.test_personal_cli import public_alpha

Run = Callable[..., subprocess.CompletedProcess[str]]
SOUTH_WEST, SOUTH_EAST = (42.3000, -72.6450), (42.3000, -72.6250)
DUSK = datetime(2021, 12, 15, 21, 0, tzinfo=UTC)  # 16:00 EST
NOON = datetime(2021, 12, 15, 17, 0, tzinfo=UTC)


def at(start: tuple[float, float], end: tuple[float, float], f: float) -> tuple[float, float]:
    return start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f


def test_sport_and_night_layers(project: Path, run_cli: Run) -> None:
    from tests.streams import to_jsonl

    def run(who: str, street: list[list[float]], sport: str, start: datetime) -> dict:
        return activity(
            f"{who}-{sport}", who, street, start=start, sport_type=sport, utc_offset_s=-18000,
            seconds_per_point=8.0,
        )  # fmt: skip

    elm, north = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST), line(NORTH_WEST, NORTH_EAST)
    south = line(SOUTH_WEST, SOUTH_EAST)
    events = [run(f"t{i}", elm, "TrailRun", DUSK) for i in range(3)]
    events += [run(f"r{i}", north, "Run", NOON) for i in range(3)]
    events += [run(f"s{i}", south, "TrailRun", NOON) for i in range(2)]
    (project / "events.jsonl").write_bytes(to_jsonl(events))
    config = project / "config.toml"
    run_cli("ingest", "-c", config, project / "events.jsonl")
    run_cli("snapshot", "-c", config, "--month", "2021-12")
    site = project / "site"

    elm_day = at(NORTHAMPTON_WEST, NORTHAMPTON_EAST, 0.25)  # ~16:11
    elm_dark = at(NORTHAMPTON_WEST, NORTHAMPTON_EAST, 0.75)  # ~16:33
    north_mid = at(NORTH_WEST, NORTH_EAST, 0.5)
    south_mid = at(SOUTH_WEST, SOUTH_EAST, 0.5)
    for z in (10, 12, 14):
        # Both streets are in the group layer, only the trail runs in their own layer.
        assert (
            public_alpha(site, "run", z, *elm_day) > 0
            and public_alpha(site, "run", z, *north_mid) > 0
        )
        assert public_alpha(site, "sport_trailrun", z, *elm_day) > 0
        assert public_alpha(site, "sport_trailrun", z, *north_mid) == 0
        # Two trail runners are below the threshold in every layer.
        for layer in ("all", "run", "sport_trailrun"):
            assert public_alpha(site, layer, z, *south_mid) == 0
        # Night: only the part of Elm Street after sunset.
        assert public_alpha(site, "night", z, *elm_dark) > 0, f"no night heat at z{z}"
        if z >= 12:  # coarser zooms draw parent cells, wider than the 250 m to sunset
            assert public_alpha(site, "night", z, *elm_day) == 0, f"daylight at night z{z}"
        assert public_alpha(site, "night", z, *north_mid) == 0
    page = (site / "index.html").read_text()
    for layer, label in (("sport_trailrun", "Trail Run"), ("night", "Night")):
        assert f"tiles/{layer}/{{z}}/{{x}}/{{y}}.png" in page and label in page
    assert "tiles/sport_mountainbikeride/" not in page  # configured but empty: not listed
