"""No sqlite-utils plugin runs on the stores' connections.

sqlite-utils runs the ``prepare_connection`` hook of every plugin installed in the
environment on each ``Database`` it opens. The store holds where people live: code that
merely happens to be installed beside heatmetro must not see its connection (and
finding the plugins scans every installed package's metadata at each start).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, cli_env, write_config
from tests.streams import activity, line, to_jsonl
from tests.test_snapshot_cli import Run, snapshot

SPY = """
import sqlite_utils


@sqlite_utils.hookimpl
def prepare_connection(conn):
    with open({marker!r}, "a") as fh:
        fh.write("a connection\\n")
"""


def _spy_plugin(root: Path, marker: Path) -> None:
    """An installed sqlite-utils plugin (a module and its dist-info's entry point) that
    notes each connection it is given."""
    info = root / "spy_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: spy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sqlite_utils]\nspy = spy_plugin\n")
    (root / "spy_plugin.py").write_text(SPY.format(marker=str(marker)))


def test_an_installed_sqlite_utils_plugin_never_sees_the_store(
    tmp_path: Path, run_cli: Run
) -> None:
    plugins, marker = tmp_path / "plugins", tmp_path / "connections.txt"
    _spy_plugin(plugins, marker)
    env = cli_env(PYTHONPATH=os.pathsep.join([str(REPO), str(plugins)]))
    # The plugin is live: sqlite-utils gives it a database of its own.
    code = "import sqlite_utils; sqlite_utils.Database(memory=True)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert marker.read_text() == "a connection\n"
    marker.unlink()

    project = tmp_path / "project"
    project.mkdir()
    write_config(project)
    street = line((42.3395, -72.6450), (42.3395, -72.6250))
    rides = [activity(f"r{i}", f"p{i}", street) for i in range(4)]
    rides.append(activity("secret", "p0", street, visibility="only_me"))  # the personal store
    events = project / "events.jsonl"
    events.write_bytes(to_jsonl(rides))
    config = project / "config.toml"
    run_cli("ingest", "-c", config, events, env=env)
    snapshot(run_cli, project, env=env)
    run_cli("personal", "-c", config, "--athlete", "p0", "--out", tmp_path / "mine", env=env)
    assert (tmp_path / "mine" / "index.html").exists()
    assert not marker.exists(), marker.read_text()
