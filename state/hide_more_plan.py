"""What a stored activity must lose to obey its athlete's current "hide more" settings.

One rule for both stores (rule 5: hiding more applies backwards): the public store
(``hide_more.enforce_settings``) and the personal store (``personal_store.hide_more``)
both ask :func:`plan_hide_more` and apply the cuts it returns to their own columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from heatmetro.core.cells import cell_centres
from heatmetro.core.geo import haversine_m
from heatmetro.state.path_ops import circles_to_drop, drop_rows, drop_zone_cells, ends_to_drop
from heatmetro.state.settings import EffectiveZone, hide_cuts_m, zone_key

#: Cuts smaller than this (metres) are rounding, not a larger hide distance.
MIN_EXTRA_M = 0.01
#: How far beyond its cut the first kept fix may lie: the step that left the circle
#: (1 Hz fixes of a ride: under 15 m), a cell's reach, and room for sparse tracks.
CUT_SLACK_M = 50.0


@dataclass(frozen=True)
class HidePlan:
    """The cuts one stored activity still needs, and its bookkeeping afterwards.

    Attributes:
        new_zones: zones not yet cut from the stored path.
        extra_start_m, extra_end_m: metres still to remove at each end.
        cut_start_m, cut_end_m: the activity's total cuts once applied.
        zone_key_json: the activity's ``zone_key`` column once applied.
        within_start_m, within_end_m: how far, at most, the stored path's first (last)
            cell lies from where the activity started (ended), before this cut.
    """

    new_zones: tuple[EffectiveZone, ...]
    extra_start_m: float
    extra_end_m: float
    cut_start_m: float
    cut_end_m: float
    zone_key_json: str
    within_start_m: float = 0.0
    within_end_m: float = 0.0

    def cut(self, path: np.ndarray, res: int) -> np.ndarray:
        """``path`` (a stored path at resolution ``res``) with the extra ends and zones removed."""
        return drop_zone_cells(self.cut_ends(path), res, self.new_zones)

    def cut_ends(self, path: np.ndarray) -> np.ndarray:
        """``path`` with the extra start and end removed.

        The stored path's first cell F lies within ``within_start_m`` of where the
        activity started, H, in some unknown direction: metres along the path from F do
        not reach the new cut r1 from H when the path turns (found by an outside review:
        404 m of 500). Every cell at least r1 + within from F is at least r1 from H
        whatever the direction, so the path is also cut out to that circle around F
        (erring on removing more, as every cut here does); alike at the end. Both cuts
        are measured on the stored path: a circle drawn around the first cell left
        after the cut along the path would reach twice as far (an outside review: 2,030 m
        cut where 850 m was asked).
        """
        along = ends_to_drop(path, self.extra_start_m, self.extra_end_m)
        circles = circles_to_drop(
            path,
            self.cut_start_m + self.within_start_m if self.extra_start_m >= MIN_EXTRA_M else 0.0,
            self.cut_end_m + self.within_end_m if self.extra_end_m >= MIN_EXTRA_M else 0.0,
        )
        return drop_rows(path, along | circles)

    def within_after(self, before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
        """``within_start_m`` and ``within_end_m`` once ``before`` became ``after``: the
        old bound plus how far the first (last) cell moved (the triangle inequality), so
        the next, larger hide distance is still kept from any start."""
        if len(before) == 0 or len(after) == 0:
            return self.within_start_m, self.within_end_m
        ends = np.array([before["cell"][0], before["cell"][-1]], np.uint64)
        now = np.array([after["cell"][0], after["cell"][-1]], np.uint64)
        moved_s, moved_e = haversine_m(*cell_centres(ends), *cell_centres(now)).tolist()
        return self.within_start_m + moved_s, self.within_end_m + moved_e


def plan_hide_more(
    *,
    activity_id: str,
    hide_override_m: float | None,
    cut_start_m: float,
    cut_end_m: float,
    zone_key_json: str,
    hide_m: float,
    zones: tuple[EffectiveZone, ...],
    salt: str,
    jitter_m: float,
    within_start_m: float | None = None,
    within_end_m: float | None = None,
) -> HidePlan | None:
    """The cuts an activity stored with the given columns needs; None when it obeys already.

    An activity with its own hide distance (``hide_override_m``) keeps it; the others
    follow the athlete's ``hide_m`` (with the activity's secret jitter). Smaller settings
    never give anything back: cuts only grow. ``within_start_m`` / ``within_end_m``:
    what an earlier cut left (``HidePlan.within_after``); None for an activity as it
    was ingested, whose first kept fix lies at most ``CUT_SLACK_M`` beyond its cut (the
    along-track cut point is never farther than that along the track, the circle's exit
    one step beyond it).
    """
    have = {tuple(z) for z in orjson.loads(zone_key_json)}
    new_zones = tuple(z for z in zones if tuple(zone_key((z,))[0]) not in have)
    target_s, target_e = cut_start_m, cut_end_m
    if hide_override_m is None:
        target_s, target_e = hide_cuts_m(
            hide_m, activity_id=activity_id, salt=salt, jitter_m=jitter_m
        )
    extra_s, extra_e = max(0.0, target_s - cut_start_m), max(0.0, target_e - cut_end_m)
    if not new_zones and extra_s < MIN_EXTRA_M and extra_e < MIN_EXTRA_M:
        return None
    key = sorted(have | {tuple(zone_key((z,))[0]) for z in new_zones})
    return HidePlan(
        new_zones=new_zones,
        extra_start_m=extra_s,
        extra_end_m=extra_e,
        cut_start_m=max(cut_start_m, target_s),
        cut_end_m=max(cut_end_m, target_e),
        zone_key_json=orjson.dumps([list(k) for k in key]).decode(),
        within_start_m=within_start_m if within_start_m is not None else cut_start_m + CUT_SLACK_M,
        within_end_m=within_end_m if within_end_m is not None else cut_end_m + CUT_SLACK_M,
    )
