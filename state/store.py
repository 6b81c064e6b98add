"""The SQLite store: schema (by migrations), connections, and what ``heatmetro stats`` shows.

Tables:

* ``athletes``: the newest settings seen per athlete (effective, jittered zones only).
* ``activities``: one row per activity id: its newest version's metadata and trimmed
  path, or a tombstone (``deleted``/``hidden``/``purged``...) so stale events stay stale.
* ``athlete_months``: per athlete, local month and sport layer, the aggregates the
  snapshot reads (heat cells, edge crossings, hexagons, OD), derived from ``activities``.
* ``dead_letters``: records that broke the contract, by source and position.
* ``dirty_months``: athlete-months whose aggregates are due to be rebuilt.
* ``athlete_stamps``: per athlete, a random stamp redrawn by triggers whenever any of
  their rows above changes (the snapshot's window cache, ``site_builder.window_cache``).

Indexes serve the snapshot's reads: by athlete and month, by aggregate month, and by an
activity's local start (the weekly map's 7 days).
"""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import sqlite_utils
from sqlite_utils import Migrations

from heatmetro.core.environment import describe_store_error
from heatmetro.core.errors import StoreError
from heatmetro.core.limits import MAX_TRACK_M
from heatmetro.core.masking import mask_locations
from heatmetro.state.records import EDGE_DTYPE, HEAT_DTYPE, PATH_DTYPE
from heatmetro.state.sql_script import execute_script

migrations = Migrations("heatmetro")

#: Beside the shards: taken while a store's schema is brought up to date.
MIGRATE_LOCK = ".migrate.lock"

#: An activity's local start in seconds (its day and month are the local ones).
LOCAL_START = "start_s + utc_offset_s"


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    execute_script(
        db,
        """
        CREATE TABLE athletes (
            athlete_id TEXT PRIMARY KEY,
            updated_ms INTEGER NOT NULL,
            opt_out INTEGER NOT NULL DEFAULT 0,
            hide_start_end_m REAL NOT NULL,
            zones TEXT NOT NULL DEFAULT '[]'
        );
        CREATE TABLE activities (
            activity_id TEXT PRIMARY KEY,
            athlete_id TEXT NOT NULL,
            updated_ms INTEGER NOT NULL,
            status TEXT NOT NULL,
            sport_type TEXT,
            layer TEXT,
            commute INTEGER,
            start_s INTEGER,
            utc_offset_s INTEGER,
            month TEXT,
            hide_override_m REAL,
            cut_start_m REAL,
            cut_end_m REAL,
            zone_key TEXT,
            path BLOB,
            heat BLOB,
            edges BLOB,
            hexagons BLOB,
            od BLOB,
            fixes_in INTEGER,
            fixes_kept INTEGER,
            max_speed_ms REAL
        );
        CREATE INDEX activities_by_athlete_month ON activities (athlete_id, month);
        CREATE TABLE athlete_months (
            athlete_id TEXT NOT NULL,
            month TEXT NOT NULL,
            layer TEXT NOT NULL,
            activities INTEGER NOT NULL,
            heat BLOB NOT NULL,
            edges BLOB NOT NULL,
            hexagons BLOB NOT NULL,
            od BLOB NOT NULL,
            PRIMARY KEY (athlete_id, month, layer)
        );
        CREATE INDEX athlete_months_by_month ON athlete_months (month);
        CREATE TABLE dead_letters (
            source TEXT NOT NULL,
            position INTEGER NOT NULL,
            reason TEXT NOT NULL,
            raw TEXT NOT NULL,
            PRIMARY KEY (source, position)
        );
        """,
    )


@migrations()
def m002_dirty_months(db: sqlite_utils.Database) -> None:
    # Athlete-months whose aggregates must be rebuilt; written in the same transaction as
    # the activities, so a crash never loses one (see StoreWriter.refresh).
    execute_script(
        db,
        """
        CREATE TABLE dirty_months (
            athlete_id TEXT NOT NULL,
            month TEXT NOT NULL,
            PRIMARY KEY (athlete_id, month)
        );
        """,
    )


