"""The HMM map matcher on the real Helsinki extract: one-way rules, bounded work, no map.

The CLI tests (``test_streets_cli.py``) check what planners get; these check the
matcher's own promises on seeded noisy tracks (sigma 5 m) routed along the streets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import heatmetro.flows.map_match as mm
from heatmetro.state.street_network import FWD, REV, StreetNetwork
from tests.street_tracks import HELSINKI, by_uid, helsinki, noisy_track, route_through

pytestmark = pytest.mark.skipif(not HELSINKI.is_file(), reason=f"{HELSINKI} is absent")
KIRKKOKATU = "36730359:343813967-324694810"  # oneway=yes, no contraflow for bikes
UNIONINKATU_SIDEWALK = "30795885:3688552944-340372293"  # footway=sidewalk along Unioninkatu
SILTASAARENKATU = "26448756:313781294-1876042658"  # oneway=yes, no contraflow for bikes


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> StreetNetwork:
    return helsinki(tmp_path_factory.mktemp("network"))


def match(net: StreetNetwork, mode: str, pts: list[list[float]]) -> np.ndarray:
    p = np.array(pts)
    n = len(p)
    return mm.match_activity(net, mode, p[:, 0], p[:, 1], np.arange(n, dtype=float), np.zeros(n))


def visits(net: StreetNetwork, m: np.ndarray) -> list[tuple[str, bool]]:
    idx = net.index_of(m["edge"])
    return [(str(net.uid[i]), bool(f)) for i, f in zip(idx, m["fwd"], strict=True)]


def test_bikes_are_never_matched_against_a_one_way_street_walkers_are(net) -> None:  # type: ignore[no-untyped-def]
    # A walk along Siltasaarenkatu against its one-way direction: no sidewalk of its own
    # is mapped there, so the walker is on the carriageway.
    route = route_through(net, by_uid(net, SILTASAARENKATU), False, bike=False)
    pts = noisy_track(net, route, seed=5, speed_ms=3.0)
    assert (SILTASAARENKATU, False) in visits(net, match(net, "foot", pts))
    assert (SILTASAARENKATU, False) not in visits(net, match(net, "bike", pts))


def test_a_wrong_way_track_starting_inside_a_one_way_street_counts_no_bike_there(net) -> None:  # type: ignore[no-untyped-def]
    # The track starts inside Siltasaarenkatu and goes against it in steps each short
    # enough to pass for GPS noise: the first visit read "reverse" on a one-way street.
    route = route_through(net, by_uid(net, SILTASAARENKATU), False, bike=False)
    pts = noisy_track(net, route, seed=3, speed_ms=3.0)
    assert (SILTASAARENKATU, False) in visits(net, match(net, "foot", pts))
    assert (SILTASAARENKATU, False) not in visits(net, match(net, "bike", pts))


# A ride from Erottajankatu round the corner into Uudenmaankatu, and the crossing's
# footway (bikes not signed) that cuts the corner: 20 m against the street's 36 m.
CORNER_RIDE = [
    "230989021:2394117042-2403899237", "232043439:2403899237-314935874",
    "230989020:314935874-1380411602", "230989020:1380411602-315370681",
    "77615452:315370681-314935876", "123911189:314935876-189508866",
    "123911189:189508866-25291572", "25614338:25291572-314935878",
    "25614338:314935878-913250150",
]  # fmt: skip
CORNER_FOOTWAY = [
    "28586046:1380411602-314935871", "28656181:314935871-3232076698",
    "317002927:3232076698-189508866",
]  # fmt: skip


def test_a_ride_round_a_corner_is_not_routed_over_the_footway_cutting_it(net) -> None:  # type: ignore[no-untyped-def]
    """A fix on a footway costs a bike match its preference (AVOID_LOGP); so must the
    streets routed between two fixes, or the shorter footway wins the corner and its
    5-10 m pieces get counts nobody rode (a planner's review on Helsinki)."""
    route = [(by_uid(net, uid), True) for uid in CORNER_RIDE]
    wrong = []  # seeds whose match cut the corner or missed a street of the ride
    for seed in range(20):
        seen = {
            uid for uid, _ in visits(net, match(net, "bike", noisy_track(net, route, seed=seed)))
        }
        if seen & set(CORNER_FOOTWAY) or not set(CORNER_RIDE[2:-2]) <= seen:
            wrong.append(seed)
    assert wrong == []


def test_walkers_on_mapped_sidewalks_are_counted_there_not_on_the_road(net) -> None:  # type: ignore[no-untyped-def]
    """Sidewalks mapped as ways run metres from the carriageway: closer than GPS tells
    apart. 40 walks (1.4 m/s, sigma 5 m) along sidewalks, each with 150 m of ways a
    walker takes before and after: under 1.5% of their length goes to a carriageway
    (with distance alone, 2.5-4.3% did)."""
    avoid = mm.avoided_edges(net, "foot")
    sidewalks = np.flatnonzero((net.footway == "sidewalk") & (net.length_m > 40))
    rng = np.random.default_rng(0)
    walked = on_road = 0.0
    for i, edge in enumerate(rng.choice(sidewalks, size=40, replace=False).tolist()):
        walk = route_through(
            net, edge, bool(rng.integers(2)), bike=False, around_m=150, detour=avoid
        )
        got = {
            int(e)
            for e in net.index_of(
                match(net, "foot", noisy_track(net, walk, seed=i, speed_ms=1.4))["edge"]
            )
        }
        ways = {e for e, _ in walk}
        walked += float(net.length_m[list(ways)].sum())
        on_road += sum(float(net.length_m[e]) for e in got - ways if avoid[e])
    assert on_road < 0.015 * walked, f"{on_road:.0f} of {walked:.0f} m walked went to carriageways"


def test_mode_preferences_follow_the_tags(net) -> None:  # type: ignore[no-untyped-def]
    foot, bike = mm.avoided_edges(net, "foot"), mm.avoided_edges(net, "bike")
    road, sidewalk = by_uid(net, KIRKKOKATU), by_uid(net, UNIONINKATU_SIDEWALK)
    assert net.footway[sidewalk] == "sidewalk"
    assert foot[road] and not foot[sidewalk]
    assert bike[sidewalk] and not bike[road]
    assert not foot[net.highway == "footway"].any()
    assert bike[net.bicycle == "use_sidepath"].all()
    assert not bike[(net.highway == "cycleway")].any()
    shared = (net.highway == "footway") & np.isin(net.bicycle, ["yes", "designated"])
    assert shared.any() and not bike[shared].any()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pick=st.integers(0, 10**6), seed=st.integers(0, 10**6), forward=st.booleans())
