"""The incremental Metro counts (``state_dir/metro_cache.npz``) through the real CLI.

A rebuild after a few athletes changed recounts only the edges of their old and new
records; every Metro file must still be byte for byte what a full build from scratch
writes, with differential privacy on (its noise is drawn in table order from a
per-release seed, so one count out of place would shift every later one). A damaged
cache costs one line on stderr and a full count, never a wrong file.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_config
from tests.streams import activity, deleted, line
from tests.test_snapshot_cli import SDE_ENV, Run, csv_rows, ingest, snapshot, tree
from tests.test_window_cache_cli import LATER

# Five parallel streets 1.1 km apart, five riders each; a sixth street ridden by three.
LNG = (-72.6450, -72.6250)
STREETS = {f"w{i}": 42.3395 - 0.011 * i for i in range(5)}
CACHE = Path("state") / "metro_cache.npz"
# The published build's files, kept when the window did not change (metro_reuse): removed
# where a rebuild of the same window must count, to show what the cache does.


def _drop_output(project: Path) -> None:
    """Forget the published Metro files (their manifest): the rebuild counts again."""
    for manifest in (project / "state").glob("metro_output.*.json"):
        manifest.unlink()


DP = {"metro_epsilon": 1.0}
EXACT = {"round_to": 1}


def _street(name: str) -> list[list[float]]:
    lat = STREETS[name]
    return line((lat, LNG[0]), (lat, LNG[1]))


def _rides() -> list[dict]:
    return [activity(f"{s}p{i}-r1", f"{s}p{i}", _street(s)) for s in STREETS for i in range(5)] + [
        activity(f"{s}p{i}-r2", f"{s}p{i}", _street(s)) for s in ("w0", "w1") for i in range(2)
    ]


def _changes() -> list[dict]:
    """One street loses a rider (gone from the window), two a trip, one gains a rider."""
    return [
        deleted("w3p0-r1", "w3p0", updated=LATER),
        deleted("w1p0-r1", "w1p0", updated=LATER),
        deleted("w0p1-r2", "w0p1", updated=LATER),
        activity("w2new-r1", "w2new", _street("w2"), updated=LATER),
    ]


def _metro(site: Path) -> dict[str, bytes]:
    return tree((site / "metro").resolve())


def _gpkg_edges(path: Path) -> list[tuple]:
    """The GeoPackage's edge rows as GIS software reads them (SQLite)."""
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT edge_id, layer, forward_trip_count, forward_people_count FROM edges "
            "ORDER BY edge_id, layer"
        ).fetchall()


def _npz(project: Path, *, meta: dict | None = None, arrays: dict | None = None) -> bytes:
    """The real cache file with some of its metadata or arrays replaced."""
    with np.load(project / CACHE) as npz:
        content = {k: npz[k] for k in npz.files}
    old = json.loads(content["meta"].tobytes())
    content["meta"] = np.frombuffer(json.dumps({**old, **(meta or {})}).encode(), np.uint8)
    content.update(arrays or {})
    out = project / "damaged.npz"
    np.savez(out, **content)
    return out.read_bytes()


