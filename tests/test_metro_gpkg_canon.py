"""``metro.gpkg`` in its canonical form (``heatmetro.site_builder.metro_gpkg_canon``).

The bulk-loaded R-tree must be one SQLite itself accepts and searches correctly, with
bounds rounded as SQLite rounds them; ``assemble`` must give the same bytes for the same
rows however they were placed, and a file GDAL reads, spatial filter included.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.metro_gpkg import _Name as Col
from heatmetro.site_builder.metro_gpkg_canon import Run, assemble, rtree_nodes, runs, whole
from heatmetro.site_builder.metro_gpkg_reuse import NEW, OLD
from heatmetro.site_builder.metro_rows import Rows

NODE_SIZE = 4 + 24 * 51  # SQLite's node of a file database with 4-KB pages


def _boxes(seed: int, n: int) -> np.ndarray:
    """``n`` boxes (minx maxx miny maxy) around a town, some points, some long."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-72.7, -72.5, n), rng.uniform(42.1, 42.4, n)
    w, h = rng.exponential(0.002, n) * (rng.random(n) > 0.1), rng.exponential(0.002, n)
    return np.stack([x, x + w, y, y + h], axis=1)


def _bulk_loaded(ids: np.ndarray, boxes: np.ndarray) -> sqlite3.Connection:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE r USING rtree(id, minx, maxx, miny, maxy)")
    size = con.execute("SELECT length(data) FROM r_node WHERE nodeno = 1").fetchone()[0]
    nodes, leaf_of, parent_of = rtree_nodes(ids, boxes, size)
    con.executemany("INSERT OR REPLACE INTO r_node VALUES (?, ?)", nodes)
    con.executemany("INSERT INTO r_rowid VALUES (?, ?)", leaf_of)
    con.executemany("INSERT INTO r_parent VALUES (?, ?)", parent_of)
    return con


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    # up to three levels of 51 cells (a root over 2,601 leaves' worth needs more)
    n=st.one_of(st.integers(1, 60), st.integers(2_500, 2_800), st.integers(51, 51)),
    query=st.tuples(
        st.floats(-72.75, -72.45), st.floats(0, 0.1), st.floats(42.05, 42.45), st.floats(0, 0.1)
    ),  # fmt: skip
)
def test_a_bulk_loaded_rtree_is_valid_and_finds_what_a_scan_finds(
    seed: int, n: int, query: tuple[float, float, float, float]
) -> None:
    boxes = _boxes(seed, n)
    ids = np.random.default_rng(seed).permutation(n) * 3 + 1  # any keys, in any order
    con = _bulk_loaded(ids, boxes)
    assert con.execute("SELECT rtreecheck('r')").fetchone() == ("ok",)
    # Stored as SQLite stores a row inserted one by one: the bounds rounded outwards.
    inserted = sqlite3.connect(":memory:")
    inserted.execute("CREATE VIRTUAL TABLE r USING rtree(id, minx, maxx, miny, maxy)")
    inserted.executemany(
        "INSERT INTO r VALUES (?, ?, ?, ?, ?)", zip(ids.tolist(), *boxes.T.tolist(), strict=True)
    )
    stored = con.execute("SELECT * FROM r ORDER BY id").fetchall()
    assert stored == inserted.execute("SELECT * FROM r ORDER BY id").fetchall()
    x0, dx, y0, dy = query
    sql = "SELECT id FROM r WHERE maxx >= ? AND minx <= ? AND maxy >= ? AND miny <= ? ORDER BY id"
    found = [i for (i,) in con.execute(sql, (x0, x0 + dx, y0, y0 + dy))]
    scan = sorted(
        i for i, a, b, c, d in stored if b >= x0 and a <= x0 + dx and d >= y0 and c <= y0 + dy
    )
    assert found == scan


def test_a_tree_over_one_node_has_its_depth_in_the_root() -> None:
    boxes = _boxes(7, 3_000)  # 59 leaves, 2 inner nodes, 1 root: depth 2
    nodes, leaf_of, parent_of = rtree_nodes(np.arange(1, 3_001), boxes, NODE_SIZE)
    root = dict(nodes)[1]
    assert int.from_bytes(root[:2], "big") == 2
    assert len(nodes) == 59 + 2 + 1 and len(parent_of) == len(nodes) - 1
    assert sorted(i for i, _ in leaf_of) == list(range(1, 3_001))
    assert all(len(blob) == NODE_SIZE for _, blob in nodes)


