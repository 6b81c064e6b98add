"""Apply a batch of changes to the store: idempotent, all-or-nothing.

Bytewax sinks are at-least-once: after a crash the items since the last snapshot come
again. Every write here is therefore a conditional upsert on ``updated_ms`` (strictly
newer wins, so re-delivery is a no-op), and the derived aggregates are recomputed from
the rows rather than incremented.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson
import sqlite_utils

from heatmetro.core.config import Config
from heatmetro.state.changes import (
    ActivityChange,
    ActivityDelete,
    DeadLetter,
    SettingsChange,
    StoreItem,
)
from heatmetro.state.hide_more import enforce_settings
from heatmetro.state.rebuild import RefreshClock, rebuild_dirty
from heatmetro.state.store import immediate
from heatmetro.state.street_network import StreetNetwork, network_for

_ACTIVITY_COLS = (
    "activity_id", "athlete_id", "updated_ms", "status", "sport_type", "layer", "commute",
    "start_s", "utc_offset_s", "month", "hide_override_m", "cut_start_m", "cut_end_m",
    "zone_key", "path", "heat", "edges", "hexagons", "od", "fixes_in", "fixes_kept", "max_speed_ms",
    "spike_fixes", "bad_end_fixes", "vehicle_fixes", "vehicle_stretches", "pause_splits",
    "streets", "metro_path", "overlong_fixes", "clock_resets", "wrong_time_fixes",
)  # fmt: skip
_UPSERT_ACTIVITY = (
    f"INSERT INTO activities ({', '.join(_ACTIVITY_COLS)}) "
    f"VALUES ({', '.join('?' for _ in _ACTIVITY_COLS)}) "
    "ON CONFLICT(activity_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ACTIVITY_COLS[1:])
    + " WHERE excluded.updated_ms > activities.updated_ms"
)


_STORE_ITEMS = (SettingsChange, ActivityChange, ActivityDelete, DeadLetter)  # StoreItem


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
        self.clock = RefreshClock(refresh_every_s)
        self.streets = streets  # the base map, to cut stored street sequences
        # Wall time of the last batch's write transaction: lock wait + work + commit
        # (what a snapshot or another writer could stretch); ingest reports it.
        self.lock_wait_s = 0.0
        self.commit_s = 0.0

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
        foreign = [i for i in items if not isinstance(i, _STORE_ITEMS)]
        if foreign:  # a personal change (or a new kind) must not vanish without a word
            kind = type(foreign[0]).__name__
            msg = f"the public store writes no {kind} items (personal ones go to PersonalWriter); nothing of this batch was written"
            raise TypeError(msg)
        dirty: set[tuple[str, str]] = set()  # (athlete_id, month)
        t0 = time.perf_counter()
        with immediate(self.db):
            self.lock_wait_s = time.perf_counter() - t0
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
            if self.clock.due():
                rebuild_dirty(self.db)
                self.clock.reset()
        self.commit_s = time.perf_counter() - t0

    def refresh(self) -> int:
        """Rebuild every athlete-month marked dirty (by any writer); returns how many."""
        with immediate(self.db):
            n = rebuild_dirty(self.db)
        self.clock.reset()
        return n

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
            c.streets or None, c.metro_path, c.overlong_fixes, c.clock_resets, c.wrong_time_fixes,
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
