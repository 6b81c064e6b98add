"""Two monthly snapshots of one ``out_dir`` at once: the second waits for the first (an
operator's review found both numbering their build alike, one removing the other's)."""

from __future__ import annotations

import fcntl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

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