@migrations()
def m003_gps_faults(db: sqlite_utils.Database) -> None:
    # GPS faults cleaned from each stored activity version (``heatmetro stats`` sums them).
    for col in (
        "spike_fixes",
        "bad_end_fixes",
        "vehicle_fixes",
        "vehicle_stretches",
        "pause_splits",
    ):
        db.execute(f"ALTER TABLE activities ADD COLUMN {col} INTEGER")


GPS_FAULTS = {
    "spike_fixes": "fixes dropped as spikes",
    "bad_end_fixes": "bad first/last fixes dropped (cold starts)",
    "vehicle_fixes": "fixes dropped as too fast for the sport",
    "vehicle_stretches": "stretches cut as vehicles",
    "pause_splits": "splits at clock jumps or long pauses",
    "overlong_fixes": f"fixes beyond the longest track one activity draws ({MAX_TRACK_M / 1e3:,.0f} km)",
    "wrong_time_fixes": "fixes dropped for a wrong time (out of order with the fixes around them)",
    "clock_resets": "clock resets (the track split there, every fix kept)",
}


@migrations()
def m004_streets(db: sqlite_utils.Database) -> None:
    # The activity's matched street edges (state.street_ops.STREET_DTYPE), with a base map.
    db.execute("ALTER TABLE activities ADD COLUMN streets BLOB")


@migrations()
def m005_metro_path(db: sqlite_utils.Database) -> None:
    # Metro crossings now come from their own path (Metro resolution, hysteresis) and
    # edge records gained an ``ebike`` field. The raw points behind older stores are
    # gone, so their activities keep counting in the heatmap but drop out of Metro
    # until re-ingested: missing counts, never wrong ones.
    execute_script(
        db,
        """
        ALTER TABLE activities ADD COLUMN metro_path BLOB;
        UPDATE activities SET edges = NULL WHERE edges IS NOT NULL;
        UPDATE athlete_months SET edges = x'';
        """,
    )


# Every table an athlete's published window is derived from (opt-out, settings, paths,
# aggregates, pending rebuilds): any write to one of their rows redraws their stamp.
STAMPED_TABLES = ("athletes", "activities", "athlete_months", "dirty_months")


def _stamp(athlete: str) -> str:
    # DELETE then INSERT, no conflict clause: the outer statement's ON CONFLICT policy
    # (an INSERT OR IGNORE) would otherwise apply to the trigger's insert too.
    return (
        f"DELETE FROM athlete_stamps WHERE athlete_id = {athlete}; "
        f"INSERT INTO athlete_stamps VALUES ({athlete}, randomblob(16));"
    )


@migrations()
def m006_athlete_stamps(db: sqlite_utils.Database) -> None:
    # Random, not a counter: a store restored from a backup keeps stamps that match its
    # rows, and a stamp drawn later can never repeat one a cache saw (2^-128).
    db.execute("CREATE TABLE athlete_stamps (athlete_id TEXT PRIMARY KEY, stamp BLOB NOT NULL)")
    union = " UNION ".join(f"SELECT athlete_id FROM {t}" for t in STAMPED_TABLES)
    db.execute(f"INSERT INTO athlete_stamps SELECT athlete_id, randomblob(16) FROM ({union})")
    for t in STAMPED_TABLES:
        execute_script(
            db,
            f"""
            CREATE TRIGGER {t}_stamp_insert AFTER INSERT ON {t} BEGIN {_stamp("NEW.athlete_id")} END;
            CREATE TRIGGER {t}_stamp_delete AFTER DELETE ON {t} BEGIN {_stamp("OLD.athlete_id")} END;
            CREATE TRIGGER {t}_stamp_update AFTER UPDATE ON {t} BEGIN
                {_stamp("OLD.athlete_id")} {_stamp("NEW.athlete_id")}
            END;
            """,
        )


