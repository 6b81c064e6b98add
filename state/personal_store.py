"""The personal store: each athlete's own activities, for their private heatmap only.

It is a separate SQLite file, ``state_dir/personal.db``, not a table of the public store,
so that the separation is structural: the snapshot (public tiles, members tiles, Metro
files, the weekly map) opens ``heatmetro.db`` only and never imports this module, which
an import-linter contract and a test check. ``heatmetro personal`` is its only reader.

What it holds, per activity of every visibility (``everyone``, ``followers_only``,
``only_me``, ``hide_map``, and activities of opted-out athletes):

* the same privacy-trimmed path the public store would hold: hidden start/end and
  privacy zones are cut on ingest here too, so even this store never holds the
  athlete's doorstep (DESIGN rule 4: "trimmed by their zones");
* the metadata the personal map filters on (sport, local date, commute, visibility).

Rules, like the public store: newer ``updated_ms`` wins and re-delivery changes nothing;
a delete leaves a tombstone; a new zone or a longer hidden distance is cut from what is
stored, with the same path operations as the public store (``state/path_ops.py``).
Opting out of aggregates removes nothing here: the personal map is the athlete's own.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import sqlite_utils
from sqlite_utils import Migrations

from heatmetro.core.config import Config
from heatmetro.core.errors import StoreError
from heatmetro.state.changes import ActivityChange, ActivityDelete, SettingsChange
from heatmetro.state.hide_more_plan import plan_hide_more
from heatmetro.state.records import PATH_DTYPE, from_blob, to_blob
from heatmetro.state.settings import EffectiveZone
from heatmetro.state.sql_script import execute_script
from heatmetro.state.store import immediate

PERSONAL_DB = "personal.db"

migrations = Migrations("heatmetro_personal")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    # Column names follow the public store's where they mean the same thing.
    execute_script(
        db,
        """
        CREATE TABLE athletes (
            athlete_id TEXT PRIMARY KEY,
            updated_ms INTEGER NOT NULL,
            opt_out INTEGER NOT NULL DEFAULT 0,  -- always 0: opting out keeps your own map
            hide_start_end_m REAL NOT NULL,
            zones TEXT NOT NULL DEFAULT '[]'
        );
        CREATE TABLE activities (
            activity_id TEXT PRIMARY KEY,
            athlete_id TEXT NOT NULL,
            updated_ms INTEGER NOT NULL,
            status TEXT NOT NULL,
            visibility TEXT,
            hide_map INTEGER,
            sport_type TEXT,
            layer TEXT,
            commute INTEGER,
            start_s INTEGER,
            utc_offset_s INTEGER,
            local_date TEXT,
            month TEXT,
            hide_override_m REAL,
            cut_start_m REAL,
            cut_end_m REAL,
            zone_key TEXT,
            max_speed_ms REAL,
            path BLOB
        );
        CREATE INDEX activities_by_athlete_date ON activities (athlete_id, local_date);
        """,
    )


@migrations()
def m002_cut_bounds(db: sqlite_utils.Database) -> None:
    # As the public store's m009: the bound a larger hide distance leaves (NULL: as ingested).
    db.execute("ALTER TABLE activities ADD COLUMN start_within_m REAL")
    db.execute("ALTER TABLE activities ADD COLUMN end_within_m REAL")


@dataclass(frozen=True, slots=True)
class PersonalChange:
    """An activity version for its owner's personal map (any visibility)."""

    activity: ActivityChange  # the trimmed version (status active or empty)
    visibility: str
    hide_map: bool


def personal_db_path(state_dir: Path) -> Path:
    return state_dir / PERSONAL_DB


