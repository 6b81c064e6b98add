"""Merging cached parts with fresh ones (``window_cache.merge_parts``) when layers repeat.

A cache file stores a layer equal to ``all`` once (every ride a ``ride``), so the parts
read back share one array. The merge shares its result too, but only where the fresh
rows repeat as well: a changed athlete who now runs must not be drawn on the ride layer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h3.api.basic_int as h3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.site_builder import window_cache_files
from heatmetro.site_builder.load import WindowParts, part_dtypes
from heatmetro.site_builder.split_rows import SplitRows, heat_rows
from heatmetro.site_builder.threshold_cache import ThresholdState, threshold_state
from heatmetro.site_builder.window import Thinned, region_index
from heatmetro.site_builder.window_cache import (
    athlete_starts,
    changed_cells,
    merge_parts,
    read_cache,
    write_cache,
)

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
    path = tmp_path / "window_cache"
    write_cache(path, "key", old, {a: b"s" for a in old.ids})
    cached, note = read_cache(path, "key", DTYPES)
    assert cached is not None, note
    stored = cached.parts
    (pack,) = stored.sources
    assert pack.arrays["heat/ride"] is pack.arrays["heat/all"]  # stored once
    keep = np.array([True, False])  # a2 changed
    # a1 (new) and a2 now run: in ``all``, not in ``ride``.
    runs = parts({"all": [(1, 14, 1), (2, 15, 3)], "run": [(1, 14, 1), (2, 15, 3)]})
    got = merge_parts(stored, keep, runs)
    lazy = merge_parts(stored, keep, runs, lazy=True)
    assert heat_rows(lazy.arrays, "heat/ride") is not heat_rows(lazy.arrays, "heat/all")
    assert lazy.arrays["heat/ride"].tolist() == got.arrays["heat/ride"].tolist()
    # The same merge from arrays that share nothing.
    copies = {k: v.copy() for k, v in pack.arrays.items()}
    unshared = WindowParts(pack.ids, pack.activities, pack.has_rows, pack.has_paths, copies)
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
    lazy_again = merge_parts(stored, keep, more, lazy=True)
    assert heat_rows(lazy_again.arrays, "heat/ride") is heat_rows(lazy_again.arrays, "heat/all")
    assert lazy_again.arrays["heat/ride"] is lazy_again.arrays["heat/all"]
    assert again.arrays["heat/all"]["cell"].tolist() == [11, 12, 16]


# Up to 6 athletes, each a few (cell, n) heat rows per layer; ``keep`` per old athlete.
_ROWS = st.lists(st.tuples(st.integers(0, 5), st.integers(1, 9), st.integers(1, 4)), max_size=14)


def _naive_merge(old: WindowParts, keep: np.ndarray, fresh: WindowParts, name: str) -> list:
    """The merged rows of one array the plain way: every kept old athlete's and every
    fresh athlete's rows, by id, each athlete renumbered to its place among them."""
    ids = sorted([a for a, k in zip(old.ids, keep.tolist(), strict=True) if k] + fresh.ids)
    rows = []
    for new_index, a in enumerate(ids):
        side = fresh if a in fresh.ids else old
        arr = side.arrays[name]
        mine = arr[arr["athlete"] == side.ids.index(a)]
        rows += [(new_index, *r[1:]) for r in mine.tolist()]
    return rows