@migrations()
def m007_local_start(db: sqlite_utils.Database) -> None:
    # The weekly map reads 7 days of local start times (``site_builder.weekly``): with this
    # index that read costs the week's activities, not every activity ever stored.
    # SQLite uses it only where a query spells this same expression.
    db.execute(f"CREATE INDEX activities_by_local_start ON activities ({LOCAL_START})")


@migrations()
def m008_mask_dead_letters(db: sqlite_utils.Database) -> None:
    # Dead letters kept a broken record's raw text, coordinates and all: masked now as
    # new ones are (``core.masking``); the next ingest rewrites dead_letters.jsonl.
    rows = db.execute("SELECT rowid, raw FROM dead_letters").fetchall()
    db.conn.executemany(
        "UPDATE dead_letters SET raw = ? WHERE rowid = ?",
        [(mask_locations(raw), rowid) for rowid, raw in rows if raw],
    )


@migrations()
def m009_cut_bounds(db: sqlite_utils.Database) -> None:
    # How far the stored path's first (last) cell may lie from the activity's start
    # (end) once a larger hide distance was applied (``hide_more_plan``): the next,
    # larger one is then still kept from any start. NULL: as ingested.
    db.execute("ALTER TABLE activities ADD COLUMN start_within_m REAL")
    db.execute("ALTER TABLE activities ADD COLUMN end_within_m REAL")


@migrations()
def m010_mask_dead_letter_reasons(db: sqlite_utils.Database) -> None:
    # A reason may quote the fix it refused (its valid half is a place), and a number
    # with an exponent is a coordinate too: both masked now as new ones are.
    rows = db.execute("SELECT rowid, reason, raw FROM dead_letters").fetchall()
    db.conn.executemany(
        "UPDATE dead_letters SET reason = ?, raw = ? WHERE rowid = ?",
        [(mask_locations(r or ""), mask_locations(w or ""), i) for i, r, w in rows],
    )


@migrations()
def m011_mask_scaled_coordinates(db: sqlite_utils.Database) -> None:
    # A coordinate scaled to an integer (6016991 for 60.16991) is a place too: masked
    # now as new ones are.
    m010_mask_dead_letter_reasons(db)


@migrations()
def m012_overlong_fixes(db: sqlite_utils.Database) -> None:
    # Fixes beyond the longest track one activity draws (core.limits.MAX_TRACK_M).
    db.execute("ALTER TABLE activities ADD COLUMN overlong_fixes INTEGER")


@migrations()
def m013_clock_faults(db: sqlite_utils.Database) -> None:
    # A recorder's clock going back (core.clock): resets taken, wrong times dropped.
    db.execute("ALTER TABLE activities ADD COLUMN clock_resets INTEGER")
    db.execute("ALTER TABLE activities ADD COLUMN wrong_time_fixes INTEGER")


