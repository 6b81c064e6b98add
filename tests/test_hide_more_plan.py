"""``plan_hide_more``, the one "hide more" rule of the public and the personal store."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.state.hide_more_plan import plan_hide_more
from heatmetro.state.settings import EffectiveZone, hide_cuts_m, zone_key

SALT, JITTER = "test-salt", 150.0
zones = st.lists(
    st.builds(
        EffectiveZone,
        st.floats(-60, 60).map(lambda v: round(v, 5)),
        st.floats(-170, 170).map(lambda v: round(v, 5)),
        st.floats(100, 2000).map(lambda v: round(v, 1)),
    ),
    max_size=3,
    unique_by=lambda z: (z.lat, z.lng, z.radius_m),
).map(tuple)
hides = st.sampled_from([0.0, 200.0, 400.0, 800.0])


def plan(activity: str, override: float | None, cuts, key: str, hide_m: float, zs):  # type: ignore[no-untyped-def]
    return plan_hide_more(
        activity_id=activity, hide_override_m=override, cut_start_m=cuts[0], cut_end_m=cuts[1],
        zone_key_json=key, hide_m=hide_m, zones=zs, salt=SALT, jitter_m=JITTER,
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    activity=st.text("abc123-", min_size=1, max_size=8),
    stored_hide=hides,
    stored_zones=zones,
    hide_m=hides,
    new_zones=zones,
)
def test_hiding_more_only_grows_cuts_and_is_idempotent(
    activity: str,
    stored_hide: float,
    stored_zones,
    hide_m: float,
    new_zones,  # type: ignore[no-untyped-def]
) -> None:
    # An activity stored under earlier settings...
    cuts = hide_cuts_m(stored_hide, activity_id=activity, salt=SALT, jitter_m=JITTER)
    key = orjson.dumps(zone_key(stored_zones)).decode()
    zs = tuple(dict.fromkeys(stored_zones + new_zones))
    p = plan(activity, None, cuts, key, hide_m, zs)
    if p is None:  # nothing to do only when it already obeys the new settings
        assert hide_m <= stored_hide and set(new_zones) <= set(stored_zones)
        return
    assert p.cut_start_m >= cuts[0] and p.cut_end_m >= cuts[1]  # never gives anything back
    assert set(p.new_zones) == set(zs) - set(stored_zones)
    assert p.extra_start_m == p.cut_start_m - cuts[0] and p.extra_end_m == p.cut_end_m - cuts[1]
    # Applying the plan leaves nothing more to do.
    assert plan(activity, None, (p.cut_start_m, p.cut_end_m), p.zone_key_json, hide_m, zs) is None


@given(override=st.floats(0, 1000), hide_m=hides)
def test_an_activity_with_its_own_hide_distance_keeps_it(override: float, hide_m: float) -> None:
    assert plan("r-1", override, (override, override), "[]", hide_m, ()) is None
