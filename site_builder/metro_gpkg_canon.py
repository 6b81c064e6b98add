"""``metro.gpkg`` in one canonical form: the same tables and rows give the same bytes,
however the file came together.

GDAL writes a GeoPackage whole: ~1.3 s for the Metro tables of four towns, which a
rebuild paid even when it recounted a handful of edges. A rebuild has most rows already,
in the published file; it takes them from there and has GDAL write only the rows of the
recounted edges (``metro_gpkg_reuse``). Both ways end in ``assemble``, which puts every
row in place from runs of consecutive rows of its sources, so the bytes cannot tell:

* every row is re-encoded by this process's SQLite (``INSERT ... SELECT``; GDAL's own
  SQLite may encode a whole-number REAL otherwise);
* each geometry column's R-tree index is bulk-loaded from the geometries' envelopes
  (``rtree_nodes``: as GDAL does it, ~10x faster than SQLite's row-by-row insert,
  whose tree would also depend on the order of past writes), with the GeoPackage's
  triggers and extension row;
* the feature counts, extents and ``sqlite_sequence`` are set from the rows;
* ``VACUUM INTO`` writes the file anew, table after table; its header's schema cookie
  (which counts past schema changes) is then set to 1.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Run", "assemble", "layout", "rtree_nodes", "whole"]

RTREE = "gpkg_rtree_index"
RTREE_DEFINITION = "http://www.geopackage.org/spec120/#extension_rtree"
#: The GeoPackage's R-tree triggers (its spec's text, as GDAL writes it): ``{t}`` the
#: table, ``{g}`` the geometry column, ``{i}`` the primary key.
RTREE_TRIGGERS = (
    ("insert", 'AFTER INSERT ON "{t}" WHEN (new."{g}" NOT NULL AND NOT ST_IsEmpty(NEW."{g}")) '
     'BEGIN INSERT OR REPLACE INTO "{r}" VALUES (NEW."{i}",ST_MinX(NEW."{g}"), '
     'ST_MaxX(NEW."{g}"),ST_MinY(NEW."{g}"), ST_MaxY(NEW."{g}")); END'),
    ("update1", 'AFTER UPDATE OF "{g}" ON "{t}" WHEN OLD."{i}" = NEW."{i}" AND '
     '(NEW."{g}" NOTNULL AND NOT ST_IsEmpty(NEW."{g}")) BEGIN INSERT OR REPLACE INTO "{r}" '
     'VALUES (NEW."{i}",ST_MinX(NEW."{g}"), ST_MaxX(NEW."{g}"),ST_MinY(NEW."{g}"), '
     'ST_MaxY(NEW."{g}")); END'),
    ("update2", 'AFTER UPDATE OF "{g}" ON "{t}" WHEN OLD."{i}" = NEW."{i}" AND '
     '(NEW."{g}" ISNULL OR ST_IsEmpty(NEW."{g}")) BEGIN DELETE FROM "{r}" WHERE id = '
     'OLD."{i}"; END'),
    ("update3", 'AFTER UPDATE ON "{t}" WHEN OLD."{i}" != NEW."{i}" AND (NEW."{g}" NOTNULL '
     'AND NOT ST_IsEmpty(NEW."{g}")) BEGIN DELETE FROM "{r}" WHERE id = OLD."{i}"; INSERT '
     'OR REPLACE INTO "{r}" VALUES (NEW."{i}",ST_MinX(NEW."{g}"), ST_MaxX(NEW."{g}"),'
     'ST_MinY(NEW."{g}"), ST_MaxY(NEW."{g}")); END'),
    ("update4", 'AFTER UPDATE ON "{t}" WHEN OLD."{i}" != NEW."{i}" AND (NEW."{g}" ISNULL OR '
     'ST_IsEmpty(NEW."{g}")) BEGIN DELETE FROM "{r}" WHERE id IN (OLD."{i}", NEW."{i}"); END'),
    ("delete", 'AFTER DELETE ON "{t}" WHEN old."{g}" NOT NULL BEGIN DELETE FROM "{r}" WHERE '
     'id = OLD."{i}"; END'),
)  # fmt: skip
_EXTENSIONS = (
    "CREATE TABLE IF NOT EXISTS gpkg_extensions (table_name TEXT,column_name TEXT,"
    "extension_name TEXT NOT NULL,definition TEXT NOT NULL,scope TEXT NOT NULL,"
    "CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))"
)
_SCHEMA_COOKIE = 40  # the header's offset of the schema cookie (sqlite.org/fileformat2)


@dataclass(frozen=True)
class Run:
    """Rows ``first..last`` (primary keys) of the table in database ``source`` (an alias
    given to ``assemble``), placed from key ``to`` on."""

    source: str
    first: int
    last: int
    to: int


def whole(source: str, n: int) -> list[Run]:
    """All ``n`` rows of ``source``'s table, in place."""
    return [Run(source, 1, n, 1)] if n else []


