"""``distinct`` is ``np.unique`` of a 1-D array, whatever the dtype or repeats."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from heatmetro.core.arrays import distinct

values = st.sampled_from([np.uint64, np.int64, np.uint32, np.float64]).flatmap(
    lambda dt: hnp.arrays(
        dt, st.integers(0, 60), elements=st.integers(0, 7) if dt != np.float64 else st.floats(-3, 3)
    )
)


@given(values)
def test_distinct_is_np_unique(a: np.ndarray) -> None:
    got, want = distinct(a), np.unique(a)
    assert got.dtype == want.dtype and np.array_equal(got, want)
