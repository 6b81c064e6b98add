"""``window._disks`` keeps the disks of its last calls: whatever the calls, each answer is
``grid_disks``'s (first calls, partly known cells, a cache started over when full)."""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.core.h3_vector import grid_disks
from heatmetro.site_builder import window

# A town's worth of res-11 cells to draw the calls' cells from.
POOL = np.array(sorted(h3.grid_disk(h3.latlng_to_cell(42.32, -72.63, 11), 6)), np.uint64)


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.sets(st.integers(0, len(POOL) - 1), max_size=40), st.integers(1, 2)),
        min_size=1,
        max_size=6,
    ),
    cap=st.integers(1, 200),
)
def test_disks_are_grid_disks_whatever_the_calls(
    calls: list[tuple[set[int], int]], cap: int
) -> None:
    saved = dict(window._DISK_CACHE)
    window._DISK_CACHE.clear()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(window, "_DISK_CACHE_CELLS", cap)
            for picks, ring in calls:
                cells = POOL[sorted(picks)]
                np.testing.assert_array_equal(window._disks(cells, ring), grid_disks(cells, ring))
    finally:
        window._DISK_CACHE.clear()
        window._DISK_CACHE.update(saved)