def runs(source: str, old_at: np.ndarray, new_at: np.ndarray) -> list[Run]:
    """Rows ``old_at`` (0-based, ascending) of ``source`` to rows ``new_at`` (the same
    count, ascending): one run per stretch where both go up by one."""
    if not len(old_at):
        return []
    cut = np.flatnonzero((np.diff(old_at) != 1) | (np.diff(new_at) != 1)) + 1
    first = np.r_[0, cut]
    last = np.r_[cut, len(old_at)] - 1
    return [
        Run(source, a + 1, b + 1, t + 1)
        for a, b, t in zip(
            old_at[first].tolist(), old_at[last].tolist(), new_at[first].tolist(), strict=True
        )  # fmt: skip
    ]


def assemble(
    base: Path, out: Path, sources: Mapping[str, Path], placed: Mapping[str, Sequence[Run]]
) -> None:
    """Write ``out``: the GeoPackage ``base`` (its schema and metadata) with each data
    table's rows as ``placed`` (table name: runs from ``sources``, alias: file), in the
    canonical form (module docstring). Every data table of ``base`` must be in
    ``placed``. An ``OSError`` if the disk (or a size limit) stops it; ``out`` is then
    not written."""
    staging = out.with_name(out.name + ".staging")
    out.unlink(missing_ok=True)
    try:
        shutil.copyfile(base, staging)
        con = sqlite3.connect(staging, isolation_level=None)
        try:
            _assemble(con, sources, placed)
            con.execute("VACUUM INTO ?", (str(out),))
        finally:
            con.close()
        with out.open("r+b") as fh:  # VACUUM INTO counts the source's schema changes on
            fh.seek(_SCHEMA_COOKIE)
            fh.write((1).to_bytes(4, "big"))
    except sqlite3.Error as exc:
        out.unlink(missing_ok=True)
        # SQLite says "database or disk is full", whichever: a full disk or a size limit.
        why = f"SQLite could not write it ({exc}; is the disk full, or a file size limit reached?)"
        raise OSError(errno.EIO, why, str(out)) from exc
    finally:
        staging.unlink(missing_ok=True)


