"""Apply a batch of changes to the store: idempotent, all-or-nothing.

Bytewax sinks are at-least-once: after a crash the items since the last snapshot come
again. Every write here is therefore a conditional upsert on ``updated_ms`` (strictly
newer wins, so re-delivery is a no-op), and the derived aggregates are recomputed from
the rows rather than incremented.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import orjson
import sqlite_utils

from heatmetro.core.config import Config
from heatmetro.state.aggregates import StoredActivity, activity_records, merge_records
from heatmetro.state.changes import (
    ActivityChange,
    ActivityDelete,
    DeadLetter,
    SettingsChange,
    StoreItem,
)
from heatmetro.state.path_ops import cut_path_ends, drop_zone_cells
from heatmetro.state.records import (
    EDGE_DTYPE,
    HEAT_DTYPE,
    HEX_DTYPE,
    OD_DTYPE,
    PATH_DTYPE,
    from_blob,
    to_blob,
)
from heatmetro.state.settings import EffectiveZone, hide_cuts_m
from heatmetro.state.store import immediate
from heatmetro.state.street_network import StreetNetwork, network_for
from heatmetro.state.street_ops import recut_streets

_ACTIVITY_COLS = (
    "activity_id", "athlete_id", "updated_ms", "status", "sport_type", "layer", "commute",
    "start_s", "utc_offset_s", "month", "hide_override_m", "cut_start_m", "cut_end_m",
    "zone_key", "path", "heat", "edges", "hexagons", "od", "fixes_in", "fixes_kept", "max_speed_ms",
    "spike_fixes", "bad_end_fixes", "vehicle_fixes", "vehicle_stretches", "pause_splits",
    "streets",
)  # fmt: skip
_UPSERT_ACTIVITY = (
    f"INSERT INTO activities ({', '.join(_ACTIVITY_COLS)}) "
    f"VALUES ({', '.join('?' for _ in _ACTIVITY_COLS)}) "
    "ON CONFLICT(activity_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ACTIVITY_COLS[1:])
    + " WHERE excluded.updated_ms > activities.updated_ms"
)


class StoreWriter:
    """Writes batches of ``StoreItem`` for one worker; safe to share a file with others."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        *,
        heat_res: int,
        metro_res: int,
        od_res: int,
        salt: str,
        hide_jitter_m: float,
        refresh_every_s: float = 0.0,
        streets: StreetNetwork | None = None,
    ) -> None:
        """``refresh_every_s`` > 0 defers rebuilding aggregates: an athlete-month touched by
        many batches is rebuilt once per interval (and by ``refresh`` at the end), not
        once per batch."""
        self.db = db
        self.heat_res, self.metro_res, self.od_res = heat_res, metro_res, od_res
        self.salt, self.hide_jitter_m = salt, hide_jitter_m
        self.refresh_every_s = refresh_every_s
        self.streets = streets  # the base map, to cut stored street sequences
        self._last_refresh = time.monotonic()

    @classmethod
    def for_config(
        cls, db: sqlite_utils.Database, config: Config, *, refresh_every_s: float = 0.0
    ) -> StoreWriter:
        """A writer with the resolutions and secrets of ``config``."""
        return cls(
            db,
            heat_res=config.heat_resolution,
            metro_res=config.metro_resolution,
            od_res=config.od_resolution,
            salt=config.salt,
            hide_jitter_m=config.hide_jitter_m,
            refresh_every_s=refresh_every_s,
            streets=network_for(config),
        )

    def write_batch(self, items: Iterable[StoreItem]) -> None:
        items = list(items)
        dirty: set[tuple[str, str]] = set()  # (athlete_id, month)
        with immediate(self.db):
            known = self._versions(items)
            pending: list[tuple] = []  # type: ignore[type-arg]
            for item in items:
                if isinstance(item, ActivityChange | ActivityDelete):
                    old = known.get(item.activity_id)
                    if old is not None and old[2] >= item.updated_ms:
                        continue  # stale or re-delivered: changes nothing
                    month = item.month if isinstance(item, ActivityChange) else None
                    if old is not None and old[1]:
                        dirty.add((old[0], old[1]))
                    if month:
                        dirty.add((item.athlete_id, month))
                    known[item.activity_id] = (item.athlete_id, month, item.updated_ms)
                    pending.append(self._row(item))
                elif isinstance(item, SettingsChange):
                    self._flush(pending)  # settings act on what is stored so far
                    dirty |= self._settings(item)
                elif isinstance(item, DeadLetter):
                    self.db.execute(
                        "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?)",
                        (item.source, item.position, item.reason, item.raw),
                    )
            self._flush(pending)
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO dirty_months VALUES (?, ?)", sorted(dirty)
            )
            if time.monotonic() - self._last_refresh >= self.refresh_every_s:
                self._refresh()

    def refresh(self) -> int:
        """Rebuild every athlete-month marked dirty (by any writer); returns how many."""
        with immediate(self.db):
            return self._refresh()

    def _refresh(self) -> int:
        dirty = self.db.execute(
            "SELECT athlete_id, month FROM dirty_months ORDER BY athlete_id, month"
        ).fetchall()
        for athlete_id, month in dirty:
            self.recompute(athlete_id, month)
        self.db.conn.executemany(
            "DELETE FROM dirty_months WHERE athlete_id = ? AND month = ?", dirty
        )
        self._last_refresh = time.monotonic()
        return len(dirty)

    def _versions(self, items: list[StoreItem]) -> dict[str, tuple[str, str | None, int]]:
        """(athlete, month, updated_ms) of the stored versions of the batch's activities."""
        ids = list({i.activity_id for i in items if isinstance(i, ActivityChange | ActivityDelete)})
        known: dict[str, tuple[str, str | None, int]] = {}
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            rows = self.db.execute(
                "SELECT activity_id, athlete_id, month, updated_ms FROM activities "
                f"WHERE activity_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            known.update({r[0]: (r[1], r[2], r[3]) for r in rows})
        return known

    def _flush(self, pending: list[tuple]) -> None:  # type: ignore[type-arg]
        if pending:
            # The WHERE guard in the upsert repeats the version check inside SQLite.
            self.db.conn.executemany(_UPSERT_ACTIVITY, pending)
            pending.clear()

    @staticmethod
    def _row(c: ActivityChange | ActivityDelete) -> tuple:  # type: ignore[type-arg]
        if isinstance(c, ActivityDelete):
            return (c.activity_id, c.athlete_id, c.updated_ms, "deleted") + (None,) * (
                len(_ACTIVITY_COLS) - 4
            )
        return (
            c.activity_id, c.athlete_id, c.updated_ms, c.status, c.sport_type, c.layer,
            int(c.commute), c.start_s, c.utc_offset_s, c.month, c.hide_override_m,
            c.cut_start_m, c.cut_end_m, c.zone_key, c.path, c.heat, c.edges, c.hexagons, c.od,
            c.fixes_in, c.fixes_kept, c.max_speed_ms,
            c.spike_fixes, c.bad_end_fixes, c.vehicle_fixes, c.vehicle_stretches, c.pause_splits,
            c.streets or None,
        )  # fmt: skip

    def _settings(self, s: SettingsChange) -> set[tuple[str, str]]:
        self.db.execute(
            "INSERT INTO athletes VALUES (?, ?, ?, ?, ?) ON CONFLICT(athlete_id) DO UPDATE SET "
            "updated_ms = excluded.updated_ms, opt_out = excluded.opt_out, "
            "hide_start_end_m = excluded.hide_start_end_m, zones = excluded.zones "
            "WHERE excluded.updated_ms > athletes.updated_ms",
            (
                s.athlete_id,
                s.updated_ms,
                int(s.opt_out),
                s.hide_start_end_m,
                orjson.dumps(s.zones).decode(),
            ),
        )
        # Always enforce what is now stored (even for a re-delivered change): idempotent.
        return enforce_settings(
            self.db, s.athlete_id, salt=self.salt, hide_jitter_m=self.hide_jitter_m,
            heat_res=self.heat_res, metro_res=self.metro_res, od_res=self.od_res,
            streets=self.streets,
        )  # fmt: skip

    def recompute(self, athlete_id: str, month: str) -> None:
        """Rebuild one athlete-month's aggregates from its active activities' records."""
        rows = self.db.execute(
            "SELECT layer, heat, edges, hexagons, od FROM activities "
            "WHERE athlete_id = ? AND month = ? AND status = 'active' ORDER BY activity_id",
            (athlete_id, month),
        ).fetchall()
        by_layer: dict[str, list[tuple[np.ndarray, ...]]] = {}
        for layer, heat, edges, hexes, od in rows:
            by_layer.setdefault(layer, []).append(
                (
                    from_blob(heat, HEAT_DTYPE),
                    from_blob(edges, EDGE_DTYPE),
                    from_blob(hexes, HEX_DTYPE),
                    from_blob(od, OD_DTYPE),
                )
            )
        self.db.execute(
            "DELETE FROM athlete_months WHERE athlete_id = ? AND month = ?", (athlete_id, month)
        )
        for layer in sorted(by_layer):
            agg = merge_records(by_layer[layer])  # type: ignore[arg-type]
            if agg.activities == 0:
                continue
            self.db.execute(
                "INSERT INTO athlete_months VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    athlete_id,
                    month,
                    layer,
                    agg.activities,
                    to_blob(agg.heat),
                    to_blob(agg.edges),
                    to_blob(agg.hexagons),
                    to_blob(agg.od),
                ),
            )


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
            "hexagons = NULL, od = NULL, streets = NULL WHERE athlete_id = ? AND status = 'active'",
            (athlete_id,),
        )
        db.execute("DELETE FROM athlete_months WHERE athlete_id = ?", (athlete_id,))
        return {(athlete_id, m[0]) for m in months}
    zones = tuple(EffectiveZone(*z) for z in orjson.loads(zones_json))
    changed: set[tuple[str, str]] = set()
    rows = db.execute(
        "SELECT activity_id, month, hide_override_m, cut_start_m, cut_end_m, zone_key, path, "
        "start_s, utc_offset_s, commute, max_speed_ms, streets "
        "FROM activities WHERE athlete_id = ? AND status = 'active'",
        (athlete_id,),
    ).fetchall()
    for aid, month, override, cut_s, cut_e, key_json, blob, start_s, off, commute, vmax, st in rows:
        have = {tuple(z) for z in orjson.loads(key_json)}
        new_zones = tuple(z for z in zones if _zkey(z) not in have)
        target_s, target_e = (cut_s, cut_e)
        if override is None:
            target_s, target_e = hide_cuts_m(
                hide_m, activity_id=aid, salt=salt, jitter_m=hide_jitter_m
            )
        extra_s, extra_e = max(0.0, target_s - cut_s), max(0.0, target_e - cut_e)
        if not new_zones and extra_s < 0.01 and extra_e < 0.01:
            continue
        path = from_blob(blob, PATH_DTYPE)
        st = recut_streets(st, path, extra_s, extra_e, new_zones, streets)
        path = cut_path_ends(path, extra_s, extra_e)
        path = drop_zone_cells(path, heat_res, new_zones)
        recs = activity_records(
            StoredActivity(aid, path, start_s, off, bool(commute), vmax),
            metro_res=metro_res,
            od_res=od_res,
        )
        key = sorted(have | {_zkey(z) for z in new_zones})
        db.execute(
            "UPDATE activities SET path = ?, heat = ?, edges = ?, hexagons = ?, od = ?, cut_start_m = ?, "
            "cut_end_m = ?, zone_key = ?, status = ?, streets = ? WHERE activity_id = ?",
            (to_blob(path), *(to_blob(r) for r in recs), max(cut_s, target_s), max(cut_e, target_e),
             orjson.dumps([list(k) for k in key]).decode(), "active" if len(path) else "empty", st,
             aid),
        )  # fmt: skip
        changed.add((athlete_id, month))
    return changed


