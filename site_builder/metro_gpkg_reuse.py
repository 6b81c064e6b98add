"""A rebuild's GeoPackage from the last build's: ``state_dir/metro_gpkg_cache.*``.

The GeoPackage's rows are the edge files' rows (``metro_text_cache`` keeps those of the
edges not recounted, byte for byte) and the small tables of hexagons and O/D pairs. So
a rebuild has GDAL write the recounted edges' rows and the small tables only, and takes
every other row from the last build's ``metro.gpkg`` (``metro_gpkg_canon.assemble``):
the same bytes as writing it whole, the GDAL part ~10x smaller.

Each build links its ``metro.gpkg`` into ``state_dir`` (``metro_gpkg_cache.gpkg``: a
hard link, a copy across file systems) and records its SHA-256 and the Metro cache
file's token (``metro_cache``) as that build saved it (``metro_gpkg_cache.json``),
keyed by the code and the SQLite and GDAL versions that make its bytes: the file is
the one the kept text rows describe, whichever build is published now. Its rows are
taken only when all of that holds, the text cache keeps rows of the same build and
every table of the file has the rows the text cache says it had; anything else writes
the file whole.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.code_digest import code_digest
from heatmetro.site_builder.metro_gpkg_canon import Run, runs, whole
from heatmetro.site_builder.metro_reuse import link_or_copy
from heatmetro.site_builder.metro_text_cache import TextCache

__all__ = ["GPKG_CACHE", "GpkgPlan", "Placement", "gpkg_key", "plan_reuse", "save_record"]

FORMAT = 1
GPKG_CACHE = "metro_gpkg_cache.json"
GPKG_BASE = "metro_gpkg_cache.gpkg"  # the last build's metro.gpkg, beside the record
_CODE = ("metro_gpkg.py", "metro_gpkg_canon.py", "metro_gpkg_reuse.py")
OLD, NEW = "old", "new"  # the sources' aliases: the last build's file, GDAL's of this one


def gpkg_key(gdal_version: str) -> str:
    """What the GeoPackage's bytes depend on besides its rows."""
    here = Path(__file__).resolve().parent
    code = code_digest([here / n for n in _CODE])
    return f"{FORMAT}:{code}:sqlite {sqlite3.sqlite_version}:gdal {gdal_version}"


@dataclass(frozen=True)
class Placement:
    """One table's rows: those GDAL writes (``fresh``: indices, ascending) and how the
    table's rows come from the last build's file and from GDAL's (``placed``)."""

    fresh: np.ndarray
    placed: list[Run]


@dataclass(frozen=True)
class GpkgPlan:
    """The last build's rows taken: its file, the key its bytes were made with (the
    GeoPackage writer compares it with its own) and each table's placement."""

    base: Path
    key: str
    tables: dict[str, Placement]


#: Per table: its rows, and per row its edge and place (None: a table without them).
Tables = dict[str, tuple[int, np.ndarray | None, np.ndarray | None]]


def plan_reuse(
    record: Path, token: str | None, texts: TextCache | None, tables: Tables
) -> GpkgPlan | None:
    """What to write and what to take from the last build's ``metro.gpkg``, given
    ``record`` (the cache file), ``token`` (the Metro cache file's as this build read it)
    and ``texts`` (the edge files' rows kept from the last build); None: write every
    row. Called before this build saves its own text cache."""
    base = record.with_name(GPKG_BASE)
    if texts is None or token is None:
        return None
    try:
        meta = json.loads(record.read_bytes())
        key = meta.get("key")
        if not isinstance(key, str) or meta.get("token") != token:
            return None
        with base.open("rb") as fh:
            if hashlib.file_digest(fh, "sha256").hexdigest() != meta.get("sha256"):
                return None
    except (OSError, ValueError, AttributeError):
        return None
    plans: dict[str, Placement] = {}
    kept_counts: dict[str, int] = {}
    for table, (n, edge, place) in tables.items():
        kept = None
        if edge is not None and place is not None:
            kept = texts.kept_rows(f"{table}.csv", edge, place)
        if kept is None:  # every row written anew
            plans[table] = Placement(np.arange(n), whole(NEW, n))
            continue
        fresh, was = kept
        redo = np.flatnonzero(fresh)
        plans[table] = Placement(
            redo,
            [*runs(OLD, np.flatnonzero(~was), np.flatnonzero(~fresh)),
             *runs(NEW, np.arange(len(redo)), redo)],
        )  # fmt: skip
        kept_counts[table] = len(was)
    if not _has_rows(base, kept_counts):
        return None
    return GpkgPlan(base, key, plans)


def _has_rows(path: Path, counts: dict[str, int]) -> bool:
    """Each table of ``counts`` has that many rows in ``path``, keyed 1 to that many."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for table, n in counts.items():
                quoted = '"' + table.replace('"', '""') + '"'
                got = con.execute(f"SELECT count(*), min(fid), max(fid) FROM {quoted}").fetchone()  # noqa: S608
                if tuple(got) != ((n, 1, n) if n else (0, None, None)):
                    return False
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return True


def save_record(record: Path, key: str | None, token: str | None, sha256: str, gpkg: Path) -> None:
    """Keep this build's GeoPackage ``gpkg`` (``sha256``) with the Metro cache file's
    ``token`` as this build saved it (None: not saved, so nothing to pair with)."""
    base = record.with_name(GPKG_BASE)
    record.unlink(missing_ok=True)  # first: no record ever names another file
    if key is None or token is None:
        base.unlink(missing_ok=True)
        return
    linked, tmp = temporary_for(base), temporary_for(record)
    try:
        link_or_copy(gpkg, linked)
        linked.replace(base)
        tmp.write_text(json.dumps({"key": key, "token": token, "sha256": sha256}))
        tmp.replace(record)
    except OSError:  # the next build writes the file whole
        for path in (linked, tmp, base):
            path.unlink(missing_ok=True)