def _assemble(
    con: sqlite3.Connection, sources: Mapping[str, Path], placed: Mapping[str, Sequence[Run]]
) -> None:
    # No journal, no sync: a failed build leaves an unpublished folder, discarded whole.
    con.execute("PRAGMA journal_mode = OFF")
    con.execute("PRAGMA synchronous = OFF")
    for alias, path in sources.items():
        con.execute("ATTACH DATABASE ? AS " + _quote(alias), (f"file:{path}?mode=ro",))
    con.execute("BEGIN")
    tables = [r[0] for r in con.execute("SELECT table_name FROM gpkg_contents ORDER BY rowid")]
    geometry = con.execute(
        "SELECT table_name, column_name FROM gpkg_geometry_columns ORDER BY rowid"
    ).fetchall()
    marks = ",".join("?" * len(tables))
    triggers = con.execute(
        f"SELECT name, sql FROM main.sqlite_schema WHERE type = 'trigger' "  # noqa: S608
        f"AND tbl_name IN ({marks}) ORDER BY rowid",
        tables,
    ).fetchall()
    # The data tables' triggers off while their rows are put in (and the R-tree ones
    # call GDAL's SQL functions): remade after, in the same order, so whichever file
    # came in, the schema ends alike.
    rtree_names = {f"rtree_{t}_{g}" for t, g in geometry}
    for name, _ in triggers:
        con.execute(f"DROP TRIGGER {_quote(name)}")
    for name in sorted(rtree_names):
        con.execute(f"DROP TABLE IF EXISTS {_quote(name)}")
    for table in tables:
        _place(con, table, placed[table])
    con.execute(_EXTENSIONS)
    others = con.execute(
        "SELECT * FROM gpkg_extensions WHERE extension_name != ? ORDER BY rowid", (RTREE,)
    ).fetchall()
    con.execute("DELETE FROM gpkg_extensions")
    con.executemany("INSERT INTO gpkg_extensions VALUES (?, ?, ?, ?, ?)", others)
    con.execute("DELETE FROM sqlite_sequence")
    for table in tables:
        key = _primary_key(con, table)
        count, top = con.execute(f"SELECT count(*), max({key}) FROM {_quote(table)}").fetchone()  # noqa: S608
        if top is not None:
            con.execute("INSERT INTO sqlite_sequence VALUES (?, ?)", (table, top))
        con.execute(
            "UPDATE gpkg_ogr_contents SET feature_count = ? WHERE lower(table_name) = lower(?)",
            (count, table),
        )
    for table, column in geometry:
        _index(con, table, column)
    for name, sql in triggers:
        if not any(name.startswith(f"{r}_") for r in rtree_names):
            con.execute(sql)
    con.execute("COMMIT")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _primary_key(con: sqlite3.Connection, table: str) -> str:
    keys = [r[1] for r in con.execute(f"PRAGMA main.table_info({_quote(table)})") if r[5]]
    assert len(keys) == 1, f"GeoPackage table {table!r} has primary key {keys}"
    return _quote(keys[0])


def _place(con: sqlite3.Connection, table: str, placed: Sequence[Run]) -> None:
    """The table's rows, all of them anew: each run copied, its keys moved."""
    key = _primary_key(con, table)
    columns = ", ".join(
        _quote(r[1]) for r in con.execute(f"PRAGMA main.table_info({_quote(table)})") if not r[5]
    )
    con.execute(f"DELETE FROM main.{_quote(table)}")  # noqa: S608
    for source in sorted({r.source for r in placed}):
        sql = (
            f"INSERT INTO main.{_quote(table)} ({key}, {columns}) "  # noqa: S608
            f"SELECT {key} + ?, {columns} FROM {_quote(source)}.{_quote(table)} "
            f"WHERE {key} BETWEEN ? AND ?"
        )
        con.executemany(
            sql, [(r.to - r.first, r.first, r.last) for r in placed if r.source == source]
        )


def _index(con: sqlite3.Connection, table: str, column: str) -> None:
    """The geometry column's R-tree, bulk-loaded; its triggers, extension row and the
    table's extent in ``gpkg_contents``."""
    key = _primary_key(con, table)
    rtree = f"rtree_{table}_{column}"
    con.execute(f"CREATE VIRTUAL TABLE {_quote(rtree)} USING rtree(id, minx, maxx, miny, maxy)")
    got = con.execute(
        f"SELECT {key}, substr({_quote(column)}, 1, 40) FROM {_quote(table)} "  # noqa: S608
        f"WHERE {_quote(column)} IS NOT NULL ORDER BY {key}"
    ).fetchall()
    ids = np.fromiter((r[0] for r in got), dtype=np.int64, count=len(got))
    boxes = envelopes(table, got)
    if len(ids):
        size = con.execute(
            f"SELECT length(data) FROM {_quote(rtree + '_node')} WHERE nodeno = 1"
        ).fetchone()[0]  # noqa: S608
        nodes, leaf_of, parent_of = rtree_nodes(ids, boxes, size)
        con.executemany(f"INSERT OR REPLACE INTO {_quote(rtree + '_node')} VALUES (?, ?)", nodes)  # noqa: S608
        con.executemany(f"INSERT INTO {_quote(rtree + '_rowid')} VALUES (?, ?)", leaf_of)  # noqa: S608
        con.executemany(f"INSERT INTO {_quote(rtree + '_parent')} VALUES (?, ?)", parent_of)  # noqa: S608
        extent: tuple[float | None, ...] = (
            float(boxes[:, 0].min()), float(boxes[:, 2].min()),
            float(boxes[:, 1].max()), float(boxes[:, 3].max()),
        )  # fmt: skip
    else:
        extent = (None, None, None, None)
    con.execute(
        "UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ? "
        "WHERE lower(table_name) = lower(?)",
        (*extent, table),
    )
    names = {"t": table.replace('"', '""'), "g": column.replace('"', '""'),
             "i": key.strip('"'), "r": rtree.replace('"', '""')}  # fmt: skip
    for suffix, body in RTREE_TRIGGERS:
        con.execute(f"CREATE TRIGGER {_quote(f'{rtree}_{suffix}')} " + body.format(**names))
    con.execute(
        "INSERT INTO gpkg_extensions VALUES (?, ?, ?, ?, 'write-only')",
        (table, column, RTREE, RTREE_DEFINITION),
    )


