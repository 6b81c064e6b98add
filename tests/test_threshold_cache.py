"""The incremental threshold (``heatmetro.site_builder.threshold_cache``) as a Hypothesis
property: after any change of athletes (rides redrawn, removed as by an opt-out, new
athletes), redoing the threshold near the changes gives exactly the full computation's
cells, heat bits and athletes, and the same cells meeting the threshold. A cell drawn
by a rebuild is then one a build from scratch draws: at least ``min_athletes`` nearby.
"""

from __future__ import annotations

from typing import Any

import h3.api.basic_int as h3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.site_builder import threshold_cache
from heatmetro.site_builder.threshold_cache import (
    LayerThresholds,
    ThresholdState,
    incremental_threshold,
)
from heatmetro.site_builder.window import LayerHeat, Thinned, nearby_athletes, threshold
from heatmetro.state.records import HEAT_DTYPE, group_sum, with_athlete

ORIGIN = h3.latlng_to_cell(42.32, -72.63, 13)
# Street ends: any two cells of a ~600 m disk. A change near one street leaves the far
# ones out of reach, so both the recomputed region and the kept one are exercised.
ENDS = sorted(h3.grid_disk(ORIGIN, 45))


@st.composite
def street(draw: st.DrawFn) -> list[int]:
    a, b = draw(st.sampled_from(ENDS)), draw(st.sampled_from(ENDS))
    return h3.grid_path_cells(a, b) if a != b else [a]


@st.composite
def ride(draw: st.DrawFn, streets: list[list[int]]) -> list[int]:
    """Part of a street, each cell swapped for a neighbour now and then (lanes, GPS)."""
    cells = streets[draw(st.integers(0, len(streets) - 1))]
    lo = draw(st.integers(0, len(cells) - 1))
    hi = draw(st.integers(lo + 1, len(cells)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    jitter = draw(st.sampled_from([0.0, 0.3, 0.7]))
    out = []
    for c in cells[lo:hi]:
        if rng.random() < jitter:
            ring = h3.grid_disk(c, 1)
            c = ring[int(rng.integers(len(ring)))]
        out.append(c)
    return out


def rows_of(rides: dict[int, list[int]], counts: dict[int, int]) -> np.ndarray:
    parts = [np.zeros(0, np.dtype([("athlete", "<i4"), *HEAT_DTYPE.descr]))]
    for a, cells in sorted(rides.items()):
        arr = np.zeros(len(cells), HEAT_DTYPE)
        arr["cell"] = cells
        arr["n"] = counts.get(a, 1)
        parts.append(with_athlete(arr, a))
    return group_sum(np.concatenate(parts), ("athlete", "cell"), ("n",))


@st.composite
def change(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows before, rows after, the cells where an athlete's row changed)."""
    streets = draw(st.lists(street(), min_size=1, max_size=4))
    n = draw(st.integers(1, 14))
    before = {a: draw(ride(streets)) for a in range(n)}
    counts = {a: draw(st.integers(1, 6)) for a in range(n + 4)}
    after = dict(before)
    for a in range(n):
        what = draw(st.sampled_from(["keep", "keep", "keep", "gone", "redrawn", "more"]))
        if what == "gone":  # an opt-out, a deleted account, every ride hidden
            del after[a]
        elif what == "redrawn":
            after[a] = draw(ride(streets))
        elif what == "more":  # one more ride: the rows it adds to or leaves alone
            after[a] = before[a] + draw(ride(streets))
    for a in range(n, n + draw(st.integers(0, 3))):  # new athletes
        after[a] = draw(ride(streets))
    old, new = rows_of(before, counts), rows_of(after, counts)
    # As ``window_cache.changed_cells``: the cells of rows found on one side only.
    both = np.concatenate([old, new])
    distinct, count = np.unique(both, return_counts=True)
    return old, new, distinct["cell"][count == 1]


def assert_same(got: LayerHeat, want: LayerHeat) -> None:
    np.testing.assert_array_equal(got.cells, want.cells)
    # Bit for bit: the published tiles' bytes depend on them.
    np.testing.assert_array_equal(got.heat.view(np.uint64), want.heat.view(np.uint64))
    np.testing.assert_array_equal(got.athletes, want.athletes)
    assert got.heat.dtype == want.heat.dtype and got.athletes.dtype == want.athletes.dtype


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    data=change(),
    k=st.integers(1, 4),
    cap=st.integers(1, 5),
    ring=st.integers(0, 2),
    more=st.lists(st.sampled_from(ENDS), max_size=5),
)
def test_a_rebuild_near_the_changes_is_the_full_computation(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], k: int, cap: int, ring: int, more: list[int]
) -> None:
    before, after, changed = data
    old, old_open = threshold("all", before, k, cap, threshold_ring=ring)
    want, want_open = threshold("all", after, k, cap, threshold_ring=ring)
    previous = LayerThresholds()
    previous("all", before, k, cap, threshold_ring=ring)
    got = incremental_threshold(
        "all", after, k, cap, threshold_ring=ring, previous=previous.states["all"],
        changed=changed, full_share=np.inf,  # never falls back: the splice itself is tested
    )  # fmt: skip
    assert got is not None or len(after) == 0
    if got is not None:
        assert_same(got.drawn, want)
        np.testing.assert_array_equal(got.open_cells, want_open)
        # And back, from the state the rebuild kept (its votes spliced, not recomputed).
        back = incremental_threshold(
            "all", before, k, cap, threshold_ring=ring, previous=got, changed=changed,
            full_share=np.inf,
        )  # fmt: skip
        assert back is not None or len(before) == 0
        if back is not None:
            assert_same(back.drawn, old)
            np.testing.assert_array_equal(back.open_cells, old_open)
    # The per-build object: each layer from the last build's state, or computed again;
    # redone near the changes of every layer (here: cells that did not change as well).
    other = np.array(more, np.uint64)
    rebuild = LayerThresholds(previous.states, {"all": changed, "ride": changed, "x": other})
    assert_same(rebuild("all", after, k, cap, threshold_ring=ring), want)
    ride = rebuild("ride", after, k, cap, threshold_ring=ring)  # the same rows: reused
    assert ride.layer == "ride"
    assert_same(ride, want)
    assert_same(old, previous.states["all"].drawn)
    np.testing.assert_array_equal(old_open, previous.states["all"].open_cells)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=change(), k=st.integers(1, 4), ring=st.integers(1, 2), pick=st.data())
