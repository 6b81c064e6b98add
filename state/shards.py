"""The store split into shards: ``state_dir/shards/NNNN.db``, one SQLite file each.

Each athlete lives in exactly one shard, chosen by a stable hash of the athlete id, so
everything about an athlete (settings, activities, aggregates) is in one file and
distinct-athlete counts simply add across shards. The number of shards is fixed when the
store is created and recorded in ``shards/store.json``; a process holds whichever shard
files are in its own ``state_dir`` (no shared disk, no shared lock). Machines are added
or removed by moving shard files whole (``heatmetro shards``, docs/scaling.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlite_utils

from heatmetro.core.config import DEV_SALT
from heatmetro.core.errors import StoreError
from heatmetro.state.store import connect, stats

MANIFEST = "store.json"
_SHARD_FILE = re.compile(r"(\d{4})\.db")


def shard_of(key: str, shards: int) -> int:
    """The shard of an athlete (or of a dead letter's source): BLAKE2b, stable everywhere."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def _read_manifest(manifest: Path) -> dict[str, Any]:
    """The store's manifest; a damaged one is a StoreError naming it (never a traceback)."""
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            what = "not a JSON object"
            raise ValueError(what)  # noqa: TRY301 - reported with the parse errors below
        int(meta["shards"])
    except (ValueError, KeyError, TypeError) as exc:
        msg = (
            f"store manifest {manifest} is damaged ({exc}): it records the shard count and "
            "the salt check of the store; restore it from a backup"
        )
        raise StoreError(msg) from None
    return meta


def recorded_salt_check(state_dir: Path) -> str | None:
    """The salt check the store in ``state_dir`` recorded; None without a store (or one
    from before the check). A damaged manifest is a StoreError naming it."""
    manifest = state_dir / "shards" / MANIFEST
    if not manifest.exists():
        return None
    found = _read_manifest(manifest).get("salt_check")
    return str(found) if found is not None else None


def salt_check(salt: str) -> str:
    """A short digest telling salts apart, kept with the store (never the salt itself)."""
    return hashlib.blake2b(salt.encode(), digest_size=8, person=b"hm-salt-check").hexdigest()


def shard_name(shard: int) -> str:
    return f"{shard:04d}"


class ShardedStore:
    """The shard files of one ``state_dir`` (all of a store, or this machine's part)."""

    def __init__(self, state_dir: Path, shards: int) -> None:
        self.dir = state_dir / "shards"
        self.shards = shards

    @classmethod
    def open(
        cls,
        state_dir: Path,
        shards: int,
        *,
        create: bool = False,
        owned: Iterable[int] | None = None,
        salt: str | None = None,
        resolutions: Mapping[str, int] | None = None,
    ) -> ShardedStore:
        """The store in ``state_dir``; with ``create``, make it (with the ``owned`` shards,
        default all) if it does not exist yet. With ``salt``, the store's record of the
        salt it was made with is checked (and, with ``create``, written if missing).

        With ``resolutions`` (``heat_resolution`` ... by name), likewise: the stored
        cells are at the resolutions the store was made with.

        Raises:
            StoreError: no store and not ``create``, or the store was made with another
                number of shards than the config now says, or with another salt, or at
                other resolutions.
        """
        if state_dir.exists() and not state_dir.is_dir():
            msg = f"state_dir {state_dir} is a file, not a folder"
            raise StoreError(msg)
        store = cls(state_dir, shards)
        manifest = store.dir / MANIFEST
        if manifest.exists():
            meta = _read_manifest(manifest)
            recorded = int(meta["shards"])
            if recorded != shards:
                msg = (
                    f"store {store.dir} was created with shards = {recorded}, the config says "
                    f"{shards}: the shard count is fixed when a store is created "
                    f"(set shards = {recorded}, or re-ingest into a new state_dir)"
                )
                raise StoreError(msg)
            if salt is not None:
                store._check_salt(meta, salt, record=create)
                meta = _read_manifest(manifest)
            if resolutions is not None:
                store._check_resolutions(meta, resolutions, record=create)
            return store
        if not create:
            msg = f"no store at {store.dir}: run `heatmetro ingest` first"
            raise StoreError(msg)
        if salt == DEV_SALT:
            msg = (
                f"no secret salt is set, so no new store in {store.dir}: the built-in "
                "development salt is public (it is in heatmetro's source), and with it anyone "
                "could undo the jitter of hidden ends and privacy zones. Set HEATMETRO_SALT to "
                "a long random secret (export HEATMETRO_SALT=$(openssl rand -hex 32)), keep "
                "it, and set the same one for every later run"
            )
            raise StoreError(msg)
        store.dir.mkdir(parents=True, exist_ok=True)
        for s in sorted(set(range(shards) if owned is None else owned)):
            connect(store.path(s)).close()  # create and migrate before workers race for it
        made: dict[str, Any] = {"shards": shards, "hash": "blake2b-64 mod shards"}
        if salt is not None:
            made["salt_check"] = salt_check(salt)
        if resolutions is not None:
            made["resolutions"] = dict(sorted(resolutions.items()))
        store._write_manifest(made)
        return store

    def _check_resolutions(
        self, meta: dict[str, Any], resolutions: Mapping[str, int], *, record: bool
    ) -> None:
        """StoreError if the store's cells are at other H3 resolutions than the config's:
        mixing them would publish cells of two sizes in one file under one label."""
        found = meta.get("resolutions")
        read_from = ""
        if found is None:  # a store from before the record: its cells tell
            found = self._stored_resolutions()
            read_from = " (read from its stored cells)"
        for name, value in sorted(resolutions.items()):
            if name in found and int(found[name]) != value:
                msg = (
                    f"store {self.dir} was made with {name} = {found[name]}{read_from}, the "
                    f"config says {value}: its stored cells are at the resolutions it was made "
                    f"with (set {name} = {found[name]}, or re-ingest into a new state_dir)"
                )
                raise StoreError(msg)
        if read_from and record:  # from now on, recorded
            self._write_manifest({**meta, "resolutions": dict(sorted(resolutions.items()))})

    def _stored_resolutions(self) -> dict[str, int]:
        """The resolutions of the cells of the first athlete-month stored with each kind
        (an H3 index holds its resolution in bits 52-55); empty for an empty store."""
        found: dict[str, int] = {}
        columns = {"heat_resolution": "heat", "metro_resolution": "edges", "od_resolution": "od"}
        for shard in self.local():
            db = connect(self.path(shard), create=False)
            try:
                for name, column in columns.items():
                    if name in found:
                        continue
                    row = db.execute(
                        f"SELECT substr({column}, 1, 8) FROM athlete_months "  # noqa: S608 - fixed names
                        f"WHERE length({column}) >= 8 LIMIT 1"
                    ).fetchone()
                    if row is not None:
                        found[name] = (int.from_bytes(row[0], "little") >> 52) & 0xF
            finally:
                db.close()
            if len(found) == len(columns):
                break
        return found

    def _write_manifest(self, meta: dict[str, Any]) -> None:
        manifest = self.dir / MANIFEST
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta) + "\n")
        tmp.replace(manifest)

    def _check_salt(self, meta: dict[str, Any], salt: str, *, record: bool) -> None:
        """StoreError if the store was made with another salt. The salt seeds the jitter
        of hidden ends and privacy zones: new activities hidden around other points than
        the stored ones would let anyone comparing them average the jitter away."""
        mine = salt_check(salt)
        found = meta.get("salt_check")
        if found is None:  # a store from before the check: from now on, this salt
            if record:
                self._write_manifest({**meta, "salt_check": mine})
            return
        if found != mine:
            if salt == DEV_SALT:
                msg = (
                    f"store {self.dir} was made with a secret salt, and none is set now: "
                    "set HEATMETRO_SALT (or `salt` in the config) to the one it was made with"
                )
                raise StoreError(msg)
            msg = (
                f"store {self.dir} was made with another HEATMETRO_SALT (its check {found}, "
                f"this salt's {mine}): hidden ends and privacy zones would be jittered "
                "around other points than those of the stored activities. Set the salt it "
                "was made with"
            )
            raise StoreError(msg)

    def path(self, shard: int) -> Path:
        return self.dir / f"{shard_name(shard)}.db"

    def local(self) -> list[int]:
        """The shards whose files are in this ``state_dir``, in order."""
        if not self.dir.is_dir():
            return []
        found = (_SHARD_FILE.fullmatch(p.name) for p in self.dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m and int(m.group(1)) < self.shards)

    def connect(self, shard: int) -> sqlite_utils.Database:
        return connect(self.path(shard))

    def connect_all(self) -> list[sqlite_utils.Database]:
        return [self.connect(s) for s in self.local()]

    def stats(self) -> dict[str, Any]:
        """``heatmetro stats`` over this ``state_dir``'s shards (plus ``shards_local``)."""
        parts = []
        for db in self.connect_all():
            try:
                parts.append(stats(db))
            finally:
                db.close()
        out = merge_stats(parts)
        out["shards"] = self.shards
        out["shards_local"] = len(parts)
        return out


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """``stats`` of several shards as one: counts add (an athlete is in one shard only)."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, dict):
                acc = out.setdefault(k, {})
                for kk, vv in v.items():
                    acc[kk] = acc.get(kk, 0) + vv
            elif isinstance(v, list):
                out[k] = sorted(set(out.get(k, [])) | set(v))
            else:
                out[k] = out.get(k, 0) + v
    for k in ("activities_by_status",):
        if k in out:
            out[k] = dict(sorted(out[k].items()))
    return out
