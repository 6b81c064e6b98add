"""``plan_hide_more``, the one "hide more" rule of the public and the personal store."""

from __future__ import annotations

import h3
import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.core.cells import cell_centres
from heatmetro.core.geo import haversine_m
from heatmetro.state.hide_more_plan import HidePlan, plan_hide_more
from heatmetro.state.records import PATH_DTYPE
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


def _straight_path(length_m: float, res: int = 13) -> np.ndarray:
    """A stored path due east from (60.175, 24.9), a cell every ~5 m of track."""
    lng = 24.9 + np.arange(0.0, length_m, 5.0) / (111_320.0 * np.cos(np.radians(60.175)))
    cells = [int(h3.str_to_int(h3.latlng_to_cell(60.175, x, res))) for x in lng.tolist()]
    cells = [c for i, c in enumerate(cells) if i == 0 or c != cells[i - 1]]
    path = np.zeros(len(cells), PATH_DTYPE)
    path["cell"], path["t"] = cells, np.arange(len(cells), dtype=np.float32)
    return path


def test_a_larger_hide_distance_cuts_to_its_bound_not_twice_as_far() -> None:
    """Stored with 200 m hidden, raised to 700 m: every kept cell must be 700 m from any
    start within ``within`` (250 m) of the first stored cell, so the cut reaches 950 m
    from it on a straight track. The circle was drawn around the cell left after the
    cut along the path, which took it to ~1,450 m (an outside review: 2,030 m cut of a
    ride where ~850 m was asked)."""
    path = _straight_path(4000.0)
    p = HidePlan(
        new_zones=(), extra_start_m=500.0, extra_end_m=500.0, cut_start_m=700.0,
        cut_end_m=700.0, zone_key_json="[]", within_start_m=250.0, within_end_m=250.0,
    )  # fmt: skip
    kept = p.cut_ends(path)
    lat, lng = cell_centres(path["cell"][[0, -1]])
    klat, klng = cell_centres(kept["cell"][[0, -1]])
    from_first = haversine_m(lat[0], lng[0], klat[0], klng[0])
    from_last = haversine_m(lat[1], lng[1], klat[1], klng[1])
    assert 950.0 <= from_first <= 980.0 and 950.0 <= from_last <= 980.0, (from_first, from_last)
