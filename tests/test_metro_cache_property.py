"""The incremental Metro sums (``heatmetro.site_builder.metro_cache``) as a Hypothesis property.

A rebuild after some athletes changed (records added, dropped or altered), left, or
joined recounts only the edges of their old and new records and keeps the other
groups' sums from the cache file. Its sums must equal a full count of the new window
exactly, float speed sums included (the published speeds, rounded, would otherwise
flip on a rounding edge), for every table the Metro files use, with and without the
per-person trip bound of differential privacy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.metro_cache import MetroCache
from heatmetro.site_builder.metro_tables import DirectionSums, direction_sums
from heatmetro.state.records import EDGE_DTYPE, with_athlete

TABLES = [
    (("a", "b"), True),
    (("a", "b", "month"), True),
    (("a", "b", "hour", "weekend"), False),
    (("a", "b", "hour"), False),
]
WINDOW_DTYPE = np.dtype([*with_athlete(np.zeros(0, EDGE_DTYPE), 0).dtype.descr,
                         ("month", "<u2"), ("ride", "u1")])  # fmt: skip
EDGES = [(10, 11), (10, 12), (11, 12), (12, 13), (20, 21)]

Athletes = dict[str, list[tuple[int, ...]]]


def record() -> st.SearchStrategy[tuple[int, ...]]:
    return st.tuples(
        st.integers(0, len(EDGES) - 1),  # edge
        st.integers(0, 1),  # fwd
        st.integers(0, 23),  # hour
        st.integers(0, 1),  # weekend
        st.integers(0, 1),  # commute
        st.integers(0, 1),  # ebike
        st.integers(0, 3),  # trips (0: a record that counts nobody)
        st.integers(0, 10**6),  # speed_sum, in micro-units: any float bits
        st.integers(0, 3),  # speed_n
        st.integers(24240, 24242),  # month
        st.integers(0, 1),  # ride
    )


def athletes(ids: list[str]) -> st.SearchStrategy[Athletes]:
    return st.fixed_dictionaries({a: st.lists(record(), min_size=1, max_size=6) for a in ids})


def window(people: Athletes) -> np.ndarray:
    """The layer's records as the snapshot holds them: athletes indexed in id order."""
    rows = []
    for index, athlete_id in enumerate(sorted(people)):
        for e, fwd, hour, weekend, commute, ebike, trips, speed, n, month, ride in people[
            athlete_id
        ]:
            a, b = EDGES[e]
            rows.append((index, a, b, fwd, hour, weekend, commute, ebike, trips,
                         speed / 997.0, n, month, ride))  # fmt: skip
    return np.array(rows, dtype=WINDOW_DTYPE)


@st.composite
def change(draw: st.DrawFn) -> tuple[Athletes, Athletes]:
    """A window of up to 8 athletes, and the same after some change, leave or join."""
    ids = [f"p{i}" for i in range(draw(st.integers(1, 8)))]
    before = draw(athletes(ids))
    after = dict(before)
    for a in ids:
        what = draw(st.sampled_from(["same", "same", "same", "drop", "alter", "append"]))
        if what == "drop" and len(after) > 1:
            del after[a]
        elif what == "alter":
            after[a] = draw(st.lists(record(), min_size=1, max_size=6))
        elif what == "append":
            after[a] = [*before[a], draw(record())]
    joiners = draw(st.lists(st.sampled_from(["p0a", "p3a", "p9", "a"]), unique=True, max_size=2))
    after.update(draw(athletes(joiners)))
    return before, after


def same(x: DirectionSums, y: DirectionSums) -> None:
    assert list(x.keys) == list(y.keys)
    for k in x.keys:
        assert x.keys[k].dtype == y.keys[k].dtype
        np.testing.assert_array_equal(x.keys[k], y.keys[k])
    for part in ("total", "kinds", "bikes", "bands"):
        cx, cy = getattr(x, part), getattr(y, part)
        assert (cx is None) == (cy is None), part
        if cx is None:
            continue
        for name in ("trips", "people", "speed_sum", "speed_n"):
            ax, ay = getattr(cx, name), getattr(cy, name)
            assert ax.dtype == ay.dtype, (part, name)
            # Bit for bit: the float sums must be added in the same order as a full count.
            assert ax.tobytes() == ay.tobytes(), (part, name)


def layers(arr: np.ndarray, ride: str) -> dict[str, np.ndarray]:
    """``all`` and a second layer: its rides (``part``), a copy of every record (``all``:
    the cache shares the two layers' sums, as with ValleyBike's), or as many records
    that differ (``shifted``: an hour later)."""
    second = arr[arr["ride"] == 1] if ride == "part" else arr.copy()
    if ride == "shifted":
        second["hour"] = (second["hour"] + 1) % 24
    return {"all": arr, "ride": second}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    windows=change(),
    max_trips=st.sampled_from([None, 2]),
    twins=st.tuples(*[st.sampled_from(["part", "all", "shifted"])] * 2),
)
def test_incremental_sums_equal_a_full_count(
    windows: tuple[Athletes, Athletes], max_trips: int | None, twins: tuple[str, str]
) -> None:
    before, after = (layers(window(w), t) for w, t in zip(windows, twins, strict=True))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metro_cache.npz"
        first = MetroCache(path)
        first.open(max_trips)
        for layer, arr in before.items():
            for key, bands in TABLES:
                first.sums(layer, arr, key, with_bands=bands)
        first.save()
        again = MetroCache(path)
        again.open(max_trips)
        assert again.note == "", again.note
        for layer, arr in after.items():
            for key, bands in TABLES:
                incremental = again.sums(layer, arr, key, with_bands=bands)
                same(incremental, direction_sums(arr, key, max_trips, with_bands=bands))
