"""Published decimals (speeds, bearings) rounded by arrays as ``round`` rounds each value.

The CSV, GeoJSON and GeoPackage print the float ``round(v, places)`` gives; the Metro
writer rounds whole columns at once and sends only values near a half step through
``round``. Any float, halves and their neighbours included, must come out the same.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from heatmetro.site_builder.metro_rows import decimal_array

NEAR_HALVES = (
    st.integers(0, 10**6)
    .map(lambda k: (k + 0.5) / 100)
    .flatmap(lambda v: st.sampled_from([v, np.nextafter(v, 0.0), np.nextafter(v, np.inf), v / 10]))
)


@given(
    values=st.lists(st.floats(allow_nan=True) | NEAR_HALVES, max_size=50),
    places=st.sampled_from([1, 2]),
)
def test_decimal_array_is_round_of_each_value(values: list[float], places: int) -> None:
    got = decimal_array(np.array(values, dtype=np.float64), places)
    want = np.array([round(float(v), places) for v in values], dtype=np.float64)
    assert got.tobytes() == want.tobytes() or np.array_equal(got, want, equal_nan=True)
    # Each value's text as the CSV writer prints it.
    assert [repr(v) for v in got.tolist()] == [repr(v) for v in want.tolist()]