def envelopes(table: str, blobs: Sequence[tuple[int, bytes]]) -> np.ndarray:
    """Per (key, geometry blob's first 40 bytes): its envelope ``minx maxx miny maxy``,
    from the GeoPackage blob's header (GDAL writes one for every line and polygon)."""
    out = np.empty((len(blobs), 4), dtype=np.float64)
    heads = b"".join(b[:40].ljust(40, b"\0") for _, b in blobs)
    raw = np.frombuffer(heads, dtype=np.uint8).reshape(-1, 40)
    if not len(raw):
        return out
    flags = raw[:, 3]
    good = (raw[:, 0] == ord("G")) & (raw[:, 1] == ord("P")) & ((flags & 0x1F) == 0x03)
    if not good.all():  # not little-endian with an x/y envelope: not a GDAL line or polygon
        bad = int(np.flatnonzero(~good)[0])
        key, blob = blobs[bad]
        msg = f"metro.gpkg: {table} row {key} has no envelope in its header ({blob[:8].hex()})"
        raise ValueError(msg)
    out[:] = raw[:, 8:40].copy().view("<f8")
    return out


_DOWN, _UP = 1.0 - 1.0 / 8388608.0, 1.0 + 1.0 / 8388608.0


def _float_down(d: np.ndarray) -> np.ndarray:
    """SQLite's R-tree rounding of a lower bound to float32 (``rtreeValueDown``)."""
    f = d.astype(np.float32)
    over = f.astype(np.float64) > d
    f[over] = (d[over] * np.where(d[over] < 0, _UP, _DOWN)).astype(np.float32)
    return f


def _float_up(d: np.ndarray) -> np.ndarray:
    """SQLite's R-tree rounding of an upper bound to float32 (``rtreeValueUp``)."""
    f = d.astype(np.float32)
    under = f.astype(np.float64) < d
    f[under] = (d[under] * np.where(d[under] < 0, _DOWN, _UP)).astype(np.float32)
    return f


