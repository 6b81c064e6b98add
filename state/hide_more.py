"""Hide-more settings act on what is already stored (issue 8: the store's own API).

Called by ingest in the same transaction that stores the settings, so the store never
holds settings that its activities do not obey yet.
"""

from __future__ import annotations

import orjson
import sqlite_utils

from heatmetro.core.sports import is_ebike
from heatmetro.state.aggregates import StoredActivity, activity_records
from heatmetro.state.hide_more_plan import plan_hide_more
from heatmetro.state.records import PATH_DTYPE, from_blob, to_blob
from heatmetro.state.settings import EffectiveZone
from heatmetro.state.street_network import StreetNetwork
from heatmetro.state.street_ops import recut_streets


def enforce_settings(
    db: sqlite_utils.Database,
    athlete_id: str,
    *,
    salt: str,
    hide_jitter_m: float,
    heat_res: int,
    metro_res: int,
    od_res: int,
    streets: StreetNetwork | None = None,
) -> set[tuple[str, str]]:
    """Make every stored activity of the athlete obey the stored "hide more" settings.

    Opt-out purges the activities' paths. A larger hide distance or a new zone is cut
    from the stored cells. Smaller settings change nothing already stored (they only
    apply to activities ingested afterwards). Returns the athlete-months it changed.
    """
    row = db.execute(
        "SELECT opt_out, hide_start_end_m, zones FROM athletes WHERE athlete_id = ?", (athlete_id,)
    ).fetchone()
    if row is None:
        return set()
    opt_out, hide_m, zones_json = row
    if opt_out:
        months = db.execute(
            "SELECT DISTINCT month FROM activities WHERE athlete_id = ? AND status = 'active'",
            (athlete_id,),
        ).fetchall()
        db.execute(
            "UPDATE activities SET status = 'purged', path = NULL, heat = NULL, edges = NULL, "
            "hexagons = NULL, od = NULL, streets = NULL, metro_path = NULL "
            "WHERE athlete_id = ? AND status IN ('active', 'empty')",
            (athlete_id,),
        )
        db.execute("DELETE FROM athlete_months WHERE athlete_id = ?", (athlete_id,))
        return {(athlete_id, m[0]) for m in months}
    zones = tuple(EffectiveZone(*z) for z in orjson.loads(zones_json))
    changed: set[tuple[str, str]] = set()
    rows = db.execute(
        "SELECT activity_id, month, hide_override_m, cut_start_m, cut_end_m, zone_key, path, "
        "start_s, utc_offset_s, commute, max_speed_ms, streets, metro_path, sport_type, "
        "start_within_m, end_within_m "
        "FROM activities WHERE athlete_id = ? AND status = 'active'",
        (athlete_id,),
    ).fetchall()
    for row in rows:
        aid, month, override, cut_s, cut_e, key_json, blob, start_s, off, commute, vmax = row[:11]
        st, metro_blob, sport, within_s, within_e = row[11:]
        plan = plan_hide_more(
            activity_id=aid, hide_override_m=override, cut_start_m=cut_s, cut_end_m=cut_e,
            zone_key_json=key_json, hide_m=hide_m, zones=zones, salt=salt, jitter_m=hide_jitter_m,
            within_start_m=within_s, within_end_m=within_e,
        )  # fmt: skip
        if plan is None:
            continue
        old = from_blob(blob, PATH_DTYPE)
        ends = plan.cut_ends(old)
        within = plan.within_after(old, ends)
        st = recut_streets(
            st, old, ends, plan.extra_start_m, plan.extra_end_m, plan.new_zones, streets
        )
        path = plan.cut(old, heat_res)
        metro = plan.cut(from_blob(metro_blob, PATH_DTYPE), metro_res)
        recs = activity_records(
            StoredActivity(
                aid, path, metro, start_s, off, bool(commute), vmax, ebike=is_ebike(sport or "")
            ),
            od_res=od_res,
        )
        db.execute(
            "UPDATE activities SET path = ?, heat = ?, edges = ?, hexagons = ?, od = ?, cut_start_m = ?, "
            "cut_end_m = ?, zone_key = ?, status = ?, streets = ?, metro_path = ?, "
            "start_within_m = ?, end_within_m = ? WHERE activity_id = ?",
            (to_blob(path), *(to_blob(r) for r in recs), plan.cut_start_m, plan.cut_end_m,
             plan.zone_key_json, "active" if len(path) else "empty", st, to_blob(metro),
             *within, aid),
        )  # fmt: skip
        changed.add((athlete_id, month))
    return changed