@settings(max_examples=150, deadline=None)
@given(before=_ROWS, after=_ROWS, keep_bits=st.lists(st.booleans(), min_size=6, max_size=6))
def test_merge_and_changed_cells_match_the_plain_way(
    before: list[tuple[int, int, int]], after: list[tuple[int, int, int]], keep_bits: list[bool]
) -> None:
    def distinct_rows(rows: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        return list({(a, c): (a, c, n) for a, c, n in rows}.values())  # one per (athlete, cell)

    old = parts({"all": distinct_rows(before)})
    keep = np.array(keep_bits[: len(old.ids)], dtype=bool)
    # Fresh athletes: the changed old ones and new ones, disjoint from the kept.
    kept = {a for a, k in zip(old.ids, keep.tolist(), strict=True) if k}
    # A kept athlete's number goes to a new athlete (a6..); a changed one keeps some
    # of its rows (odd cells) and has those of ``after``.
    fresh_rows = [(a + 6 if f"a{a}" in kept else a, c, n) for a, c, n in after]
    fresh_rows += [(a, c, n) for a, c, n in before if f"a{a}" not in kept and c % 2]
    fresh = parts({"all": distinct_rows(fresh_rows)})
    rows = fresh.arrays["heat/all"]  # by athlete index ("a10" before "a2"), as stored
    sorted_rows = rows[np.lexsort((rows["cell"], rows["athlete"]))]
    fresh = replace(fresh, arrays={**fresh.arrays, "heat/all": sorted_rows})
    assert not kept & set(fresh.ids)
    got = merge_parts(old, keep, fresh)
    assert got.ids == sorted(kept | set(fresh.ids))
    assert got.arrays["heat/all"].tolist() == _naive_merge(old, keep, fresh, "heat/all")
    # Lazily: the same arrays, and a region's rows read from the runs are the whole's.
    lazy = merge_parts(old, keep, fresh, lazy=True)
    split = heat_rows(lazy.arrays, "heat/all")
    assert isinstance(split, SplitRows)
    assert len(split) == len(got.arrays["heat/all"])
    cells = np.unique(got.arrays["heat/all"]["cell"])
    region = np.unique(np.concatenate([cells[::2], [10**9]])).astype(np.uint64)
    in_region, at = split.in_region(region)
    whole_at = region_index(got.arrays["heat/all"]["cell"], region)
    assert in_region.tolist() == got.arrays["heat/all"][whole_at >= 0].tolist()
    assert at.tolist() == whole_at[whole_at >= 0].tolist()
    assert split.whole().tolist() == got.arrays["heat/all"].tolist()
    assert lazy.arrays["heat/all"] is split.whole()  # put together once
    # A cache writer's delta: some athletes' rows, taken from the runs.
    index = np.arange(0, len(got.ids), 2)
    want_rows = window_cache_files.take_athletes(got, index).arrays["heat/all"]
    lazy = merge_parts(old, keep, fresh, lazy=True)
    taken = window_cache_files.take_athletes(lazy, index)
    assert taken.arrays["heat/all"].tolist() == want_rows.tolist()
    assert taken.arrays["heat/all"].dtype == want_rows.dtype
    assert split.nbytes == got.arrays["heat/all"].nbytes
    # The cells where a not-kept athlete's rows differ: the symmetric difference.
    gone = {(a, c, n) for a, c, n in old.arrays["heat/all"].tolist() if not keep[a]}
    gone = {(old.ids[a], c, n) for a, c, n in gone}
    now = {(fresh.ids[a], c, n) for a, c, n in fresh.arrays["heat/all"].tolist()}
    want = sorted({c for _, c, _ in gone ^ now})
    assert changed_cells(old, keep, fresh)["all"].tolist() == want


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 4), max_size=12),
    extra=st.integers(0, 3),
)
def test_athlete_starts_is_searchsorted(counts: list[int], extra: int) -> None:
    col = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    records = np.zeros(len(col), DTYPES["heat/all"])
    records["athlete"] = col
    n = len(counts) + extra
    got = athlete_starts(records["athlete"], n)
    np.testing.assert_array_equal(got, np.searchsorted(col, np.arange(n + 1)))


def test_a_layer_stored_as_another_reads_back_under_its_own_name(tmp_path: Path) -> None:
    """``ride`` repeating ``all`` is stored once and checked once: its state reads back
    sharing ``all``'s arrays, named ``ride``; damaged, it is one note, not a crash."""
    centre = h3.latlng_to_cell(42.32, -72.63, 13)
    cells = sorted(h3.grid_disk(centre, 3))
    rows = np.zeros(3 * len(cells), DTYPES["heat/all"])
    rows["athlete"] = np.repeat(np.arange(3), len(cells))
    rows["cell"] = np.tile(np.array(cells, np.uint64), 3)
    rows["n"] = 1 + np.arange(len(rows)) % 4
    state = threshold_state("all", rows, 2, 3, threshold_ring=1)
    assert state.thinned is not None and len(state.drawn.cells)
    old = parts({"all": [(0, 11, 1)], "ride": [(0, 11, 1)]})
    path = tmp_path / "window_cache"
    write_cache(path, "key", old, {a: b"s" for a in old.ids}, {"all": state, "ride": state})
    checks: list[int] = []
    is_open = window_cache_files.is_open

    def counted(cells: np.ndarray, open_cells: np.ndarray) -> np.ndarray:
        checks.append(len(cells))
        return is_open(cells, open_cells)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(window_cache_files, "is_open", counted)
        cached, note = read_cache(path, "key", DTYPES)
    assert cached is not None and cached.thresholds is not None, note
    assert len(checks) == 1  # the drawn cells met the threshold: checked once, for both
    got = cached.thresholds
    assert got["ride"].drawn.layer == "ride" and got["all"].drawn.layer == "all"
    assert got["ride"].thinned is not None and got["ride"].thinned.published.layer == "ride"
    assert got["ride"].drawn.cells is got["all"].drawn.cells  # one array, checked once
    for a, b in ((got["ride"], state), (got["all"], state)):
        assert a.drawn.cells.tobytes() == b.drawn.cells.tobytes()
        assert a.open_cells.tobytes() == b.open_cells.tobytes()
        assert a.thinned is not None and b.thinned is not None
        assert a.thinned.votes.tobytes() == b.thinned.votes.tobytes()
    # The shared votes out of order: the state of the first layer is the note.
    votes = state.thinned.votes[::-1].copy()
    bad = ThresholdState(state.open_cells, state.drawn, Thinned(
        state.thinned.published, state.thinned.middle, state.thinned.target, votes))  # fmt: skip
    write_cache(path, "key", old, {a: b"s" for a in old.ids}, {"all": bad, "ride": bad})
    cached, note = read_cache(path, "key", DTYPES)
    assert cached is not None and cached.thresholds is None
    assert cached.threshold_note == "threshold state of all (thinning order)"