def _zkey(z: EffectiveZone) -> tuple[float, float, float]:
    return (round(z.lat, 7), round(z.lng, 7), round(z.radius_m, 3))


def apply_pending_privacy(db: sqlite_utils.Database, config: Config) -> int:
    """Before a snapshot: make every athlete's stored data obey their newest settings.

    Ingest already does this as settings arrive; running it again here makes the
    snapshot correct even for a store written by an interrupted or older ingest.
    Also rebuilds the aggregates ingest left marked dirty. Returns how many
    athlete-months were rebuilt.
    """
    writer = StoreWriter.for_config(db, config)
    changed: set[tuple[str, str]] = set()
    with immediate(db):
        for (athlete_id,) in db.execute(
            "SELECT athlete_id FROM athletes ORDER BY athlete_id"
        ).fetchall():
            changed |= enforce_settings(
                db, athlete_id, salt=config.salt, hide_jitter_m=config.hide_jitter_m,
                heat_res=config.heat_resolution, metro_res=config.metro_resolution,
                od_res=config.od_resolution, streets=writer.streets,
            )  # fmt: skip
        # With what an interrupted ingest left marked, rebuild everything that is due.
        db.conn.executemany("INSERT OR IGNORE INTO dirty_months VALUES (?, ?)", sorted(changed))
        return writer._refresh()