def test_counts_asked_for_only_are_the_counts_of_all(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], k: int, ring: int, pick: st.DataObject
) -> None:
    """``nearby_athletes(only=...)``: the counts of those cells are the ones every count
    is computed for (a rebuild reads no other)."""
    rows = data[1]
    if not len(rows):
        return
    cells, inv = np.unique(rows["cell"], return_inverse=True)
    near_cells, counts = nearby_athletes(rows["athlete"], cells, inv.reshape(-1), ring, k)
    only = np.array(
        sorted(set(pick.draw(st.lists(st.sampled_from(near_cells.tolist()), max_size=30)))),
        np.uint64,
    )
    got_cells, got = nearby_athletes(rows["athlete"], cells, inv.reshape(-1), ring, k, only)
    np.testing.assert_array_equal(got_cells, near_cells)
    asked = np.isin(near_cells, only)
    np.testing.assert_array_equal(got[asked], counts[asked])


def test_a_rebuild_that_would_draw_a_closed_cell_is_computed_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last check of ``incremental_threshold``: a cell that closed and is still drawn
    (a fault of the splice) sends the layer to a full computation."""
    street_cells = h3.grid_path_cells(ENDS[0], ENDS[-1])
    before = rows_of({0: street_cells, 1: street_cells}, {})
    after = rows_of({0: street_cells}, {})  # one of the two gone: the street closes
    previous = LayerThresholds()
    previous("all", before, 2, 5, threshold_ring=1)
    state = previous.states["all"]
    changed = np.array(sorted(set(street_cells)), np.uint64)

    def rebuild() -> ThresholdState | None:
        return incremental_threshold(
            "all",
            after,
            2,
            5,
            threshold_ring=1,
            previous=state,
            changed=changed,
            full_share=np.inf,
        )

    fine = rebuild()
    assert fine is not None and len(fine.drawn.cells) == 0
    real = threshold_cache.incremental_thin

    def keeps_a_closed_cell(*args: Any) -> tuple[LayerHeat, Thinned]:
        drawn, thinned = real(*args)
        cell = np.array([state.drawn.cells[0]], np.uint64)
        return LayerHeat("all", cell, np.ones(1), np.ones(1, np.uint32)), thinned

    monkeypatch.setattr(threshold_cache, "incremental_thin", keeps_a_closed_cell)
    assert rebuild() is None