def rtree_nodes(
    ids: np.ndarray, boxes: np.ndarray, node_size: int
) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]], list[tuple[int, int]]]:
    """A packed R-tree (Sort-Tile-Recursive) of ``ids`` with ``boxes`` (``minx maxx miny
    maxy``) in SQLite's format: its ``_node`` rows (node 1 the root, holding the depth),
    ``_rowid`` rows (id: leaf node) and ``_parent`` rows (node: parent node).

    Nodes of ``node_size`` bytes (the root's, as SQLite made it): a 4-byte header, then
    cells of an 8-byte id and four big-endian float32, bounds rounded outwards as SQLite
    does. The same input gives the same tree."""
    fanout = (node_size - 4) // 24
    cell = np.dtype([("id", ">i8"), ("box", ">f4", 4)])
    f32 = np.stack([_float_down(boxes[:, 0]), _float_up(boxes[:, 1]),
                    _float_down(boxes[:, 2]), _float_up(boxes[:, 3])], axis=1)  # fmt: skip
    level_ids, level_boxes = ids.astype(np.int64), f32
    levels: list[
        tuple[np.ndarray, np.ndarray, np.ndarray]
    ] = []  # (cells' ids, boxes, node of cell)
    while True:
        order = _str_order(level_boxes, fanout)
        node_of = np.arange(len(order)) // fanout
        levels.append((level_ids[order], level_boxes[order], node_of))
        n_nodes = int(node_of[-1]) + 1
        if n_nodes == 1:
            break
        sorted_boxes = level_boxes[order]
        starts = np.arange(0, len(order), fanout)
        level_boxes = np.stack([
            np.minimum.reduceat(sorted_boxes[:, 0], starts), np.maximum.reduceat(sorted_boxes[:, 1], starts),
            np.minimum.reduceat(sorted_boxes[:, 2], starts), np.maximum.reduceat(sorted_boxes[:, 3], starts),
        ], axis=1)  # fmt: skip
        level_ids = np.arange(n_nodes, dtype=np.int64)  # this level's nodes, numbered below
    # Node numbers top-down: the root 1, then each level's nodes in order.
    first = 1
    numbers = []
    for _, _, node_of in reversed(levels):
        numbers.append(first)
        first += int(node_of[-1]) + 1
    numbers.reverse()  # numbers[k]: the first node number of level k (0: the leaves)
    depth = len(levels) - 1
    nodes: list[tuple[int, bytes]] = []
    parent_of: list[tuple[int, int]] = []
    for k, (cell_ids, cell_boxes, node_of) in enumerate(levels):
        n_nodes = int(node_of[-1]) + 1
        pad = node_size - 4 - 24 * fanout
        node = np.zeros(n_nodes, np.dtype([("depth", ">u2"), ("n", ">u2"),
                                           ("cells", cell, (fanout,)), ("pad", "u1", (pad,))]))  # fmt: skip
        node["n"] = np.bincount(node_of, minlength=n_nodes)
        if k == depth:
            node["depth"][0] = depth
        slot = np.arange(len(node_of)) - node_of * fanout
        children = cell_ids if k == 0 else cell_ids + numbers[k - 1]
        node["cells"]["id"][node_of, slot] = children
        node["cells"]["box"][node_of, slot] = cell_boxes
        raw = node.tobytes()
        nodes += [
            (numbers[k] + i, raw[i * node_size : (i + 1) * node_size]) for i in range(n_nodes)
        ]
        if k > 0:
            parent_of += list(zip(children.tolist(), (node_of + numbers[k]).tolist(), strict=True))
    leaf_ids, _, leaf_node = levels[0]
    leaf_of = list(zip(leaf_ids.tolist(), (leaf_node + numbers[0]).tolist(), strict=True))
    return nodes, leaf_of, parent_of


def _str_order(boxes: np.ndarray, fanout: int) -> np.ndarray:
    """Sort-Tile-Recursive: the entries in vertical slices by their centre's x, each slice
    by y, so each run of ``fanout`` entries is one compact node. Ties keep input order."""
    n = len(boxes)
    cx, cy = boxes[:, 0] + boxes[:, 1], boxes[:, 2] + boxes[:, 3]
    by_x = np.lexsort((np.arange(n), cx))
    per_slice = fanout * int(np.ceil(np.sqrt(np.ceil(n / fanout))))
    slice_of = np.empty(n, dtype=np.int64)
    slice_of[by_x] = np.arange(n) // per_slice
    return np.lexsort((np.arange(n), cy, slice_of))


def layout(path: Path) -> tuple[object, ...]:
    """What of a GeoPackage is neither its rows nor what ``assemble`` sets: its schema
    (tables, indexes, triggers; without the R-tree tables and triggers, the extensions
    table and ``sqlite_sequence``) and its metadata rows. Two files of one layout take
    each other's rows in ``assemble``."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        schema = con.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE name NOT LIKE 'rtree\\_%' "
            "ESCAPE '\\' AND name NOT IN ('sqlite_sequence', 'gpkg_extensions') AND NOT "
            "(type = 'index' AND tbl_name = 'gpkg_extensions') ORDER BY type = 'trigger', "
            "type = 'index', rowid"
        ).fetchall()
        meta = [
            con.execute(sql).fetchall()
            for sql in (
                "SELECT table_name, data_type, identifier, description, last_change, srs_id "
                "FROM gpkg_contents ORDER BY rowid",
                "SELECT * FROM gpkg_geometry_columns ORDER BY rowid",
                "SELECT * FROM gpkg_spatial_ref_sys ORDER BY rowid",
                "SELECT table_name FROM gpkg_ogr_contents ORDER BY rowid",
                "PRAGMA page_size",
                "PRAGMA application_id",
                "PRAGMA user_version",
            )
        ]
    finally:
        con.close()
    return (schema, meta)
