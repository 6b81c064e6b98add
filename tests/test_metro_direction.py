"""Metro direction follows real movement, through the CLI (ingest + snapshot).

Eight one-way corridors at eight bearings, each ridden by six people with ordinary GPS
noise (sigma 5 m per axis, one fix a second), plus a noise-free ride exactly along a
run of H3 cell borders heading north. A crossing counts only when the track really went
that way (``heatmetro.flows.metro_path``), so almost no published trip may point
against the direction of travel, and the border ride never publishes both directions.
"""

from __future__ import annotations

import math
from pathlib import Path

import h3
import numpy as np
import pytest

from tests.conftest import write_config
from tests.streams import activity
from tests.test_metro_cli import build, read_csv

BEARINGS = tuple(range(0, 360, 45))
ATHLETES = 6
SIGMA_M = 5.0
CORRIDOR_M = 3000.0
ORIGIN = (42.33, -72.64)  # Northampton MA; corridors sit 5 km apart east of here
M_PER_DEG = 111_195.0
BORDER_ID = "border"


def _offset(lat: float, lng: float, east_m: float, north_m: float) -> tuple[float, float]:
    return lat + north_m / M_PER_DEG, lng + east_m / (M_PER_DEG * math.cos(math.radians(lat)))


def _corridor(centre: tuple[float, float], bearing: float, rng: np.random.Generator) -> list:
    """One noisy ride through ``centre`` at ``bearing``: a fix every ~5 m (1 s)."""
    s = np.arange(-CORRIDOR_M / 2, CORRIDOR_M / 2, 5.0)
    b = math.radians(bearing)
    lane = rng.normal(0.0, 1.5)  # each rider keeps their own line on the street
    east = s * math.sin(b) + lane * math.cos(b) + rng.normal(0.0, SIGMA_M, len(s))
    north = s * math.cos(b) - lane * math.sin(b) + rng.normal(0.0, SIGMA_M, len(s))
    lat, lng = _offset(*centre, 0.0, 0.0)
    return [
        [round(float(la), 7), round(float(lo), 7)]
        for la, lo in (_offset(lat, lng, e, n) for e, n in zip(east, north, strict=True))
    ]


def border_line() -> tuple[list[list[float]], float]:
    """Points exactly along the most nearly north-south edge of a res-10 cell, extended.

    Returns the points (south to north) and the line's compass bearing.
    """
    best: tuple[float, tuple[float, float], tuple[float, float]] | None = None
    centre = h3.latlng_to_cell(*_offset(*ORIGIN, -5000.0, 0.0), 10)
    for cell in h3.grid_disk(centre, 3):
        ring = h3.cell_to_boundary(cell)
        for p, q in zip(ring, ring[1:] + ring[:1], strict=True):
            p, q = (p, q) if p[0] < q[0] else (q, p)
            east = (q[1] - p[1]) * math.cos(math.radians(p[0]))
            off = abs(math.degrees(math.atan2(east, q[0] - p[0])))
            if best is None or off < best[0]:
                best = (off, p, q)
    assert best is not None
    _, p, q = best
    dlat, dlng = q[0] - p[0], q[1] - p[1]
    n = int(math.hypot(dlat * M_PER_DEG, dlng * M_PER_DEG * math.cos(math.radians(p[0]))) / 5.0)
    k = int(CORRIDOR_M / 2 / 5.0)
    pts = [[round(p[0] + dlat * i / n, 8), round(p[1] + dlng * i / n, 8)] for i in range(-k, n + k)]
    bearing = math.degrees(math.atan2(dlng * math.cos(math.radians(p[0])), dlat)) % 360.0
    return pts, bearing


def corridor_events() -> tuple[list[dict], dict[str, tuple[tuple[float, float], float]]]:
    """The rides, and per corridor its centre and travel bearing."""
    rng = np.random.default_rng(20261129)
    events, corridors = [], {}
    for k, bearing in enumerate(BEARINGS):
        centre = _offset(*ORIGIN, 5000.0 * (k + 1), 0.0)
        corridors[f"c{bearing}"] = (centre, float(bearing))
        for i in range(ATHLETES):
            pts = _corridor(centre, bearing, rng)
            events.append(activity(f"c{bearing}-{i}-r1", f"c{bearing}-{i}", pts))
    pts, border_bearing = border_line()
    mid = pts[len(pts) // 2]
    corridors[BORDER_ID] = ((mid[0], mid[1]), border_bearing)
    events += [activity(f"b{i}-r1", f"b{i}", pts) for i in range(ATHLETES)]
    return events, corridors


def _bearing(a: str, b: str) -> float:
    (la, lo), (lb, lob) = h3.cell_to_latlng(a), h3.cell_to_latlng(b)
    east = (lob - lo) * math.cos(math.radians(la))
    return math.degrees(math.atan2(east, lb - la)) % 360.0


def against_share(metro: Path, corridors: dict) -> tuple[int, int, list[str]]:
    """(trips against travel, all published trips, edges with both directions) in ``all``."""
    against = total = 0
    both: list[str] = []
    for row in read_csv(metro / "edges.csv"):
        if row["layer"] != "all":
            continue
        a, b = row["edge_id"].split("-")
        lat, lng = np.mean([h3.cell_to_latlng(a), h3.cell_to_latlng(b)], axis=0)
        name = min(corridors, key=lambda c: math.dist(corridors[c][0], (lat, lng)))
        travel = math.radians(corridors[name][1])
        fwd = math.radians(_bearing(a, b))
        counts = {"forward": row["forward_trip_count"], "reverse": row["reverse_trip_count"]}
        if all(counts.values()) and name == BORDER_ID:
            both.append(row["edge_id"])
        for direction, value in counts.items():
            if not value:
                continue
            heading = fwd if direction == "forward" else fwd + math.pi
            total += int(value)
            if math.cos(heading - travel) < 0:
                against += int(value)
    return against, total, both


@pytest.fixture(scope="module")
def corridors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    project = tmp_path_factory.mktemp("corridors")
    write_config(project)
    events, lines = corridor_events()
    return build(project, events), lines


def test_noisy_one_way_corridors_publish_trips_in_the_travel_direction(
    corridors: tuple[Path, dict],
) -> None:
    metro, lines = corridors
    against, total, both = against_share(metro, lines)
    assert total >= 300, f"too few published trips to judge: {total}"
    assert against <= 0.02 * total, f"{against} of {total} published trips against travel"
    assert not both, f"the border ride published both directions on {both}"
