"""Summing heat by cell: the run-length path for sorted cells against ``np.unique``'s."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.tile_levels import sum_by_cell
from heatmetro.state.aggregates import cells_to_parent


def by_unique(cells: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What ``sum_by_cell`` computed before: a sort of every input."""
    unique, inverse = np.unique(cells, return_inverse=True)
    return unique, np.bincount(inverse.reshape(-1), weights=heat, minlength=unique.size)


heats = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.1, 1 / 3, -0.0, 1e-300])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), heats), max_size=60),
    st.booleans(),
    st.integers(0, 12),
)
def test_the_sums_of_a_sort_bit_for_bit(
    pairs: list[tuple[int, float]], presort: bool, res: int
) -> None:
    base = np.uint64(0x08D_2A10_7289_4BFF)  # a res-13 cell: children of it vary in the low digits
    cells = base + np.array([c for c, _ in pairs], dtype=np.uint64) * np.uint64(8)
    heat = np.array([h for _, h in pairs], dtype=np.float64)
    if presort:  # the layers' own cells, and so their parents, come sorted
        order = np.argsort(cells, kind="stable")
        cells, heat = cells[order], heat[order]
    for c in (cells, cells_to_parent(cells, res)):
        got, want = sum_by_cell(c, heat), by_unique(c, heat)
        assert got[0].dtype == want[0].dtype and got[1].dtype == want[1].dtype
        assert got[0].tobytes() == want[0].tobytes()
        assert got[1].tobytes() == want[1].tobytes()