def test_runs_place_rows_in_stretches() -> None:
    assert runs(OLD, np.array([0, 1, 2, 5, 6]), np.array([0, 1, 3, 4, 5])) == [
        Run(OLD, 1, 2, 1), Run(OLD, 3, 3, 4), Run(OLD, 6, 7, 5),
    ]  # fmt: skip
    assert runs(OLD, np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == []
    assert whole(NEW, 0) == [] and whole(NEW, 4) == [Run(NEW, 1, 4, 1)]


def _gdal_file(path: Path, n: int, seed: int) -> None:
    """A GeoPackage of ``n`` lines and a table, as GDAL writes it (through ``metro_gpkg``)."""
    from heatmetro.site_builder import metro_gpkg

    rng = np.random.default_rng(seed)
    xy = np.stack([rng.uniform(-72.7, -72.5, n), rng.uniform(42.1, 42.4, n)], axis=1)
    lines = Rows(
        [(f"e{i}", i, float(i) / 2) for i in range(n)],
        [[(x, y), (x + 0.001, y + 0.0005)] for x, y in xy.tolist()],
    )
    table = Rows([(f"e{i}", i % 24, i * 3) for i in range(n)])
    layers = {
        "edges": ("LineString", [Col("edge_id"), Col("trip_count"), Col("length_m")], lines),
        "edges_hourly": (None, [Col("edge_id"), Col("hour"), Col("trip_count")], table),
    }
    from datetime import UTC, datetime

    metro_gpkg._write_gdal(path, layers, datetime(2021, 3, 1, tzinfo=UTC), None)


def test_assembled_from_runs_or_whole_the_bytes_are_the_same(tmp_path: Path) -> None:
    gdal = tmp_path / "gdal.gpkg"
    _gdal_file(gdal, 300, 1)
    canonical = tmp_path / "canonical.gpkg"
    assemble(
        gdal, canonical, {NEW: gdal}, {"edges": whole(NEW, 300), "edges_hourly": whole(NEW, 300)}
    )
    # The same rows, from the canonical file, some from GDAL's, in odd runs.
    keep = np.flatnonzero(np.arange(300) % 7 != 3)
    redo = np.flatnonzero(np.arange(300) % 7 == 3)
    placed = {
        t: [*runs(OLD, keep, keep), *runs(NEW, redo, redo)] for t in ("edges", "edges_hourly")
    }
    again = tmp_path / "again.gpkg"
    assemble(canonical, again, {OLD: canonical, NEW: gdal}, placed)
    assert again.read_bytes() == canonical.read_bytes()
    assert gdal.read_bytes() != canonical.read_bytes()  # the test compares canonical forms
    with sqlite3.connect(canonical) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("SELECT rtreecheck('rtree_edges_geom')").fetchone() == ("ok",)
        assert con.execute("SELECT count(*) FROM rtree_edges_geom").fetchone() == (300,)
        assert con.execute("SELECT feature_count FROM gpkg_ogr_contents WHERE table_name = 'edges'"
                           ).fetchone() == (300,)  # fmt: skip
        ext = con.execute("SELECT extension_name FROM gpkg_extensions").fetchall()
        assert ext == [("gpkg_rtree_index",)]


def test_a_moved_row_changes_the_bytes(tmp_path: Path) -> None:
    """The comparison above can fail: two rows swapped are another file."""
    gdal = tmp_path / "gdal.gpkg"
    _gdal_file(gdal, 50, 2)
    a, b = tmp_path / "a.gpkg", tmp_path / "b.gpkg"
    assemble(gdal, a, {NEW: gdal}, {"edges": whole(NEW, 50), "edges_hourly": whole(NEW, 50)})
    swapped = [Run(NEW, 1, 1, 2), Run(NEW, 2, 2, 1), Run(NEW, 3, 50, 3)]
    assemble(gdal, b, {NEW: gdal}, {"edges": swapped, "edges_hourly": whole(NEW, 50)})
    assert a.read_bytes() != b.read_bytes()


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="GDAL's ogrinfo is a test dependency")
def test_gdal_reads_the_canonical_file_and_filters_through_its_index(tmp_path: Path) -> None:
    gdal = tmp_path / "gdal.gpkg"
    _gdal_file(gdal, 400, 3)
    out = tmp_path / "metro.gpkg"
    assemble(gdal, out, {NEW: gdal}, {"edges": whole(NEW, 400), "edges_hourly": whole(NEW, 400)})

    def filtered(path: Path) -> list[str]:
        proc = subprocess.run(
            ["ogrinfo", "-ro", "-q", "-spat", "-72.62", "42.2", "-72.58", "42.3", "-fields=YES",
             "-geom=NO", str(path), "edges"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return sorted(line.split("=", 1)[1].strip() for line in proc.stdout.splitlines()
                      if line.strip().startswith("edge_id (String)"))  # fmt: skip

    # GDAL's own file has no index (GDAL scans it): the same lines through ours.
    inside = filtered(out)
    assert 0 < len(inside) < 400
    assert inside == filtered(gdal)
    info = subprocess.run(["ogrinfo", "-ro", "-so", str(out), "edges"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert "Feature Count: 400" in info
