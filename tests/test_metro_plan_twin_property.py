"""The Metro plan's twin shortcut (``metro_plan.EdgePlan._twin``) as a Hypothesis property.

A layer with exactly ``all``'s rows and counts, the others empty (a bike-share's
``ride``: every activity is a ride), is solved once, as ``all``, and takes ``all``'s
flags. Over any records, every flag of every table and layer must be what the plan
solved with each layer apart hides; and a near-twin (one record fewer, one trip fewer,
one person other or more) must not be taken for a twin.
"""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.metro_plan import OTHER, TABLE_BY, EdgePlan, other_records
from heatmetro.site_builder.metro_tables import direction_sums
from tests.test_metro_cache_property import athletes, window

KINDS = ("twin", "fewer", "trips", "person", "split", "apart")


@st.composite
def layers(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], str]:
    """``all``, a second layer (its twin or a near-twin: one record fewer, a trip fewer,
    a record by another person, a trip of a record by another person: the same rows and
    trips, a person more; or a part of it) and the other layers' records, as
    ``metro_rows.edge_plan`` gives them (``_other``: what the second layer lacks)."""
    ids = [f"p{i}" for i in range(draw(st.integers(1, 8)))]
    arr = window(draw(athletes(ids)))
    # A run layer has "not a ride" counts; a winter layer holds rides and others.
    sport = draw(st.sampled_from(["ride", "run", "winter"]))
    if sport != "winter":
        arr["ride"] = sport == "ride"
    kind = draw(st.sampled_from(KINDS))
    i = draw(st.integers(0, len(arr) - 1))
    if kind == "split":  # a record of two trips or more in both ...
        arr["trips"][i] = max(int(arr["trips"][i]), 2)
    second = arr.copy()
    if kind == "fewer":
        second = np.delete(second, i)
    elif kind == "trips":
        second["trips"][i] -= min(int(second["trips"][i]), 1)
    elif kind == "person":
        second["athlete"][i] = second["athlete"].max() + 1
    elif kind == "split":  # ... and one of them by someone else in the second layer
        extra = second[i : i + 1].copy()
        extra["trips"], extra["athlete"] = 1, second["athlete"].max() + 1
        second["trips"][i] -= 1
        second = np.concatenate([second, extra])
    elif kind == "apart":
        second = second[second["commute"] == 1]
    arrs = {"all": arr, sport: second, "water": arr[:0]}
    other = other_records(arrs)
    assert other is not None
    return {**arrs, OTHER: other}, kind


def plan(arrs: dict[str, np.ndarray], k: int) -> EdgePlan:
    return EdgePlan(lambda layer, key, bands: direction_sums(arrs[layer], key, None,
                    with_bands=bands), list(arrs), ("a", "b"), k)  # fmt: skip


def flags(p: EdgePlan, names: list[str]) -> dict[tuple[str, str], list[np.ndarray]]:
    out = {}
    for table in TABLE_BY:
        for layer in names:
            hide, sub = p.hides(table, layer)
            out[(table, layer)] = [hide, *(sub[k] for k in sorted(sub))]
    return out


def same_counts(arrs: dict[str, np.ndarray], a: str, b: str) -> bool:
    """Whether layers ``a`` and ``b`` count alike in every table (what a near-twin may
    still do: a record without trips fewer, a person other where they had no other)."""
    for by in TABLE_BY.values():
        x = direction_sums(arrs[a], ("a", "b", *by), None, with_bands=True)
        y = direction_sums(arrs[b], ("a", "b", *by), None, with_bands=True)
        if len(x) != len(y) or any(not np.array_equal(x.keys[k], y.keys[k]) for k in x.keys):
            return False
        for part in ("total", "kinds", "bikes", "bands"):
            cx, cy = getattr(x, part), getattr(y, part)
            if not (np.array_equal(cx.trips, cy.trips) and np.array_equal(cx.people, cy.people)):
                return False
    return True


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layers(), k=st.integers(2, 3))
def test_a_twin_solved_once_hides_what_a_solve_apart_hides(
    case: tuple[dict[str, np.ndarray], str], k: int
) -> None:
    arrs, kind = case
    names = list(arrs)
    second = names[1]
    shortcut = plan(arrs, k)
    got = flags(shortcut, names)
    with patch.object(EdgePlan, "_twin", lambda _self: None):
        want = flags(plan(arrs, k), names)
    for name, arrays in want.items():
        for x, y in zip(got[name], arrays, strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"{kind}: {name}")
    twin = shortcut._twin()
    # (A layer of other sports may not be: "not a ride" counts of k people or more.)
    if kind == "twin" and second == "ride" and len(shortcut.sums("edge", "all")):
        assert twin == second, "a layer with all's very records is a twin"
    elif twin is not None:  # a near-twin is one only where its counts are all's too
        assert same_counts(arrs, "all", second), f"{kind} taken for a twin"
