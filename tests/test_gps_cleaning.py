"""GPS cleaning: honest track kept, injected faults dropped and counted, work linear.

Tracks are walks (top speed 5 m/s) with faults injected where we know the truth:
spikes, cold starts / bad last fixes, vehicle stretches (a bus), clock jumps.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from heatmetro.core.config import Config
from heatmetro.core.geo import EARTH_RADIUS_M
from heatmetro.core.sports import max_speed_ms
from heatmetro.flows.batch import TrimJob, finish_batch
from heatmetro.flows.clean import FAULTS, WINDOW_S, clean_batch, noise_sigma_m
from tests.reference_trim import clean as reference_clean
from tests.reference_trim import finish_one

CENTRE = (42.3195, -72.6350)
WALK = max_speed_ms("Walk")
SAFE_M = 50.0  # honest fixes at least this far from any fault must all be kept...
SAFE_PER_SIGMA = 6.0  # ... plus this many sigmas of GPS noise (the slack has 5 of its estimate)

HONEST, SPIKE, BAD_END, VEHICLE = range(4)


@dataclass
class Scenario:
    x: np.ndarray  # metres east of CENTRE
    y: np.ndarray  # metres north
    t: np.ndarray
    label: np.ndarray  # HONEST / SPIKE / BAD_END / VEHICLE per fix
    part: np.ndarray  # honest part number (-1 for faults)
    vehicles: int
    jumps: int
    args: tuple[Any, ...] = ()
    sigma: float = 0.0  # GPS noise per axis, metres

    @property
    def safe_m(self) -> float:
        """Faults and honest fixes this far apart are told apart. Under noise the slack
        grows with it, and a fault within the slack plus one step at top speed of the
        track (a 2-fix stub of a bus on a walk sampled every 5 s) looks like the track."""
        if not self.sigma:
            return SAFE_M
        every_s = self.args[6] if self.args[6] is not None else 3.0
        return SAFE_M + SAFE_PER_SIGMA * self.sigma + WALK * every_s

    @property
    def lat(self) -> np.ndarray:
        return np.round(CENTRE[0] + np.degrees(self.y / EARTH_RADIUS_M), 7)

    @property
    def lng(self) -> np.ndarray:
        c = math.cos(math.radians(CENTRE[0]))
        return np.round(CENTRE[1] + np.degrees(self.x / (EARTH_RADIUS_M * c)), 7)


def build(
    seed: int,
    parts: int,
    links: list[str],
    spikes: list[int],
    cold: int,
    bad_last: int,
    every_s: float | None,
    sigma: float = 1.5,
    spike_m: float = 300.0,
) -> Scenario:
    """A walk of ``parts`` honest parts joined by a bus or a clock jump, with faults.

    A fix every ``every_s`` seconds (None: 1-3 s at random); every fix, the bus's too,
    carries independent GPS noise of ``sigma`` metres per axis."""
    rng = np.random.default_rng(seed)
    xs: list[float] = []
    ys: list[float] = []
    ts: list[float] = []
    lab: list[int] = []
    part: list[int] = []
    x = y = t = 0.0
    heading = rng.uniform(0, 2 * math.pi)

    def dt() -> float:
        return every_s if every_s is not None else float(rng.uniform(1.0, 3.0))

    def add(px: float, py: float, label: int, p: int = -1) -> None:
        xs.append(px)
        ys.append(py)
        ts.append(t)
        lab.append(label)
        part.append(p)

    vehicles = jumps = 0
    for p in range(parts):
        if p:
            if links[p - 1] == "bus":
                vehicles += 1
                speed, end = rng.uniform(12, 25), t + rng.uniform(120, 600)
                while t < end:
                    step = dt()
                    t += step
                    heading += rng.normal(0, 0.02)
                    x += speed * step * math.cos(heading)
                    y += speed * step * math.sin(heading)
                    add(x + rng.normal(0, sigma), y + rng.normal(0, sigma), VEHICLE)
            else:
                jumps += 1
                t += rng.uniform(600, 7200)  # the clock jumps; the walker has not moved
        speed, end = rng.uniform(0.7, 1.6), t + rng.uniform(150, 400)
        start = len(xs)
        while t < end:
            step = dt()
            t += step
            heading += rng.normal(0, 0.2)
            x += speed * step * math.cos(heading)
            y += speed * step * math.sin(heading)
            add(x + rng.normal(0, sigma), y + rng.normal(0, sigma), HONEST, p)
        # Spikes: 1-3 fixes thrown spike_m - 3 km off, at 1/3 and 2/3 of the part.
        n_part = len(xs) - start
        for w in range(spikes[p]):
            at = start + (w + 1) * n_part // 3
            d, b = rng.uniform(spike_m, 3000), rng.uniform(0, 2 * math.pi)
            for j in range(at, at + int(rng.integers(1, 4))):
                xs[j] += d * math.cos(b)
                ys[j] += d * math.sin(b)
                lab[j], part[j] = SPIKE, -1
    # Cold start before, bad last fixes after: far away, a few seconds apart.
    far = rng.uniform(2000, 50000), rng.uniform(0, 2 * math.pi)
    t0 = -cold * 3.0
    head = [
        (xs[0] + far[0] * math.cos(far[1]) + i, ys[0] + far[0] * math.sin(far[1]), t0 + 3.0 * i)
        for i in range(cold)
    ]
    for i in range(bad_last):
        t += 2.0
        add(x - far[0] * math.cos(far[1]) + i, y - far[0] * math.sin(far[1]), BAD_END)
    hx = [h[0] for h in head]
    hy = [h[1] for h in head]
    ht = [h[2] for h in head]
    arr = np.asarray
    return Scenario(
        arr(hx + xs),
        arr(hy + ys),
        arr(ht + ts) + cold * 3.0,
        arr([BAD_END] * cold + lab),
        arr([-1] * cold + part),
        vehicles,
        jumps,
        (seed, parts, links, spikes, cold, bad_last, every_s, sigma, spike_m),
        sigma if sigma > 1.5 else 0.0,  # the first property's 1.5 m keeps its 50 m
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    parts = draw(st.integers(1, 3))
    return build(
        seed=draw(st.integers(0, 2**32 - 1)),
        parts=parts,
        links=draw(st.lists(st.sampled_from(["bus", "jump"]), min_size=2, max_size=2)),
        spikes=draw(st.lists(st.integers(0, 2), min_size=3, max_size=3)),
        cold=draw(st.integers(0, 3)),
        bad_last=draw(st.integers(0, 2)),
        every_s=draw(st.sampled_from([1.0, None])),
    )


@st.composite
def noisy_scenarios(draw: st.DrawFn) -> Scenario:
    """The same faults on a track with cheap-phone noise (sigma up to 8 m), 1 Hz or 5 s."""
    parts = draw(st.integers(1, 3))
    return build(
        seed=draw(st.integers(0, 2**32 - 1)),
        parts=parts,
        links=draw(st.lists(st.sampled_from(["bus", "jump"]), min_size=2, max_size=2)),
        spikes=draw(st.lists(st.integers(0, 2), min_size=3, max_size=3)),
        cold=draw(st.integers(0, 3)),
        bad_last=draw(st.integers(0, 2)),
        every_s=draw(st.sampled_from([1.0, 5.0])),
        sigma=draw(st.floats(0.0, 8.0)),
        spike_m=100.0,
    )


HONEST_SPEED = {"Walk": (0.7, 1.6), "Run": (2.0, 4.5), "Ride": (3.0, 9.0)}


def honest_track(
    seed: int, sport: str, sigma: float, every_s: float, minutes: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Honest movement only, every fix with independent noise of ``sigma`` m per axis."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 / every_s)
    speed = rng.uniform(*HONEST_SPEED[sport])
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.1 * math.sqrt(every_s), n))
    x = np.cumsum(speed * every_s * np.cos(heading)) + rng.normal(0, sigma, n)
    y = np.cumsum(speed * every_s * np.sin(heading)) + rng.normal(0, sigma, n)
    t = np.arange(n) * every_s
    sc = Scenario(x, y, t, np.zeros(n, np.int64), np.zeros(n, np.int64), 0, 0)
    return sc.lat, sc.lng, t


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    sport=st.sampled_from(sorted(HONEST_SPEED)),
    sigma=st.floats(0.0, 8.0),
    every_s=st.sampled_from([1.0, 5.0]),
    minutes=st.floats(5.0, 40.0),
)
def test_an_honest_track_with_cheap_phone_noise_is_kept(
    seed: int, sport: str, sigma: float, every_s: float, minutes: float
) -> None:
    """Independent noise up to 8 m a fix (cheap phones in cities): >= 95% of the fixes
    kept, in at most 2 pieces, no vehicle; sigma is estimated (turns between sparse
    fixes add a little, which only widens the slack)."""
    lat, lng, t = honest_track(seed, sport, sigma, every_s, minutes)
    aid = np.zeros(len(t), dtype=np.int64)
    out = clean_batch(lat, lng, t, aid, np.array([max_speed_ms(sport)]))
    assert len(out.idx) >= 0.95 * len(t), (len(out.idx), len(t))
    assert out.new_piece.sum() <= 2, np.flatnonzero(out.new_piece)
    assert out.faults[0, FAULTS.index("vehicle_stretches")] <= 1
    est = noise_sigma_m(lat, lng, t, aid, 1)[0]
    assert 0.7 * sigma - 0.5 <= est <= 1.3 * sigma + 3.0, (est, sigma)


def _clean(sc: Scenario) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    aid = np.zeros(len(sc.t), dtype=np.int64)
    out = clean_batch(sc.lat, sc.lng, sc.t, aid, np.array([WALK]))
    return out.idx, out.new_piece, dict(zip(FAULTS, out.faults[0].tolist(), strict=True))


def _distance_to(sc: Scenario, bad: np.ndarray) -> np.ndarray:
    """Metres from each fix to the nearest fix in ``bad`` (inf if none)."""
    if not bad.any():
        return np.full(len(sc.t), np.inf)
    pts = np.stack([sc.x, sc.y], axis=1)
    d = np.full(len(sc.t), np.inf)
    for chunk in np.array_split(np.flatnonzero(bad), max(1, bad.sum() // 200)):
        diff = pts[:, None, :] - pts[None, chunk, :]
        d = np.minimum(d, np.sqrt((diff**2).sum(axis=2)).min(axis=1))
    return d


def _seconds_to(t: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """Seconds from each time in ``t`` to the nearest of the sorted ``marks`` (inf if none)."""
    if not len(marks):
        return np.full(len(t), np.inf)
    i = np.clip(np.searchsorted(marks, t), 1, len(marks) - 1) if len(marks) > 1 else None
    if i is None:
        return np.abs(t - marks[0])
    return np.minimum(np.abs(t - marks[i - 1]), np.abs(t - marks[i]))


CLEANING = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@CLEANING
@given(sc=scenarios())
def test_cleaning_keeps_the_honest_track_and_drops_the_faults(sc: Scenario) -> None:
    _check_faults(sc)


# Cases the random search once found (each fails without one part of the cleaner):
# a bus stub left on the first fixes of the walk after it (caught from the piece's end),
# a flickering window verdict near a bus (filled), a jump beside a bus (one stretch).
@example(sc=build(90, 3, ["bus", "bus"], [0, 1, 0], 0, 0, 1.0, 1.5))
@example(sc=build(193190480, 3, ["bus", "bus"], [2, 0, 1], 3, 1, None, 6.70, 100.0))
@example(sc=build(3084465756, 3, ["jump", "bus"], [0, 0, 1], 2, 1, 1.0, 7.64, 100.0))
@example(sc=build(731488007, 3, ["bus", "jump"], [2, 0, 2], 3, 2, 5.0, 7.76, 100.0))
@CLEANING
@given(sc=noisy_scenarios())
def test_faults_are_dropped_and_honest_fixes_kept_under_cheap_phone_noise(sc: Scenario) -> None:
    _check_faults(sc)


def _check_faults(sc: Scenario) -> None:
    idx, new_piece, faults = _clean(sc)
    kept = np.zeros(len(sc.t), dtype=bool)
    kept[idx] = True
    honest = sc.label == HONEST
    # Every injected fault is dropped (a bus stop where the walk goes on is no fault).
    faulty = ~honest & (_distance_to(sc, honest) >= sc.safe_m)
    assert not kept[faulty].any(), np.flatnonzero(kept & faulty)
    # Every honest fix clear of the faults is kept. Under noise, "clear" is also in time:
    # the speed window (+-WINDOW_S/2) that averages the noise away reaches that far, and
    # between fixes 5 s apart a fast bus's first step alone can be 100 m.
    safe = honest & (_distance_to(sc, ~honest) >= sc.safe_m)
    if sc.sigma:
        bus_t = sc.t[sc.label == VEHICLE]
        safe &= _seconds_to(sc.t, bus_t) > WINDOW_S / 2
    lost = np.flatnonzero(safe & ~kept)
    assert not len(lost), f"honest fixes dropped: {lost[:10]}"
    # The track splits at each bus and clock jump, and nowhere else: one piece per part.
    piece = np.cumsum(new_piece) - 1
    assert piece[-1] + 1 == sc.part.max() + 1
    part = sc.part[idx]
    pairs = {(int(p), int(q)) for p, q in zip(part, piece, strict=True) if p >= 0}
    assert sorted(pairs) == [(p, p) for p in range(sc.part.max() + 1)]
    # Each fault is counted for what it is.
    assert faults["spike_fixes"] == (sc.label == SPIKE).sum()
    assert faults["bad_end_fixes"] == (sc.label == BAD_END).sum()
    assert faults["vehicle_stretches"] == sc.vehicles
    assert faults["vehicle_fixes"] >= (faulty & (sc.label == VEHICLE)).sum()
    assert faults["pause_splits"] == sc.jumps


@settings(max_examples=15, deadline=None, derandomize=True)
@given(scs=st.lists(st.one_of(scenarios(), noisy_scenarios()), min_size=1, max_size=3))
def test_vectorised_cleaning_equals_the_plain_reference(scs: list[Scenario]) -> None:
    """Batched over several activities, exactly what the one-fix-at-a-time loop gives."""
    lat = np.concatenate([s.lat for s in scs])
    lng = np.concatenate([s.lng for s in scs])
    t = np.concatenate([s.t for s in scs])
    aid = np.repeat(np.arange(len(scs)), [len(s.t) for s in scs])
    out = clean_batch(lat, lng, t, aid, np.full(len(scs), WALK))
    offset = 0
    for i, s in enumerate(scs):
        idx, new, faults = reference_clean(s.lat, s.lng, s.t, WALK)
        mine = out.idx[aid[out.idx] == i] - offset
        assert mine.tolist() == idx
        assert out.new_piece[aid[out.idx] == i].tolist() == new
        assert dict(zip(FAULTS, out.faults[i].tolist(), strict=True)) == faults
        offset += len(s.t)


def test_a_spike_recorded_on_the_bus_leaves_one_bus_stretch() -> None:
    """Walk, bus, walk at 1 Hz with 5 m noise; 2 fixes of the bus ride thrown 500 m off."""
    rng = np.random.default_rng(5)
    t = np.arange(1800, dtype=np.float64)
    x = np.where(
        t < 600, 1.4 * t, np.where(t < 1200, 840 + 14 * (t - 600), 9240 + 1.4 * (t - 1200))
    )
    y = rng.normal(0, 5.0, len(t))
    y[900:902] += 500.0
    sc = Scenario(x + rng.normal(0, 5.0, len(t)), y, t, t * 0, t * 0, 1, 0)
    aid = np.zeros(len(t), dtype=np.int64)
    out = clean_batch(sc.lat, sc.lng, t, aid, np.array([WALK]))
    faults = dict(zip(FAULTS, out.faults[0].tolist(), strict=True))
    assert faults["vehicle_stretches"] == 1 and faults["spike_fixes"] == 2, faults
    assert out.new_piece.sum() == 2
    assert reference_clean(sc.lat, sc.lng, t, WALK)[2] == faults


def test_whole_store_change_equals_the_reference_on_faulty_walks() -> None:
    config = Config(salt="clean-test")
    jobs = []
    for i, seed in enumerate(range(6)):
        sc = build(seed, parts=3, links=["bus", "jump"], spikes=[1, 2, 1], cold=2, bad_last=1,
                   every_s=1.0 if i % 2 else None)  # fmt: skip
        base: dict[str, Any] = {
            "activity_id": f"w{i}", "athlete_id": "a", "updated_ms": 1, "sport_type": "Walk",
            "layer": "run", "commute": False, "start_s": 1_600_000_000, "utc_offset_s": 0,
            "month": "2020-09", "hide_override_m": None, "cut_start_m": 50.0,
            "cut_end_m": 40.0, "zone_key": "[]", "fixes_in": len(sc.t), "max_speed_ms": WALK,
        }  # fmt: skip
        jobs.append(TrimJob(base, sc.lat, sc.lng, sc.t, (), "test", i))
    batched = finish_batch(jobs, config)
    assert batched == [finish_one(j, config) for j in jobs]
    assert all(c.vehicle_stretches == 1 and c.pause_splits == 1 for c in batched)
    assert all(c.status == "active" for c in batched)


def test_a_walk_recorded_wholly_on_a_train_is_empty_and_counted() -> None:
    """Nothing survives cleaning, in a batch of its own or beside an honest walk."""
    config = Config(salt="clean-test")
    train = build(3, parts=1, links=[], spikes=[0], cold=0, bad_last=0, every_s=None)
    t = np.arange(300, dtype=np.float64) * 4.0
    lat = CENTRE[0] + np.degrees(t * 40.0 / EARTH_RADIUS_M)  # 40 m/s due north
    lng = np.full(300, CENTRE[1])
    base: dict[str, Any] = {
        "activity_id": "train", "athlete_id": "a", "updated_ms": 1, "sport_type": "Walk",
        "layer": "run", "commute": False, "start_s": 1_600_000_000, "utc_offset_s": 0,
        "month": "2020-09", "hide_override_m": None, "cut_start_m": 0.0, "cut_end_m": 0.0,
        "zone_key": "[]", "fixes_in": 300, "max_speed_ms": WALK,
    }  # fmt: skip
    job = TrimJob(base, lat, lng, t, (), "test", 0)
    walk = TrimJob({**base, "activity_id": "walk"}, train.lat, train.lng, train.t, (), "t", 1)
    (alone,) = finish_batch([job], config)
    assert alone.status == "empty" and alone.fixes_kept == 0
    assert alone.vehicle_fixes == 300 and alone.vehicle_stretches == 1
    together = finish_batch([job, walk], config)
    assert together[0] == alone and together[1].status == "active"
    assert together == [finish_one(job, config), finish_one(walk, config)]


# --------------------------------------------------------------------------- linear work


def _messy(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """~n fixes: walk with a bus, a clock jump, spikes and a cold start every ~1,000 fixes."""
    lat: list[np.ndarray] = []
    lng: list[np.ndarray] = []
    t: list[np.ndarray] = []
    shift = 0.0
    for k in range(max(1, n // 1000)):
        sc = build(seed + k, parts=3, links=["bus", "jump"], spikes=[2, 2, 2], cold=2,
                   bad_last=1, every_s=1.0 if k % 2 else None)  # fmt: skip
        lat.append(sc.lat)
        lng.append(sc.lng)
        t.append(sc.t + shift)
        shift += sc.t[-1] + 10.0
    return np.concatenate(lat), np.concatenate(lng), np.concatenate(t)


def _count_calls(fn: Any, *args: Any) -> tuple[int, int]:
    """Python and C function calls made by ``fn(*args)``, and the deepest Python stack."""
    calls = 0
    depth = deepest = 0

    def prof(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls, depth, deepest
        if event in ("call", "c_call"):
            calls += 1
        if event == "call":
            depth += 1
            deepest = max(deepest, depth)
        elif event == "return":
            depth -= 1

    sys.setprofile(prof)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return calls, deepest


def test_cleaning_makes_the_same_numpy_passes_whatever_the_length() -> None:
    """No loop over fixes, runs or activities and no recursion: cleaning 1,000 or 60,000
    messy fixes (60x the faults) makes exactly the same calls, each one numpy pass
    (element-wise, bincount, cumsum or searchsorted: at most n log n)."""
    counts = []
    for n in (1_000, 60_000):
        lat, lng, t = _messy(n)
        aid = np.zeros(len(t), dtype=np.int64)
        out = clean_batch(lat, lng, t, aid, np.array([WALK]))
        assert out.faults[0, FAULTS.index("vehicle_stretches")] >= n // 1000
        counts.append(_count_calls(clean_batch, lat, lng, t, aid, np.array([WALK])))
    (small, small_depth), (big, big_depth) = counts
    assert small == big, counts
    assert big_depth == small_depth <= 6, counts


def test_a_sparse_recorder_keeps_its_ride() -> None:
    """ "Smart recording" (a fix every 5-10 s, ~60 m apart at speed) never meets a 50 m /
    15 s settled run: measured by the device's own spread it settles at once. Without
    that, a change's review found a 221-fix ride of the bundled FIT files kept 6 fixes."""
    rng = np.random.default_rng(7)
    n = 220
    t = np.cumsum(np.r_[0.0, rng.integers(4, 11, n - 1)])
    east = np.cumsum(np.r_[0.0, 8.5 * np.diff(t)])  # 8.5 m/s due east
    lat = np.full(n, 42.32) + rng.normal(0, 3, n) / 111_320
    lng = -72.64 + east / (111_320 * math.cos(math.radians(42.32)))
    cleaned = clean_batch(lat, lng, t, np.zeros(n, np.int64), np.array([max_speed_ms("Ride")]))
    assert len(cleaned.idx) >= n - 2, len(cleaned.idx)
    # ... and a cold guess before it, 400 m off and 90 s early, still goes.
    lat2 = np.r_[lat[0] + 400 / 111_320, lat]
    lng2 = np.r_[lng[0], lng]
    t2 = np.r_[0.0, t + 90]
    cleaned = clean_batch(
        lat2, lng2, t2, np.zeros(n + 1, np.int64), np.array([max_speed_ms("Ride")])
    )
    assert 0 not in cleaned.idx.tolist() and len(cleaned.idx) >= n - 2


