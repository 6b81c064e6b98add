"""Two monthly snapshots of one ``out_dir`` at once: the second waits for the first (an
operator's review found both numbering their build alike, one removing the other's)."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from heatmetro.site_builder.publish import prune_builds
from tests.conftest import HEATMETRO, REPO, cli_env
from tests.streams import street_rides, to_jsonl

Run = Callable[..., subprocess.CompletedProcess[str]]


def test_a_second_snapshot_waits_for_the_first(project: Path, run_cli: Run) -> None:
    config, site = project / "config.toml", project / "site"
    (project / "rides.jsonl").write_bytes(to_jsonl(street_rides(3, prefix="r")))
    run_cli("ingest", "-c", config, project / "rides.jsonl")
    lock = project / ".site.build.lock"
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a snapshot in progress holds it
        proc = subprocess.Popen(
            [*HEATMETRO, "snapshot", "-c", str(config), "--month", "2021-06", "-q"],
            env=cli_env(SOURCE_DATE_EPOCH="1700000000"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        line = proc.stderr.readline()  # said at once, before any work
        assert f"another snapshot of {site} is running: waiting" in line, line
        time.sleep(1.0)
        assert proc.poll() is None, "did not wait"
        assert not site.exists() and not list(project.glob(".site.builds/*.partial"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert (site / "index.html").is_file()
    assert [p.name for p in (project / ".site.builds").iterdir()] == ["000001-2021-06"]


def test_removing_older_builds_keeps_the_one_the_link_points_to_when_it_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal that runs while a build is made reads the link before each build it
    removes: a rollback by hand meanwhile keeps the build rolled back to."""
    root, site = tmp_path / ".site.builds", tmp_path / "site"
    names = ["000001-2021-04", "000002-2021-05", "000003-2021-06", "000004-2021-06.partial"]
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "index.html").write_text(name)
    site.symlink_to(".site.builds/000003-2021-06", target_is_directory=True)
    removed = []
    real_rmtree = shutil.rmtree

    def rmtree(path: Path, **kw: object) -> None:
        removed.append(Path(path).name)
        if len(removed) == 1:  # the operator rolls back to build 2 after the first removal
            site.unlink()
            site.symlink_to(".site.builds/000002-2021-05", target_is_directory=True)
        real_rmtree(path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    prune_builds(root, set(), served_by=site)
    assert removed == ["000001-2021-04", "000003-2021-06"]
    assert sorted(p.name for p in root.iterdir()) == ["000002-2021-05", "000004-2021-06.partial"]
    assert (site / "index.html").read_text() == "000002-2021-05"
