"""Move whole shard files (and Bytewax recovery partitions, and the moved athletes'
personal maps) between machines.

When machines join or leave a cluster, nothing is re-split: each shard file and each
recovery partition file moves whole to the machine that will own it (docs/scaling.md).
``export`` checkpoints the WAL into the file, copies it to a folder (for rsync/scp) and
removes it here; ``import`` checks every athlete in the file belongs to that shard, then
renames it into place. Both run with the cluster stopped.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

from heatmetro.core.errors import StoreError
from heatmetro.state.ingest_lock import no_ingest_running
from heatmetro.state.personal_store import PERSONAL_DB, connect_personal
from heatmetro.state.shards import ShardedStore, shard_of

_SHARD = re.compile(r"(\d{4})\.db")
_RECOVERY = re.compile(r"part-(\d+)\.sqlite3")


def export_files(
    store: ShardedStore, recovery_dir: Path, shards: list[int], recovery: list[int], dest: Path
) -> list[Path]:
    """Move the named shards and recovery partitions of this machine into ``dest``."""
    here = set(store.local())
    missing = [s for s in shards if s not in here]
    if missing:
        msg = f"shards {missing} are not in {store.dir} (this machine has {sorted(here)})"
        raise StoreError(msg)
    parts = [recovery_dir / f"part-{p}.sqlite3" for p in recovery]
    absent = [p.name for p in parts if not p.exists()]
    if absent:
        msg = f"recovery partitions {absent} are not in {recovery_dir}"
        raise StoreError(msg)
    dest.mkdir(parents=True, exist_ok=True)
    files = [store.path(s) for s in shards] + parts
    with no_ingest_running(store.dir.parent):
        # Recovery partitions too: after a stop by signal their newest state is in the
        # WAL, and a partition moved without it is "too old to resume from". All of them
        # first: a file in use refuses the export before anything has moved.
        for src in files:
            _checkpoint(src)
        moved = []
        personal = _export_personal(store, shards, dest)
        for src in files:
            moved.append(_move(src, dest / src.name))
            for extra in (Path(f"{src}-wal"), Path(f"{src}-shm")):
                extra.unlink(missing_ok=True)
    if personal is not None:
        moved.append(personal)
    return moved


def _export_personal(store: ShardedStore, shards: list[int], dest: Path) -> Path | None:
    """The personal maps of the moved shards' athletes (``personal.db`` holds every
    athlete of this machine): copied into ``dest/personal.db``, then removed here."""
    here = store.dir.parent / PERSONAL_DB
    if not here.exists() or not shards:
        return None
    connect_personal(here).close()  # its schema up to date, as the export's
    target = dest / PERSONAL_DB
    if target.exists():
        msg = f"{target} already exists: import it first, or export into another folder"
        raise StoreError(msg)
    tmp = dest / f"{PERSONAL_DB}.part"
    tmp.unlink(missing_ok=True)
    connect_personal(tmp).close()  # the schema, migrated
    Path(f"{tmp}.migrate.lock").unlink(missing_ok=True)  # migrating's, not a file to move
    con = sqlite3.connect(tmp)
    try:
        con.create_function("shard_of", 2, shard_of, deterministic=True)
        con.execute("ATTACH DATABASE ? AS here", (str(here),))
        moving = ",".join(str(s) for s in shards)
        with con:
            for table in ("athletes", "activities"):
                cols = _columns(con, table)
                where = f"shard_of(athlete_id, {store.shards}) IN ({moving})"
                con.execute(
                    f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM here.{table} WHERE {where}"
                )  # noqa: S608 - names and numbers only
        con.close()
        tmp.replace(target)
        con = sqlite3.connect(here)
        con.create_function("shard_of", 2, shard_of, deterministic=True)
        with con:
            for table in ("athletes", "activities"):
                con.execute(
                    f"DELETE FROM {table} WHERE shard_of(athlete_id, {store.shards}) IN ({moving})"
                )  # noqa: S608 - numbers only
    finally:
        con.close()
    return target


def _import_personal(store: ShardedStore, path: Path) -> Path:
    """Merge an exported ``personal.db`` into this machine's (its athletes are new here)."""
    here = store.dir.parent / PERSONAL_DB
    connect_personal(here).close()
    con = sqlite3.connect(here.resolve().as_uri(), uri=True)
    try:
        # A URI (so read-only), escaped: a folder name with # or ? broke a raw one.
        con.execute("ATTACH DATABASE ? AS moved", (_read_only_uri(path),))
        clash = con.execute(
            "SELECT athlete_id FROM moved.athletes WHERE athlete_id IN (SELECT athlete_id FROM main.athletes) "
            "UNION SELECT athlete_id FROM moved.activities WHERE activity_id IN (SELECT activity_id FROM main.activities) LIMIT 1"
        ).fetchone()
        if clash is not None:
            msg = f"{path}: athlete {clash[0]} already has a personal map here; not imported"
            raise StoreError(msg)
        with con:
            for table in ("athletes", "activities"):
                cols = _columns(con, table)
                con.execute(f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM moved.{table}")  # noqa: S608 - fixed names
    finally:
        con.close()
    path.unlink()
    return here


def _checkpoint(path: Path) -> None:
    """Everything in ``path``'s write-ahead log into the file itself."""
    con = sqlite3.connect(path)
    try:
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        con.close()
    if busy:
        msg = f"{path} is in use (a running ingest?): stop the cluster before moving files"
        raise StoreError(msg)


def import_files(store: ShardedStore, recovery_dir: Path, files: list[Path]) -> list[Path]:
    """Place shard files (``NNNN.db``) and recovery partitions (``part-N.sqlite3``) here."""
    with no_ingest_running(store.dir.parent):
        return _import_files(store, recovery_dir, files)


def _import_files(store: ShardedStore, recovery_dir: Path, files: list[Path]) -> list[Path]:
    placed = []
    for f in files:
        if not f.is_file():
            msg = f"{f}: no such file"
            raise StoreError(msg)
        if m := _SHARD.fullmatch(f.name):
            shard = int(m.group(1))
            target = store.path(shard)
            if shard >= store.shards:
                msg = f"{f}: shard {shard} does not exist in a store of {store.shards} shards"
                raise StoreError(msg)
            _check_athletes(f, shard, store.shards)
        elif f.name == PERSONAL_DB:
            placed.append(_import_personal(store, f))
            continue
        elif _RECOVERY.fullmatch(f.name):
            target = recovery_dir / f.name
        else:
            msg = f"{f}: not a shard file (NNNN.db) nor a recovery partition (part-N.sqlite3)"
            raise StoreError(msg)
        if target.exists():
            msg = f"{f}: {target} already exists here; a file must live on one machine only"
            raise StoreError(msg)
        target.parent.mkdir(parents=True, exist_ok=True)
        placed.append(_move(f, target))
    return placed


def _read_only_uri(path: Path) -> str:
    # immutable: nothing writes an exported file, and a WAL-mode reader would otherwise
    # leave -wal and -shm files beside it. as_uri escapes #, ? and % in the path.
    return path.resolve().as_uri() + "?mode=ro&immutable=1"


def _columns(con: sqlite3.Connection, table: str) -> str:
    """The columns of ``table`` in the main database, named (never ``SELECT *``: two
    files' column orders need not agree)."""
    names = [row[1] for row in con.execute(f"PRAGMA main.table_info({table})")]
    return ", ".join(f'"{n}"' for n in names)


def _check_athletes(path: Path, shard: int, shards: int) -> None:
    con = sqlite3.connect(_read_only_uri(path), uri=True)
    try:
        ids = con.execute(
            "SELECT athlete_id FROM athletes UNION SELECT athlete_id FROM activities"
        ).fetchall()
    finally:
        con.close()
    wrong = next((a for (a,) in ids if shard_of(a, shards) != shard), None)
    if wrong is not None:
        msg = f"{path}: holds athletes of another shard than {shard} (of {shards}); not imported"
        raise StoreError(msg)


def _move(src: Path, dst: Path) -> Path:
    tmp = dst.with_name(dst.name + ".part")
    shutil.copy2(src, tmp)  # across file systems too; the rename makes it appear whole
    tmp.replace(dst)
    src.unlink()
    return dst
