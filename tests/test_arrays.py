"""``distinct`` is ``np.unique`` of a 1-D array, whatever the dtype or repeats."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from heatmetro.core.arrays import concat_rows, distinct, take_rows

values = st.sampled_from([np.uint64, np.int64, np.uint32, np.float64]).flatmap(
    lambda dt: hnp.arrays(
        dt, st.integers(0, 60), elements=st.integers(0, 7) if dt != np.float64 else st.floats(-3, 3)
    )
)


@given(values)
def test_distinct_is_np_unique(a: np.ndarray) -> None:
    got, want = distinct(a), np.unique(a)
    assert got.dtype == want.dtype and np.array_equal(got, want)


# A packed record dtype (unaligned fields, as VOTE_DTYPE) and a plain one.
_PACKED = np.dtype([("cell", "<u8"), ("group", "u1"), ("share", "<f8")])
records = hnp.arrays(
    _PACKED,
    st.integers(0, 30),
    elements=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 255), st.floats(-9, 9)),
)


@given(records, st.data())
def test_take_rows_is_numpy_indexing(a: np.ndarray, data: st.DataObject) -> None:
    mask = data.draw(hnp.arrays(bool, len(a)))
    index = data.draw(st.lists(st.integers(0, max(len(a) - 1, 0)), max_size=len(a) and 20))
    step = data.draw(st.integers(1, 3))  # a strided view too
    for arr, which in ((a, mask), (a, np.array(index, np.int64)), (a[::step], mask[::step])):
        got, want = take_rows(arr, which), arr[which]
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@given(st.lists(records, min_size=1, max_size=4))
def test_concat_rows_is_np_concatenate(parts: list[np.ndarray]) -> None:
    got, want = concat_rows(parts), np.concatenate(parts)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    plain = [p["cell"] for p in parts]  # plain values, and mixed dtypes: numpy's own rules
    assert np.array_equal(concat_rows(plain), np.concatenate(plain))
    mixed = [*plain, np.arange(3, dtype=np.int32)]
    got, want = concat_rows(mixed), np.concatenate(mixed)
    assert got.dtype == want.dtype and np.array_equal(got, want)