def test_a_bike_match_only_goes_ways_bikes_may_go(net, pick: int, seed: int, forward: bool) -> None:  # type: ignore[no-untyped-def]
    usable = np.flatnonzero((net.length_m > 30) & (net.bike > 0))
    edge = int(usable[pick % len(usable)])
    # Any way along the edge, also against a one-way street (a walker's track, or a
    # cyclist riding the wrong way): the match keeps to the ways bikes may go.
    m = match(
        net, "bike", noisy_track(net, route_through(net, edge, forward, bike=False), seed=seed)
    )
    idx = net.index_of(m["edge"])
    allowed = np.where(m["fwd"] == 1, net.bike[idx] & FWD, net.bike[idx] & REV)
    assert (allowed > 0).all(), "a bike was matched against a one-way street or onto steps"


def test_work_grows_linearly_with_the_fixes(net, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Shortest-path work (sources x subgraph nodes, summed) for a ride and for the same
    ride four times over: at most ~4x, not 16x."""
    work: list[int] = []
    real = mm._Routes.__init__

    def counting(self, *args, **kw):  # type: ignore[no-untyped-def]
        real(self, *args, **kw)
        work.append(len(self.src) * len(self.nodes))

    monkeypatch.setattr(mm._Routes, "__init__", counting)
    route = route_through(net, by_uid(net, KIRKKOKATU), True, bike=True, around_m=500)
    there = noisy_track(net, route, seed=1)
    back = noisy_track(net, [(e, not f) for e, f in reversed(route)], seed=2)
    match(net, "foot", there)
    once = sum(work)
    work.clear()
    match(net, "foot", there + back + there + back)
    assert 0 < sum(work) <= 5 * once, f"work {once} for one ride, {sum(work)} for four"


def test_a_track_far_from_every_street_matches_nothing_and_routes_nothing(net, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    built: list[int] = []
    real = mm._Routes.__init__

    def counted(self, *a, **k):  # type: ignore[no-untyped-def]
        built.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(mm._Routes, "__init__", counted)
    route = route_through(net, by_uid(net, KIRKKOKATU), True, bike=True)
    far = [[lat + 0.05, lng] for lat, lng in noisy_track(net, route, seed=4)]  # 5.5 km north
    assert len(match(net, "bike", far)) == 0
    assert not built


def test_matching_is_deterministic(net: StreetNetwork, tmp_path: Path) -> None:
    route = route_through(net, by_uid(net, KIRKKOKATU), True, bike=True)
    pts = noisy_track(net, route, seed=5)
    assert match(net, "bike", pts).tobytes() == match(net, "bike", pts).tobytes()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(1, 250),
    kind=st.sampled_from(["walk", "still", "jumps", "vertices", "leaves the map"]),
    mode=st.sampled_from(["bike", "foot"]),
)
def test_any_track_gives_an_ordered_sequence_within_its_time(net, seed, n, kind, mode) -> None:  # type: ignore[no-untyped-def]
    """GPS faults, standing still, teleports, fixes exactly on nodes, pieces: the matcher
    never fails, and every visit lies within the track's own time span, in order."""
    rng = np.random.default_rng(seed)
    lat0, lng0 = 60.164 + 0.015 * rng.random(), 24.935 + 0.018 * rng.random()
    walk_lat = lat0 + np.cumsum(rng.normal(0, 1e-4, n))
    walk_lng = lng0 + np.cumsum(rng.normal(0, 2e-4, n))
    if kind == "still":
        walk_lat, walk_lng = np.full(n, lat0), np.full(n, lng0)
    elif kind == "jumps":
        walk_lat, walk_lng = lat0 + rng.normal(0, 0.01, n), lng0 + rng.normal(0, 0.02, n)
    elif kind == "vertices":
        on = rng.integers(0, len(net.lat), n)
        walk_lat, walk_lng = net.lat[on], net.lng[on]
    elif kind == "leaves the map":
        walk_lat[n // 2 :] += 0.1
    t = np.sort(rng.integers(0, 3 * n + 1, n)).astype(float)
    piece = np.sort(rng.integers(0, 3, n))
    m = mm.match_activity(net, mode, walk_lat, walk_lng, t, piece)
    assert (m["t_out"] >= m["t"]).all() and (m["t"][1:] >= m["t"][:-1] - 1e-3).all()
    assert (m["t"] >= t.min()).all() and (m["t_out"] <= t.max()).all()
    assert (net.index_of(m["edge"]) >= 0).all()
