"""The kept Metro plan (``heatmetro.site_builder.metro_plan_cache``) as a Hypothesis property.

A rebuild takes the last build's hidden flags for every edge that no layer recounted and
solves only the others. Whatever changed, every flag of every table and layer must be
what a plan solved from scratch over the new counts hides: one flag out of place would
publish a count that secondary suppression hides, or hide one it publishes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.metro_cache import MetroCache
from heatmetro.site_builder.metro_plan import TABLE_BY, EdgePlan
from heatmetro.site_builder.metro_plan_cache import PLAN_CACHE, PlanCache
from heatmetro.site_builder.metro_tables import direction_sums
from tests.test_metro_cache_property import Athletes, change, window


def layers(people: Athletes, *, ride_is_all: bool = False) -> dict[str, np.ndarray]:
    """``all`` and its ``ride`` part: the plan's relations between layers too. With
    ``ride_is_all`` every record is a ride (the Metro cache shares the two layers' sums)."""
    arr = window(people)
    if ride_is_all:
        arr["ride"] = 1
    return {"all": arr, "ride": arr[arr["ride"] == 1]}


def plan(arrs: dict[str, np.ndarray], k: int, cache: MetroCache | None) -> EdgePlan:
    if cache is None:
        return EdgePlan(lambda layer, key, bands: direction_sums(arrs[layer], key, None,
                        with_bands=bands), list(arrs), ("a", "b"), k)  # fmt: skip
    cache.open(None)
    plans = PlanCache(cache.path.with_name(PLAN_CACHE), k, cache)
    return EdgePlan(lambda layer, key, bands: cache.sums(layer, arrs[layer], key,
                    with_bands=bands), list(arrs), ("a", "b"), k, plans)  # fmt: skip


def flags(p: EdgePlan) -> dict[tuple[str, str], list[np.ndarray]]:
    out = {}
    for table in TABLE_BY:
        for layer in ("all", "ride"):
            hide, sub = p.hides(table, layer)
            out[(table, layer)] = [hide, *(sub[k] for k in sorted(sub))]
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(windows=change(), k=st.integers(2, 3), twins=st.tuples(st.booleans(), st.booleans()))
def test_a_kept_plan_hides_what_a_fresh_solve_hides(
    windows: tuple[Athletes, Athletes], k: int, twins: tuple[bool, bool]
) -> None:
    before, after = (layers(w, ride_is_all=t) for w, t in zip(windows, twins, strict=True))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metro_cache.npz"
        first = MetroCache(path)
        first_plan = plan(before, k, first)
        flags(first_plan)
        first.save()
        first_plan.save_cache()
        again = MetroCache(path)
        kept = plan(after, k, again)
        got = flags(kept)
        # Unless the Metro cache counted a layer whole (too many athletes changed).
        assert kept.reused == (again.touched() is not None)
        want = flags(plan(after, k, None))
        for name, arrays in want.items():
            for x, y in zip(got[name], arrays, strict=True):
                np.testing.assert_array_equal(x, y, err_msg=str(name))


def test_a_plan_cache_solved_with_other_sums_is_not_used(tmp_path: Path) -> None:
    """The Metro cache rewritten after the plan cache was saved (a crash between the two
    saves, a ``--no-cache`` build that stopped early): the kept flags were solved with
    other sums, so the next build solves every edge."""
    record: tuple[int, ...] = (1, 8, 0, 1, 0, 1, 5000, 1, 24240, 1)
    people: Athletes = {f"p{i}": [(i % 3, *record)] for i in range(7)}
    arrs = layers(people)
    path = tmp_path / "metro_cache.npz"
    first = MetroCache(path)
    first_plan = plan(arrs, 2, first)
    flags(first_plan)
    first.save()
    first_plan.save_cache()
    again = MetroCache(path)
    kept = plan(arrs, 2, again)
    flags(kept)
    assert kept.reused, "the plan cache paired with its Metro cache is used"
    rewritten = MetroCache(path, reuse=False)  # saves a new Metro cache file ...
    plan(arrs, 2, rewritten)
    rewritten.save()  # ... and no plan cache after it
    last = MetroCache(path)
    unpaired = plan(arrs, 2, last)
    got, want = flags(unpaired), flags(plan(arrs, 2, None))
    assert not unpaired.reused
    for name, arrays in want.items():
        for x, y in zip(got[name], arrays, strict=True):
            np.testing.assert_array_equal(x, y, err_msg=str(name))