def test_a_jump_while_riding_is_no_cold_guess() -> None:
    """A guess stays put (a network fix jittering); a rider moves. A 150 m GPS jump 40 s
    into a ride (a bridge, a tunnel) must not cost the ride its first 40 s, while the
    same jump after 40 s of a fix sitting 400 m away drops those 40 s."""
    n, metres_per_s = 300, 6.0
    t = np.arange(n, dtype=float)
    east = metres_per_s * t
    east[40:] += 150.0  # the jump lands on fix 40
    lat = np.full(n, 42.32)
    lng = -72.64 + east / (111_320 * math.cos(math.radians(42.32)))
    vmax = np.array([max_speed_ms("Ride")])
    cleaned = clean_batch(lat, lng, t, np.zeros(n, np.int64), vmax)
    assert cleaned.idx[0] == 0 and len(cleaned.idx) == n
    sitting = lng.copy()
    sitting[:40] = lng[40] - 400 / (111_320 * math.cos(math.radians(42.32)))  # a guess
    sitting[:40] += np.random.default_rng(3).normal(0, 3e-5, 40)  # ~2.5 m of jitter
    cleaned = clean_batch(lat, sitting, t, np.zeros(n, np.int64), vmax)
    assert cleaned.idx[0] == 40 and cleaned.faults[0][FAULTS.index("bad_end_fixes")] == 40