def connect(db_path: Path, *, create: bool = True) -> sqlite_utils.Database:
    """Open the store (WAL, patient with other writers) and bring its schema up to date."""
    if db_path.parent.exists() and not db_path.parent.is_dir():
        msg = f"state_dir {db_path.parent} is a file, not a folder"
        raise StoreError(msg)
    if not create and not db_path.exists():
        msg = f"no store at {db_path}: run `heatmetro ingest` first"
        raise StoreError(msg)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so two Bytewax workers
        # writing at once queue on the lock instead of failing on a read->write upgrade.
        conn = sqlite3.connect(db_path, timeout=120, isolation_level=None, check_same_thread=False)
        # No sqlite-utils plugins: code of whatever else is installed has no business
        # on the store's connection (and finding it scans every installed package's
        # metadata: ~30 ms of each process's start).
        db = sqlite_utils.Database(conn, execute_plugins=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=120000")
        if migrations.pending(db):
            # An upgraded store is opened by every worker process at once, and two that
            # both saw a migration pending would both apply it (the second fails): the
            # first migrates while the others wait on a lock file (one per folder, not
            # one more file per shard), then find none left.
            with (db_path.parent / MIGRATE_LOCK).open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                migrations.apply(db)
    except sqlite3.DatabaseError as exc:
        msg = describe_store_error(exc, db_path)
        raise StoreError(msg) from None
    return db


class immediate:  # noqa: N801 - reads like a keyword: `with immediate(db):`
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error): one batch, all or nothing."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def __enter__(self) -> sqlite_utils.Database:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def stats(db: sqlite_utils.Database) -> dict[str, Any]:
    """What is stored, for ``heatmetro stats`` (counts only, no identifiers)."""

    def one(sql: str) -> Any:
        return db.execute(sql).fetchone()[0]

    by_status = dict(
        db.execute(
            "SELECT status, count(*) FROM activities GROUP BY status ORDER BY status"
        ).fetchall()
    )
    months = [r[0] for r in db.execute("SELECT DISTINCT month FROM athlete_months ORDER BY month")]
    return {
        "athletes": one(
            "SELECT count(*) FROM (SELECT athlete_id FROM athletes UNION SELECT athlete_id FROM activities)"
        ),
        "athletes_contributing": one("SELECT count(DISTINCT athlete_id) FROM athlete_months"),
        "athletes_opted_out": one("SELECT count(*) FROM athletes WHERE opt_out"),
        "activities": one("SELECT count(*) FROM activities"),
        "activities_by_status": by_status,
        "path_cells": one("SELECT coalesce(sum(length(path)), 0) FROM activities")
        // PATH_DTYPE.itemsize,
        "aggregate_rows": one("SELECT count(*) FROM athlete_months"),
        "heat_entries": one("SELECT coalesce(sum(length(heat)), 0) FROM athlete_months")
        // HEAT_DTYPE.itemsize,
        "edge_entries": one("SELECT coalesce(sum(length(edges)), 0) FROM athlete_months")
        // EDGE_DTYPE.itemsize,
        "months": months,
        # The last migration applied: after an upgrade, every shard should name the same.
        "schema": [one("SELECT name FROM _sqlite_migrations ORDER BY id DESC LIMIT 1")],
        "dead_letters": one("SELECT count(*) FROM dead_letters"),
        "gps_faults": dict(
            zip(
                GPS_FAULTS,
                db.execute(
                    "SELECT "
                    + ", ".join(f"coalesce(sum({c}), 0)" for c in GPS_FAULTS)
                    + " FROM activities"
                ).fetchone(),
                strict=True,
            )
        ),
        "db_bytes": sum(p.stat().st_size for p in _db_files(db)),
    }


def _db_files(db: sqlite_utils.Database) -> list[Path]:
    row = db.execute("PRAGMA database_list").fetchone()
    main = Path(row[2])
    return [p for p in (main, Path(f"{main}-wal")) if p.exists()]


def count_dead_letters(dbs: list[sqlite_utils.Database]) -> int:
    """How many dead letters the shards hold. Closes the connections."""
    total = 0
    for db in dbs:
        try:
            total += int(db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
        finally:
            db.close()
    return total


def export_dead_letters(dbs: list[sqlite_utils.Database], path: Path) -> int:
    """Rewrite the dead-letter JSONL file from the shards' tables (sorted: deterministic).

    Closes the connections."""
    rows = []
    for db in dbs:
        rows += db.execute("SELECT source, position, reason, raw FROM dead_letters").fetchall()
        db.close()
    rows.sort(key=lambda r: (r[0], r[1]))
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        for source, position, reason, raw in rows:
            fh.write(
                orjson.dumps({"source": source, "position": position, "reason": reason, "raw": raw})
                + b"\n"
            )
    tmp.replace(path)
    return len(rows)
