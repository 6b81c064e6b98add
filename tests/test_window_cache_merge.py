"""Merging cached parts with fresh ones (``window_cache.merge_parts``) when layers repeat.

A cache file stores a layer equal to ``all`` once (every ride a ``ride``), so the parts
read back share one array. The merge shares its result too, but only where the fresh
rows repeat as well: a changed athlete who now runs must not be drawn on the ride layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from heatmetro.site_builder.load import WindowParts, part_dtypes
from heatmetro.site_builder.window_cache import merge_parts, read_cache, write_cache

DTYPES = part_dtypes([])


def parts(heat: dict[str, list[tuple[int, int, int]]]) -> WindowParts:
    """Parts of athletes ``a0, a1, ...`` with (athlete, cell, n) heat rows per layer."""
    ids = sorted({f"a{a}" for rows in heat.values() for a, _, _ in rows})
    arrays = {name: np.zeros(0, dt) for name, dt in DTYPES.items()}
    for layer, rows in heat.items():
        arr = np.zeros(len(rows), DTYPES[f"heat/{layer}"])
        for i, (a, cell, n) in enumerate(sorted(rows)):
            arr[i] = (ids.index(f"a{a}"), cell, n)
        arrays[f"heat/{layer}"] = arr
    n = len(ids)
    return WindowParts(ids, np.ones(n, np.int64), np.ones(n, bool), np.ones(n, bool), arrays)


def test_a_shared_layer_stays_shared_only_while_the_fresh_rows_repeat_it(tmp_path: Path) -> None:
    rides = [(0, 11, 1), (0, 12, 2), (2, 13, 1)]
    old = parts({"all": rides, "ride": rides})
    path = tmp_path / "cache.npz"
    write_cache(path, "key", old, {a: b"s" for a in old.ids})
    cached, note = read_cache(path, "key", DTYPES)
    assert cached is not None, note
    stored = cached.parts
    assert stored.arrays["heat/ride"] is stored.arrays["heat/all"]  # stored once
    keep = np.array([True, False])  # a2 changed
    # a1 (new) and a2 now run: in ``all``, not in ``ride``.
    runs = parts({"all": [(1, 14, 1), (2, 15, 3)], "run": [(1, 14, 1), (2, 15, 3)]})
    got = merge_parts(stored, keep, runs)
    # The same merge from arrays that share nothing.
    copies = {k: v.copy() for k, v in stored.arrays.items()}
    unshared = WindowParts(stored.ids, stored.activities, stored.has_rows, stored.has_paths, copies)
    want = merge_parts(unshared, keep, runs)
    assert got.ids == want.ids == ["a0", "a1", "a2"]
    for name, arr in want.arrays.items():
        np.testing.assert_array_equal(got.arrays[name], arr, err_msg=name)
    assert got.arrays["heat/ride"].tolist() == [(0, 11, 1), (0, 12, 2)]
    assert len(got.arrays["heat/all"]) == 4
    # A changed athlete who still only rides: the merge is done once and shared.
    more = parts({"all": [(2, 16, 1)], "ride": [(2, 16, 1)]})
    again = merge_parts(stored, keep, more)
    assert again.arrays["heat/ride"] is again.arrays["heat/all"]
    assert again.arrays["heat/all"]["cell"].tolist() == [11, 12, 16]
