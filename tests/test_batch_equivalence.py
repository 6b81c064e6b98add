"""The batched hot path must give exactly what one-by-one trimming gives, whatever the
batch: a replay after a crash batches activities differently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.core.config import Config
from heatmetro.core.contract import ActivityEvent, parse_event
from heatmetro.flows.batch import TrimJob, finish_batch
from heatmetro.flows.importers.valleybike import valleybike_events
from heatmetro.flows.importers.valleybike_csv import bundled_csvs
from heatmetro.state.records import PATH_DTYPE, from_blob
from heatmetro.state.settings import EffectiveZone
from tests.reference_trim import finish_one

CONFIG = Config(salt="batch-test")


def _job(i: int, lat: np.ndarray, lng: np.ndarray, t: np.ndarray, cut: float, zones=()) -> TrimJob:  # type: ignore[no-untyped-def]
    base = {
        "activity_id": f"x{i}",
        "athlete_id": "a",
        "updated_ms": 1,
        "sport_type": "Ride",
        "layer": "ride",
        "commute": bool(i % 2),
        "start_s": 1_600_000_000 + 3600 * i,
        "utc_offset_s": -14400,
        "month": "2020-09",
        "hide_override_m": None,
        "cut_start_m": cut,
        "cut_end_m": cut / 2,
        "zone_key": "[]",
        "fixes_in": len(t),
        "max_speed_ms": 30.0,
    }
    return TrimJob(base, lat, lng, t, tuple(zones), "test", i)


@pytest.fixture(scope="module")
def real_jobs() -> list[TrimJob]:
    june = [p for p in bundled_csvs() if "june2018" in p.name]
    jobs: list[TrimJob] = []
    for event in valleybike_events(june):
        ev = parse_event(__import__("orjson").dumps(event))
        if isinstance(ev, ActivityEvent) and len(jobs) < 150:
            tr = ev.streams
            i, mid = len(jobs), len(tr.t) // 2
            # every fifth ride has a privacy zone around its middle fix
            zones = (
                (EffectiveZone(float(tr.lat[mid]), float(tr.lng[mid]), 150.0),)
                if i % 5 == 0
                else ()
            )
            jobs.append(_job(i, tr.lat, tr.lng, tr.t, 200.0 + i % 7 * 20, zones))
    return jobs


def test_real_rides_batched_equal_one_by_one(real_jobs: list[TrimJob]) -> None:
    one = [finish_one(j, CONFIG) for j in real_jobs]
    for size in (1, 7, 64, len(real_jobs)):
        batched = []
        for k in range(0, len(real_jobs), size):
            batched += finish_batch(real_jobs[k : k + size], CONFIG)
        assert batched == one, f"batch size {size}"
    # and the comparison is not vacuous: real rides leave cells and crossings
    active = [c for c in one if c.status == "active"]
    assert len(active) > 40
    assert sum(len(from_blob(c.path, PATH_DTYPE)) for c in active) > 1000
    assert sum(len(c.edges) > 0 for c in active) > len(active) // 2


def _track(seed: int, n: int, teleport: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    heading = np.cumsum(rng.normal(0, 0.3, n))
    step = rng.uniform(0, 12, n) * (rng.random(n) > 0.1)  # some repeated fixes
    lat = 42.32 + np.cumsum(step * np.cos(heading)) / 111_195
    lng = -72.63 + np.cumsum(step * np.sin(heading)) / (111_195 * math.cos(math.radians(42.32)))
    t = np.cumsum(rng.uniform(0.3, 5.7, n))  # fractional seconds, like 1 Hz devices drift
    if seed % 2:  # a clock frozen now and then (equal times while moving)
        t = np.maximum.accumulate(np.where(rng.random(n) < 0.2, 0.0, t))
    if teleport and n > 10:
        lat[n // 2] += 0.05  # 5 km jump for one fix
    return np.round(lat, 7), np.round(lng, 7), t


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 400), min_size=1, max_size=8),
    split=st.integers(1, 8),
    teleport=st.lists(st.booleans(), min_size=8, max_size=8),
    zone=st.booleans(),
)
def test_any_batching_gives_the_same_result(
    sizes: list[int], split: int, teleport: list[bool], zone: bool
) -> None:
    jobs = []
    for i, n in enumerate(sizes):
        lat, lng, t = _track(i, n, teleport[i])
        zones = (
            (EffectiveZone(float(lat[n // 2]), float(lng[n // 2]), 60.0),)
            if zone and i == 0
            else ()
        )
        jobs.append(_job(i, lat, lng, t, 50.0 * (i % 3), zones))
    one = [finish_one(j, CONFIG) for j in jobs]
    batched = []
    for k in range(0, len(jobs), split):
        batched += finish_batch(jobs[k : k + split], CONFIG)
    assert batched == one