def remove_personal_store(state_dir: Path) -> Path | None:
    """Delete the personal store (``personal_heatmaps`` is off); returns its path, or None
    when there was none. Kept, it would miss every delete and privacy zone from then on,
    and a personal map drawn from it would show them."""
    path = personal_db_path(state_dir)
    if not path.exists():
        return None
    # The WAL first: a store without it is older, never newer, than what was shown.
    for extra in ("-wal", "-shm", ".migrate.lock"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    path.unlink()
    return path


def connect_personal(path: Path, *, create: bool = True) -> sqlite_utils.Database:
    """Open (and migrate) the personal store; WAL and patient, like the public one."""
    if not create and not path.exists():
        msg = f"no personal store at {path}: ingest with personal_heatmaps = true first"
        raise StoreError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=120, isolation_level=None, check_same_thread=False)
    # No sqlite-utils plugins: code of whatever else is installed has no business
    # on the store's connection (and finding it scans every installed package's
    # metadata: ~30 ms of each process's start).
    db = sqlite_utils.Database(conn, execute_plugins=False)
    db.execute("PRAGMA journal_mode=WAL")
    # As the public store: in WAL a commit need not wait for the disk; a crashed process
    # loses nothing, and both stores make the same trade on power loss.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=120000")
    try:
        # Worker processes open the file at once; schema changes are not queued by the
        # busy timeout, so the first one migrates while the others wait on a lock file.
        with path.with_name(f"{path.name}.migrate.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            migrations.apply(db)
    except sqlite3.DatabaseError as exc:
        msg = f"personal store {path} cannot be opened: {exc}"
        raise StoreError(msg) from None
    return db


_COLS = (
    "activity_id", "athlete_id", "updated_ms", "status", "visibility", "hide_map",
    "sport_type", "layer", "commute", "start_s", "utc_offset_s", "local_date", "month",
    "hide_override_m", "cut_start_m", "cut_end_m", "zone_key", "max_speed_ms", "path",
)  # fmt: skip
_UPSERT = (
    f"INSERT INTO activities ({', '.join(_COLS)}) VALUES ({', '.join('?' * len(_COLS))}) "
    "ON CONFLICT(activity_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLS[1:])
    + " WHERE excluded.updated_ms > activities.updated_ms"
)


def local_date(start_s: int, utc_offset_s: int) -> str:
    return datetime.fromtimestamp(start_s + utc_offset_s, tz=UTC).strftime("%Y-%m-%d")


class PersonalWriter:
    """Applies ingest's items to the personal store; every write is an idempotent upsert."""

    def __init__(self, db: sqlite_utils.Database, config: Config) -> None:
        self.db, self.config = db, config

    @classmethod
    def for_config(cls, config: Config) -> PersonalWriter:
        return cls(connect_personal(personal_db_path(config.state_dir)), config)

    def write_batch(self, items: Iterable[object]) -> None:
        cfg = self.config
        with immediate(self.db):
            for item in items:
                if isinstance(item, PersonalChange):
                    self.db.execute(_UPSERT, _row(item))
                elif isinstance(item, ActivityDelete):
                    self.db.execute(
                        _UPSERT,
                        (item.activity_id, item.athlete_id, item.updated_ms, "deleted")
                        + (None,) * (len(_COLS) - 4),
                    )
                elif isinstance(item, SettingsChange):
                    self.db.execute(
                        "INSERT INTO athletes VALUES (?, ?, 0, ?, ?) ON CONFLICT(athlete_id) "
                        "DO UPDATE SET updated_ms = excluded.updated_ms, "
                        "hide_start_end_m = excluded.hide_start_end_m, zones = excluded.zones "
                        "WHERE excluded.updated_ms > athletes.updated_ms",
                        (item.athlete_id, item.updated_ms, item.hide_start_end_m,
                         orjson.dumps(item.zones).decode()),
                    )  # fmt: skip
                    hide_more(self.db, item.athlete_id, cfg)

    def close(self) -> None:
        self.db.close()


def hide_more(db: sqlite_utils.Database, athlete_id: str, config: Config) -> int:
    """Cut the athlete's stored zones and hidden distance from stored paths they do not
    yet cover (rule 5: hiding more applies backwards). Returns the activities changed.

    The same rule as the public store's ``hide_more.enforce_settings`` (one
    ``plan_hide_more``), minus the opt-out purge.
    """
    row = db.execute(
        "SELECT hide_start_end_m, zones FROM athletes WHERE athlete_id = ?", (athlete_id,)
    ).fetchone()
    if row is None:
        return 0
    hide_m, zones_json = row
    zones = tuple(EffectiveZone(*z) for z in orjson.loads(zones_json))
    rows = db.execute(
        "SELECT activity_id, hide_override_m, cut_start_m, cut_end_m, zone_key, path, "
        "start_within_m, end_within_m "
        "FROM activities WHERE athlete_id = ? AND status = 'active' ORDER BY activity_id",
        (athlete_id,),
    ).fetchall()
    changed = 0
    for aid, override, cut_s, cut_e, key_json, blob, within_s, within_e in rows:
        plan = plan_hide_more(
            activity_id=aid, hide_override_m=override, cut_start_m=cut_s, cut_end_m=cut_e,
            zone_key_json=key_json, hide_m=hide_m, zones=zones, salt=config.salt,
            jitter_m=config.hide_jitter_m, within_start_m=within_s, within_end_m=within_e,
        )  # fmt: skip
        if plan is None:
            continue
        old = from_blob(blob, PATH_DTYPE)
        within = plan.within_after(old, plan.cut_ends(old))
        path = plan.cut(old, config.heat_resolution)
        db.execute(
            "UPDATE activities SET path = ?, cut_start_m = ?, cut_end_m = ?, zone_key = ?, "
            "status = ?, start_within_m = ?, end_within_m = ? WHERE activity_id = ?",
            (to_blob(path), plan.cut_start_m, plan.cut_end_m, plan.zone_key_json,
             "active" if len(path) else "empty", *within, aid),
        )  # fmt: skip
        changed += 1
    return changed


def _row(c: PersonalChange) -> tuple[object, ...]:
    a = c.activity
    return (
        a.activity_id, a.athlete_id, a.updated_ms, a.status, c.visibility, int(c.hide_map),
        a.sport_type, a.layer, int(a.commute), a.start_s, a.utc_offset_s,
        local_date(a.start_s, a.utc_offset_s), a.month, a.hide_override_m, a.cut_start_m,
        a.cut_end_m, a.zone_key, a.max_speed_ms, a.path,
    )  # fmt: skip


@dataclass(frozen=True)
class PersonalFilter:
    """What the personal map shows, as on the platforms' personal heatmaps."""

    date_from: str | None = None  # YYYY-MM-DD, local start date, inclusive
    date_to: str | None = None
    sports: tuple[str, ...] = ()  # sport types; empty = every sport
    layers: tuple[str, ...] = ()  # sport groups (ride, run, water, winter, other)
    commutes: bool = True  # include commutes
    visibilities: tuple[str, ...] = ("everyone", "followers_only", "only_me")


@dataclass(frozen=True, slots=True)
class PersonalActivity:
    activity_id: str
    sport_type: str
    layer: str
    start_s: int
    utc_offset_s: int
    commute: bool
    visibility: str
    path: np.ndarray  # PATH_DTYPE


def athlete_activities(
    db: sqlite_utils.Database, athlete_id: str, flt: PersonalFilter
) -> list[PersonalActivity]:
    """The athlete's own stored activities that pass ``flt``, in id order."""
    where = ["athlete_id = ?", "status = 'active'"]
    params: list[object] = [athlete_id]
    if flt.date_from:
        where.append("local_date >= ?")
        params.append(flt.date_from)
    if flt.date_to:
        where.append("local_date <= ?")
        params.append(flt.date_to)
    for column, values in (
        ("sport_type", flt.sports),
        ("layer", flt.layers),
        ("visibility", flt.visibilities),
    ):
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    if not flt.commutes:
        where.append("commute = 0")
    rows = db.execute(
        "SELECT activity_id, sport_type, layer, start_s, utc_offset_s, commute, visibility, path "
        f"FROM activities WHERE {' AND '.join(where)} ORDER BY activity_id",
        params,
    ).fetchall()
    return [
        PersonalActivity(aid, sport, layer, start, off, bool(com), vis, from_blob(p, PATH_DTYPE))
        for aid, sport, layer, start, off, com, vis, p in rows
    ]


def athlete_zones(db: sqlite_utils.Database, athlete_id: str) -> list[tuple[float, float, float]]:
    """The athlete's effective privacy zones (lat, lng, radius_m) as applied to the data."""
    row = db.execute("SELECT zones FROM athletes WHERE athlete_id = ?", (athlete_id,)).fetchone()
    return [tuple(z) for z in orjson.loads(row[0])] if row else []  # type: ignore[misc]


def athlete_sport_types(db: sqlite_utils.Database, athlete_id: str) -> set[str]:
    """The sport types of the athlete's stored activities (``--sport`` may name an
    unknown type only if it is one of theirs)."""
    rows = db.execute(
        "SELECT DISTINCT sport_type FROM activities WHERE athlete_id = ? AND status = 'active'",
        (athlete_id,),
    ).fetchall()
    return {sport for (sport,) in rows if sport}


def knows_athlete(db: sqlite_utils.Database, athlete_id: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM activities WHERE athlete_id = ? UNION SELECT 1 FROM athletes "
        "WHERE athlete_id = ? LIMIT 1",
        (athlete_id, athlete_id),
    ).fetchone()
    return row is not None
