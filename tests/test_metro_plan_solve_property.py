"""The secondary-suppression rounds (``metro_plan._solve_live``) as a Hypothesis
property: over any cells, relations and directions, the solver hides exactly what the
reference (``tests/reference_metro_plan``, the rounds as first written) hides."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.metro_plan import _solve_live
from tests.reference_metro_plan import solve_live


@st.composite
def problems(draw: st.DrawFn) -> tuple:
    n = draw(st.integers(2, 24))
    cells = st.integers(0, n - 1)
    people = np.array(draw(st.lists(st.integers(1, 5), min_size=n, max_size=n)), np.int64)
    trips = people * np.array(draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)), np.int64)
    k = draw(st.integers(2, 3))
    never = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    hidden = (people < k) | never
    rel_total, part_rel, part_cell = [], [], []
    for r in range(draw(st.integers(0, 8))):
        total = draw(cells)
        parts = [c for c in draw(st.lists(cells, min_size=1, max_size=4, unique=True))
                 if c != total] or [(total + 1) % n]  # fmt: skip
        rel_total.append(total)
        part_rel += [r] * len(parts)
        part_cell += parts
    pairs = draw(st.lists(st.tuples(cells, cells).filter(lambda p: p[0] != p[1]), max_size=6))
    sub = np.array([s for s, _ in pairs], np.int64)
    head = np.array([h for _, h in pairs], np.int64)
    ints = [np.array(x, np.int64) for x in (rel_total, part_rel, part_cell)]
    return trips, people, hidden, never, *ints, k, (sub, head)


@settings(max_examples=300, deadline=None)
@given(problem=problems())
def test_the_rounds_hide_what_the_reference_hides(problem: tuple) -> None:
    np.testing.assert_array_equal(_solve_live(*problem), solve_live(*problem))