def _gpkg_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("metro.gpkg:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _gpkg_rows(site: Path) -> int:
    """Rows of every table of the published GeoPackage, as SQLite reads them."""
    with sqlite3.connect(site / "metro" / "metro.gpkg") as db:
        tables = [t for (t,) in db.execute("SELECT table_name FROM gpkg_contents")]
        return sum(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)


def _metro_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("metro cache:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _full_build_of(project: Path, dst: Path, run_cli: Run, settings: dict | None = None) -> Path:
    dst.mkdir()
    write_config(dst, **(DP if settings is None else settings))
    shutil.copytree(project / "state" / "shards", dst / "state" / "shards")
    proc = snapshot(run_cli, dst, env=SDE_ENV)
    assert "metro cache: none yet; counted every edge" in proc.stderr
    return dst / "site"


# Without differential privacy the rows of the edges not recounted are the last build's
# text too (metro_text_cache.npz); with it, every row is formatted anew.
@pytest.mark.parametrize("settings", [DP, {"round_to": 1}], ids=["dp", "exact"])
def test_a_rebuild_recounts_only_changed_edges_and_writes_the_same_files(
    tmp_path: Path, run_cli: Run, settings: dict
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_config(project, **settings)
    ingest(run_cli, project, _rides(), "rides")
    first = snapshot(run_cli, project, env=SDE_ENV)
    assert _metro_line(first.stderr) == "metro cache: none yet; counted every edge"
    site = project / "site"
    before = _gpkg_edges(site / "metro" / "metro.gpkg")
    assert len(before) == len(csv_rows(site / "metro" / "edges.csv")) > 0

    ingest(run_cli, project, _changes(), "changes")
    again = snapshot(run_cli, project, env=SDE_ENV)
    found = re.fullmatch(
        r"metro cache: ([\d,]+) edges recounted, the others' counts kept",
        _metro_line(again.stderr),
    )
    assert found, again.stderr
    recounted = int(found.group(1).replace(",", ""))
    after = _gpkg_edges(site / "metro" / "metro.gpkg")
    # Four of the five streets changed, in both layers (all, ride): some edges kept.
    assert 0 < recounted < len({row[0] for row in after}) * 2
    assert after != before, "the changes must show in the published counts"

    assert (project / "state" / "metro_text_cache.npz").exists() == (settings != DP)
    # Exact counts: the GeoPackage's rows of the edges kept come from the last build's.
    taken = _gpkg_line(again.stderr)
    if settings == DP:
        assert taken == "metro.gpkg: " + f"{_gpkg_rows(site):,} rows written whole"
    else:
        found = re.fullmatch(r"metro.gpkg: ([\d,]+) of ([\d,]+) rows taken from the last "
                             r"build's, ([\d,]+) written", taken)  # fmt: skip
        assert found, taken
        kept, total = (int(found.group(i).replace(",", "")) for i in (1, 2))
        assert 0 < kept < total == _gpkg_rows(site)
    fresh = _full_build_of(project, tmp_path / "fresh", run_cli, settings)
    a, b = _metro(site), _metro(fresh)
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert differ == [], f"Metro files differ from a full build: {differ}"
    assert _gpkg_edges(fresh / "metro" / "metro.gpkg") == after


def test_a_rebuild_where_most_records_changed_says_it_counted_them_whole(
    tmp_path: Path, run_cli: Run
) -> None:
    """Past half of a layer's records changed, the layer is counted whole: the line said
    "0 edges recounted, the others' counts kept" all the same (an outside review)."""
    project = tmp_path / "project"
    project.mkdir()
    write_config(project, round_to=1)
    ingest(run_cli, project, _rides(), "rides")
    snapshot(run_cli, project, env=SDE_ENV)
    # Every rider rides their street once more: every athlete's records changed.
    more = [
        activity(f"{s}p{i}-r3", f"{s}p{i}", _street(s), updated=LATER)
        for s in STREETS
        for i in range(5)
    ]
    ingest(run_cli, project, more, "more")
    again = snapshot(run_cli, project, env=SDE_ENV)
    assert _metro_line(again.stderr) == (
        "metro cache: counted every edge (too much of every layer changed)"
    ), again.stderr
    fresh = _full_build_of(project, tmp_path / "fresh", run_cli, {"round_to": 1})
    assert _metro(project / "site") == _metro(fresh)


def test_a_damaged_metro_cache_is_one_line_and_a_full_count(tmp_path: Path, run_cli: Run) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_config(project, **DP)
    ingest(run_cli, project, _rides(), "rides")
    snapshot(run_cli, project, env=SDE_ENV)
    reference = _metro(project / "site")
    good = (project / CACHE).read_bytes()
    for expect, damaged in {
        "unreadable metro_cache.npz": good[: len(good) // 2],  # a torn write
        "inconsistent metro_cache.npz (layer all records)": _npz(
            project, arrays={"layer/all/owner": np.full(3, 10**6, np.int64)}
        ),
    }.items():
        (project / CACHE).write_bytes(damaged)
        _drop_output(project)
        proc = snapshot(run_cli, project, env=SDE_ENV, check=False)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        line_ = _metro_line(proc.stderr)
        assert line_.startswith(f"metro cache: {expect}") and "counted every edge" in line_
        assert _metro(project / "site") == reference, f"{expect}: the Metro files changed"
    # The cache was rewritten whole: the next build keeps every edge.
    _drop_output(project)
    proc = snapshot(run_cli, project, env=SDE_ENV)
    assert _metro_line(proc.stderr) == "metro cache: 0 edges recounted, the others' counts kept"
    assert _metro(project / "site") == reference


def _published_exact(tmp_path: Path, run_cli: Run) -> Path:
    """A project with exact counts, its rides ingested and published once."""
    project = tmp_path / "project"
    project.mkdir()
    write_config(project, **EXACT)
    ingest(run_cli, project, _rides(), "rides")
    snapshot(run_cli, project, env=SDE_ENV)
    return project


def test_a_damaged_text_cache_is_a_full_formatting(tmp_path: Path, run_cli: Run) -> None:
    """The kept rows' text (``metro_text_cache.npz``, exact counts only) torn, altered in
    place or out of step: the rebuild formats every row and writes what a full build does."""
    project = _published_exact(tmp_path, run_cli)
    ingest(run_cli, project, _changes(), "changes")
    fresh = _metro(_full_build_of(project, tmp_path / "fresh", run_cli, EXACT))
    texts = project / "state" / "metro_text_cache.npz"
    good, state = (
        texts.read_bytes(),
        {p.name: p.read_bytes() for p in (project / "state").glob("metro_*.npz")},
    )
    with np.load(texts) as npz:
        content = {k: npz[k] for k in npz.files}
    altered = dict(
        content,
        text0=np.where(content["text0"] == ord("5"), ord("6"), content["text0"]).astype(np.uint8),
    )
    np.savez(tmp_path / "altered.npz", **altered)
    for what, damaged in {
        "torn": good[: len(good) // 2],
        "altered": (tmp_path / "altered.npz").read_bytes(),
    }.items():
        for name, data in state.items():  # the caches as the first build left them
            (project / "state" / name).write_bytes(data)
        texts.write_bytes(damaged)
        proc = snapshot(run_cli, project, env=SDE_ENV, check=False)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert _metro(project / "site") == fresh, f"{what}: the Metro files differ"


def test_a_kept_geopackage_not_as_recorded_is_written_whole(tmp_path: Path, run_cli: Run) -> None:
    """The rebuild takes rows from the last build's ``metro.gpkg`` (linked into state_dir)
    only if it is the file that build wrote (``metro_gpkg_cache.json``): one edited there
    (through the published file it is a hard link of, or a torn copy) is not trusted,
    and the file is written whole, as a full build does."""
    project = _published_exact(tmp_path, run_cli)
    kept = project / "state" / "metro_gpkg_cache.gpkg"
    assert kept.read_bytes() == (project / "site" / "metro" / "metro.gpkg").read_bytes()
    with sqlite3.connect(kept) as db:  # still a valid GeoPackage, one count off
        db.execute("UPDATE edges_hourly SET total_trip_count = total_trip_count + 1 WHERE fid = 1")
    ingest(run_cli, project, _changes(), "changes")
    again = snapshot(run_cli, project, env=SDE_ENV)
    assert re.fullmatch(r"metro cache: [\d,]+ edges recounted, the others' counts kept",
                        _metro_line(again.stderr)), again.stderr  # fmt: skip
    site = project / "site"
    assert _gpkg_line(again.stderr) == f"metro.gpkg: {_gpkg_rows(site):,} rows written whole"
    fresh = _full_build_of(project, tmp_path / "fresh", run_cli, EXACT)
    assert _metro(site) == _metro(fresh)
