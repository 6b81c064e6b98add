"""A snapshot's process ends without Python's teardown (``cli.run``): its exit
functions run and its output comes out, but the ~1 GB of arrays and the modules are not
freed one object at a time. Any other command, or a failed snapshot, exits as ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import HEATMETRO, REPO, cli_env

# The command, with an object freed only by the teardown, an exit function, and output
# not yet flushed when the command returns.
_SCRIPT = """
import atexit, sys
import heatmetro.cli as cli

class FreedByTheTeardown:
    def __del__(self):
        print("torn down", flush=True)

kept = FreedByTheTeardown()
atexit.register(print, "exit functions ran", flush=True)
sys.argv = ["heatmetro", *sys.argv[1:]]
print("unflushed output", end=" ")
cli.run()
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO,
        timeout=300,
        check=False,
    )


def _empty_project(folder: Path) -> Path:
    config = folder / "config.toml"
    config.write_text('state_dir = "state"\nout_dir = "site"\nmin_zoom = 10\nmax_zoom = 12\n')
    (folder / "empty.jsonl").write_bytes(b"")
    subprocess.run(
        [*HEATMETRO, "ingest", "-c", str(config), str(folder / "empty.jsonl")],
        check=True,
        capture_output=True,
        env=cli_env(),
        cwd=REPO,
        timeout=300,
    )
    return config


def test_a_snapshot_ends_without_the_teardown(tmp_path: Path) -> None:
    config = _empty_project(tmp_path)
    out = _run("snapshot", "-c", str(config), "--month", "2021-06", "--allow-empty")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert out.stdout.split("\n")[0].startswith("unflushed output published 2020-07..2021-06")
    assert "exit functions ran" in out.stdout
    assert "torn down" not in out.stdout


def test_other_commands_and_a_failed_snapshot_exit_as_ever(tmp_path: Path) -> None:
    config = _empty_project(tmp_path)
    for args, code in (
        (("stats", "-c", str(config)), 0),
        (("snapshot", "-c", str(config), "--month", "2021-13"), 1),
    ):
        out = _run(*args)
        assert out.returncode == code, out.stderr
        assert "exit functions ran" in out.stdout
        assert "torn down" in out.stdout
