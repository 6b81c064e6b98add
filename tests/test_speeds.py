"""Speeds stored with each path (and so Metro's published speeds) are not inflated by
GPS noise: a phone's few metres a second used to add up along the track, and a walk at
5 km/h read 17-20 km/h (an outside review, on synthetic 1 Hz tracks with 3 m noise)."""

from __future__ import annotations

import h3
import numpy as np
import orjson
import pytest

from heatmetro.core.config import Config
from heatmetro.core.contract import parse_event
from heatmetro.core.geo import haversine_m, offset_point
from heatmetro.core.limits import MAX_TRACK_M
from heatmetro.flows.fold import AthleteFold
from heatmetro.state.changes import ActivityChange
from heatmetro.state.records import PATH_DTYPE, from_blob
from tests.conftest import TEST_SALT
from tests.streams import activity, athlete

START = (42.3195, -72.6450)
FOLD = AthleteFold(Config(salt=TEST_SALT))


def stored_speeds(speed_ms: float, sigma_m: float, sport: str, seed: int) -> np.ndarray:
    """The speeds stored along a 20-minute straight track at ``speed_ms``, 1 Hz, with
    independent Gaussian noise of ``sigma_m`` on each fix."""
    rng = np.random.default_rng(seed)
    pts = []
    for i in range(1200):
        lat, lng = offset_point(*START, speed_ms * i, 90.0)  # due east
        lat, lng = offset_point(lat, lng, abs(rng.normal(0, sigma_m)), rng.uniform(0, 360))
        pts.append([round(lat, 7), round(lng, 7)])
    settings, _ = FOLD.apply(None, parse_event(orjson.dumps(athlete("a", hide_start_end_m=0))))
    ev = activity("r", "a", pts, sport_type=sport)
    (change,) = [c for c in FOLD.apply(settings, parse_event(orjson.dumps(ev)))[1]
                 if isinstance(c, ActivityChange)]  # fmt: skip
    v = from_blob(change.path, PATH_DTYPE)["v"]
    return np.asarray(v[np.isfinite(v)])


@pytest.mark.parametrize(
    ("speed_ms", "sigma_m", "sport", "within"),
    [(1.4, 3.0, "Walk", 0.05), (1.4, 5.0, "Walk", 0.08), (6.0, 3.0, "Ride", 0.02)],
)
def test_noise_does_not_inflate_speeds(
    speed_ms: float, sigma_m: float, sport: str, within: float
) -> None:
    for seed in range(3):
        v = stored_speeds(speed_ms, sigma_m, sport, seed)
        assert len(v) > 100
        assert abs(float(np.median(v)) / speed_ms - 1) <= within, (seed, float(np.median(v)))


def change_of(ev: dict) -> ActivityChange:
    settings, _ = FOLD.apply(None, parse_event(orjson.dumps(athlete("a", hide_start_end_m=0))))
    (change,) = [c for c in FOLD.apply(settings, parse_event(orjson.dumps(ev)))[1]
                 if isinstance(c, ActivityChange)]  # fmt: skip
    return change


def test_a_frozen_clock_makes_no_impossible_speed() -> None:
    """A clock that stops for a minute while the rider goes on (the review found a
    21 km/h ride's Metro edges at 105 km/h): the fixes at the stopped time are one
    moment to every speed over them. The first of them is where the clock stopped; the
    next fix with a later time measures the true speed from it."""
    speed = 6.0
    pts = [list(offset_point(*START, speed * i, 90.0)) for i in range(1200)]
    ev = activity("r", "a", [[round(a, 7), round(b, 7)] for a, b in pts])
    times = list(range(1200))
    times[400:460] = [400] * 60  # frozen for a minute; real time again from fix 460
    ev["streams"]["time"] = times
    change = change_of(ev)
    for blob in (change.path, change.metro_path):
        v = from_blob(blob, PATH_DTYPE)["v"]
        v = v[np.isfinite(v)]
        assert len(v) > 20
        assert float(v.max()) <= 1.25 * speed, float(v.max())
    # The track is still drawn through the frozen minute (the chord from where the clock
    # stopped to where it ran again is 360 m, a filled gap, not a split).
    path = from_blob(change.path, PATH_DTYPE)
    assert int(path["piece"].max()) == 0


def test_a_device_left_recording_for_days_draws_at_most_1500_km() -> None:
    """One sparse fix a kilometre for days at a plausible speed: the grid between fixes
    is filled, so the cells (work and memory) grew with the distance, not the fixes
    (an outside review: 200k fixes, 12 million cells, 6 GB to snapshot). The track drawn
    stops at 1,500 km; the fixes beyond are counted."""
    n, step_m = 2_000, 990.0
    pts, (lat, lng) = [], START
    for _ in range(n):
        pts.append([round(lat, 7), round(lng, 7)])
        lat, lng = offset_point(lat, lng, step_m, 90.0)
    ev = activity("r", "a", pts, seconds_per_point=40.0)  # 24.75 m/s: a fast ride, not a car
    change = change_of(ev)
    beyond = n - 1 - round(MAX_TRACK_M / step_m)  # the hidden start/end are off (0 m)
    assert abs(change.overlong_fixes - beyond) <= 2, change.overlong_fixes
    assert change.fixes_kept == n - change.overlong_fixes
    path = from_blob(change.path, PATH_DTYPE)
    # The drawn cells reach 1,500 km along the track and no further.
    far = h3.cell_to_latlng(h3.int_to_str(int(path["cell"][-1])))
    assert abs(haversine_m(*START, *far) - MAX_TRACK_M) < 20_000  # a great circle, 42.3 N
    assert len(path) < 400_000


def test_clock_faults_are_counted_with_the_activity() -> None:
    """A reset and a wrong time are what `heatmetro stats` can tell an operator about a
    device's clock: stored with the activity version (migration m013)."""
    pts = [list(offset_point(*START, 6.0 * i, 90.0)) for i in range(1200)]
    ev = activity("r", "a", [[round(a, 7), round(b, 7)] for a, b in pts])
    times = [i if i < 600 else i - 3600 for i in range(1200)]  # back an hour at fix 600
    times[300] = 40_000  # one corrupt time
    ev["streams"]["time"] = times
    change = change_of(ev)
    assert (change.clock_resets, change.wrong_time_fixes) == (1, 1)
    assert change.fixes_in == 1200  # as received
