"""The published build's Metro files kept when their inputs did not change (``metro_reuse``).

A build with the very inputs of the published one links its data files and takes its
zip's deflated entries; anything else (other records or settings, a published file
changed since, a manifest of another build, ``--no-cache``) writes every file. Either
way the files are byte for byte what a build without the manifest writes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from heatmetro.site_builder.metro import MetroSettings, write_metro
from heatmetro.site_builder.metro_columns import FILE_DESCRIPTIONS
from heatmetro.site_builder.metro_reuse import OUTPUT_CACHE, OutputCache
from heatmetro.site_builder.window import WindowData
from tests.conftest import write_config
from tests.test_metro import EAST, HOME8, NORTH, edges, hexes, ods, window
from tests.test_metro_cache_cli import DP, _full_build_of, _metro, _metro_line, _rides
from tests.test_snapshot_cli import SDE_ENV, Run, ingest, snapshot, tree

DATA_FILES = [name for name in FILE_DESCRIPTIONS if name != "README.md"]


def _data(riders: int = 6, hour: int = 17) -> WindowData:
    e = np.concatenate([edges(list(range(riders)), NORTH), edges(list(range(4)), EAST, hour=hour)])
    return window(e, hexes(list(range(riders)), HOME8), ods(list(range(riders)), HOME8, HOME8))


def _build(
    out: Path,
    data: WindowData,
    output: OutputCache | None,
    *,
    build_date: str = "2021-03-01",
    round_to: int = 5,
) -> dict[str, int]:
    out.mkdir(parents=True)
    settings = MetroSettings(
        min_athletes=3, round_to=round_to, month="2021-02", first_month="2020-03",
        version="0.1.0", build_date=build_date,
    )  # fmt: skip
    return write_metro(data, settings, out, output=output)


def _shared(a: Path, b: Path) -> list[str]:
    """The files of ``b`` that are ``a``'s (the same inode)."""
    return [n for n in DATA_FILES if (a / n).stat().st_ino == (b / n).stat().st_ino]


def test_the_same_inputs_keep_the_published_files(tmp_path: Path) -> None:
    """Another day's build (only the README and index.html show the date) of the same
    window links every data file; its zip is what a build from scratch writes."""
    manifest = tmp_path / OUTPUT_CACHE
    first, second = tmp_path / "b1" / "metro", tmp_path / "b2" / "metro"
    rows = _build(first, _data(), OutputCache(manifest, None, first, reuse=True))
    again = _build(
        second, _data(), OutputCache(manifest, first, second, reuse=True), build_date="2021-03-02"
    )
    assert again == rows
    assert _shared(first, second) == DATA_FILES
    fresh = tmp_path / "fresh" / "metro"
    _build(fresh, _data(), None, build_date="2021-03-02")
    assert tree(second) == tree(fresh)
    assert (second / "README.md").read_bytes() != (first / "README.md").read_bytes()
    # ... and the build after it keeps them again (its manifest names the second build).
    third = tmp_path / "b3" / "metro"
    _build(third, _data(), OutputCache(manifest, second, third, reuse=True))
    assert _shared(first, third) == DATA_FILES


def _tamper(first: Path) -> None:
    path = first / "edges.csv"
    text = path.read_bytes()
    path.write_bytes(text.replace(b"all", b"ALL"))  # the same size, other bytes
    os.utime(path, ns=(1, 1))  # an mtime the build never had


@pytest.mark.parametrize(
    "change", ["records", "one value", "settings", "published file", "other build", "no reuse"]
)
def test_other_inputs_or_files_write_every_file(tmp_path: Path, change: str) -> None:
    manifest = tmp_path / OUTPUT_CACHE
    first, second = tmp_path / "b1" / "metro", tmp_path / "b2" / "metro"
    _build(first, _data(), OutputCache(manifest, None, first, reuse=True))
    data, round_to, published, reuse = _data(), 5, first, True
    if change == "records":
        data = _data(riders=7)
    elif change == "one value":  # as many records, one field of some other
        data = _data(hour=18)
    elif change == "settings":
        round_to = 1
    elif change == "published file":
        _tamper(first)
    elif change == "other build":
        published = tmp_path / "elsewhere" / "metro"
        shutil.copytree(first, published)  # the same files and times, another build
    else:
        reuse = False
    _build(second, data, OutputCache(manifest, published, second, reuse=reuse), round_to=round_to)
    assert _shared(published, second) == []
    fresh = tmp_path / "fresh" / "metro"
    _build(fresh, data, None, round_to=round_to)
    assert tree(second) == tree(fresh)


def test_a_snapshot_of_an_unchanged_store_keeps_the_published_files(
    tmp_path: Path, run_cli: Run
) -> None:
    """Through the CLI: the second snapshot of the same store says so, links the files
    of the build it replaces and publishes what a ``--no-cache`` build does."""
    project = tmp_path / "project"
    project.mkdir()
    write_config(project, **DP)
    ingest(run_cli, project, _rides(), "rides")
    snapshot(run_cli, project, env=SDE_ENV)
    before = (project / "site").resolve() / "metro"
    again = snapshot(run_cli, project, env=SDE_ENV)
    assert _metro_line(again.stderr) == (
        "metro cache: the window's records are the published build's: its files kept"
    ), again.stderr
    after = (project / "site").resolve() / "metro"
    assert after != before and _shared(before, after) == DATA_FILES
    fresh = _full_build_of(project, tmp_path / "fresh", run_cli)
    assert _metro(project / "site") == _metro(fresh)


def test_two_sites_sharing_a_state_dir_each_keep_their_own_files(
    tmp_path: Path, run_cli: Run
) -> None:
    """Two ``out_dir``s of one ``state_dir`` (a PNG site and a PMTiles one, say) take
    turns: each keeps its own published Metro files, not only the one built last."""
    project = tmp_path / "project"
    project.mkdir()
    config = write_config(project, **DP)
    other = project / "other.toml"
    other.write_text(config.read_text().replace('out_dir = "site"', 'out_dir = "site2"'))
    ingest(run_cli, project, _rides(), "rides")

    def build(cfg: Path) -> str:
        proc = run_cli("snapshot", "-c", cfg, "--month", "2021-06", env=SDE_ENV)
        return _metro_line(proc.stderr)

    build(config)
    build(other)
    kept = "metro cache: the window's records are the published build's: its files kept"
    assert build(config) == kept
    assert build(other) == kept
    assert _metro(project / "site") == _metro(project / "site2")
