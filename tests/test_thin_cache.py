"""``thin_cache.incremental_thin`` as a Hypothesis property: whatever published cells
come, go or change heat or athletes, and whichever threshold decisions flip (anywhere,
ridden or not: the cells a middle falls on or a join crosses too), redoing the thinning
from the last build's votes gives exactly ``window.thin_with_votes`` of the new input:
the drawn cells, their heat bits and athletes, and the state the next build reuses.
"""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.thin_cache import incremental_thin
from heatmetro.site_builder.window import LayerHeat, Thinned, thin_with_votes

ORIGIN = h3.latlng_to_cell(42.32, -72.63, 13)
AREA = sorted(h3.grid_disk(ORIGIN, 14))


@st.composite
def published(draw: st.DrawFn) -> dict[int, tuple[float, int]]:
    """Streets with lanes beside them: per cell, its heat and athletes."""
    out: dict[int, tuple[float, int]] = {}
    for _ in range(draw(st.integers(1, 4))):
        a, b = draw(st.sampled_from(AREA)), draw(st.sampled_from(AREA))
        street = h3.grid_path_cells(a, b) if a != b else [a]
        for c in street:
            for lane in h3.grid_disk(c, draw(st.sampled_from([0, 1, 1, 2]))):
                if draw(st.integers(0, 3)):
                    out[lane] = (float(draw(st.integers(1, 40))), draw(st.integers(1, 9)))
    return out


def layer(cells: dict[int, tuple[float, int]]) -> LayerHeat:
    keys = sorted(cells)
    return LayerHeat(
        "all",
        np.array(keys, np.uint64),
        np.array([cells[c][0] for c in keys], np.float64),
        np.array([cells[c][1] for c in keys], np.uint32),
    )


def open_of(cells: dict[int, tuple[float, int]], extra: set[int]) -> np.ndarray:
    return np.array(sorted(set(cells) | extra), np.uint64)


@st.composite
def change(draw: st.DrawFn) -> tuple[dict, set[int], dict, set[int]]:
    """(published before, other open cells before, the same after)."""
    before = draw(published())
    around = sorted({n for c in before for n in h3.grid_disk(c, 2)} - set(before))
    extra = set(draw(st.lists(st.sampled_from(around), max_size=40))) if around else set()
    after = dict(before)
    keys = sorted(before)
    for c in draw(st.lists(st.sampled_from(keys), max_size=12)) if keys else []:
        what = draw(st.sampled_from(["gone", "heat", "athletes"]))
        if what == "gone":
            after.pop(c, None)
        elif c in after:
            heat, athletes = after[c]
            after[c] = (heat + 1, athletes) if what == "heat" else (heat, athletes + 1)
    if around:
        for c in draw(st.lists(st.sampled_from(around), max_size=8)):  # newly published
            after[c] = (float(draw(st.integers(1, 40))), draw(st.integers(1, 9)))
    # Decisions that flip alone: unridden cells opening or closing anywhere.
    extra_after = set(extra)
    if around:
        extra_after ^= set(draw(st.lists(st.sampled_from(around), max_size=25)))
    if draw(st.booleans()):
        extra_after = set(extra)
    return before, extra, after, extra_after


def assert_same_state(got: tuple[LayerHeat, Thinned], want: tuple[LayerHeat, Thinned]) -> None:
    for g, w in ((got[0], want[0]), (got[1].published, want[1].published)):
        np.testing.assert_array_equal(g.cells, w.cells)
        np.testing.assert_array_equal(g.heat.view(np.uint64), w.heat.view(np.uint64))
        np.testing.assert_array_equal(g.athletes, w.athletes)
        assert g.heat.dtype == w.heat.dtype and g.athletes.dtype == w.athletes.dtype
    np.testing.assert_array_equal(got[1].middle, want[1].middle)
    np.testing.assert_array_equal(got[1].target, want[1].target)
    # The votes byte for byte (the cache a full build writes is the one a rebuild does).
    assert got[1].votes.dtype == want[1].votes.dtype
    assert got[1].votes.tobytes() == want[1].votes.tobytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=change(), more=st.data())
def test_thinning_redone_from_the_changes_is_the_full_thinning(
    data: tuple[dict, set[int], dict, set[int]], more: st.DataObject
) -> None:
    before, extra, after, extra_after = data
    old_lh, new_lh = layer(before), layer(after)
    old_open = open_of(before, extra)
    old = thin_with_votes(old_lh, old_open)
    # Flip some of the cells the middles fell on, or the joins crossed, too (few are).
    voted = sorted(set(old[1].votes["cell"].tolist()) - set(after))
    if voted:
        extra_after ^= set(more.draw(st.lists(st.sampled_from(voted), max_size=6)))
    new_open = open_of(after, extra_after)
    want = thin_with_votes(new_lh, new_open)
    changed = np.array(
        sorted(c for c in set(before) | set(after) if before.get(c) != after.get(c)), np.uint64
    )
    flipped = np.setxor1d(old_open, new_open)
    got = incremental_thin(old[1], old[0], new_lh, changed, flipped, new_open)
    assert_same_state(got, want)
    # Again from the spliced state: a second rebuild reads what the first one kept.
    back = incremental_thin(got[1], got[0], old_lh, changed, flipped, old_open)
    assert_same_state(back, old)
