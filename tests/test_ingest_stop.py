"""Stopping ``heatmetro ingest`` the normal way: SIGINT (Ctrl-C, to the whole process
group as a terminal sends it) or SIGTERM (to the main process, as Kubernetes does).

One line, the shell's exit code, no traceback or Rust panic, every shard file intact,
no worker process left behind, and a rerun ends with the store an uninterrupted run has.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from heatmetro.flows.importers.jsonl import write_jsonl
from heatmetro.flows.importers.valleybike import valleybike_events
from heatmetro.flows.importers.valleybike_csv import DATA_DIR
from tests.conftest import HEATMETRO, REPO, cli_env, heatmetro
from tests.store_rows import shard_files
from tests.test_ingest_cli import (
    Run,
    _alive,
    _worker_children,
    ingest,
    new_project,
    tables,
)


@pytest.fixture(scope="module")
def october(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled October 2020 ValleyBike month (~1,500 events): a run of a few seconds."""
    out = tmp_path_factory.mktemp("october") / "october2020.jsonl"
    write_jsonl(valleybike_events([DATA_DIR / "october2020.csv.gz"]), out)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, october: Path) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    cfg = new_project(tmp_path_factory.mktemp("ref"))
    heatmetro("ingest", "-c", cfg, october, check=True)
    got = tables(cfg)
    assert len(got["activities"]) > 1000
    return got


def _activities(state: Path, table: str = "activities") -> int:
    n = 0
    for f in shard_files(state) if (state / "shards").is_dir() else []:
        try:
            con = sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=0.2)
            try:
                n += con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            finally:
                con.close()
        except sqlite3.Error:  # not created yet, or its schema not yet
            pass
    return n


def _integrity(state: Path) -> list[str]:
    out = []
    for f in shard_files(state):
        con = sqlite3.connect(f)
        try:
            out.append(con.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            con.close()
    return out


@pytest.mark.parametrize(
    ("sig", "workers", "to_group"),
    [(signal.SIGINT, 1, True), (signal.SIGTERM, 2, False)],
    ids=["sigint-w1-group", "sigterm-w2-main"],
)
def test_signal_stops_follow_cleanly_and_rerun_resumes(
    run_cli: Run,
    tmp_path: Path,
    october: Path,
    reference: dict[str, list[tuple]],  # type: ignore[type-arg]
    sig: signal.Signals,
    workers: int,
    to_group: bool,
) -> None:
    cfg = new_project(tmp_path / "p")
    state = cfg.parent / "state"
    # Two broken records first: the dead-letter file must show them after the stop too.
    stream = tmp_path / "october.jsonl"
    stream.write_bytes(b'not json\n{"kind": "bogus"}\n' + october.read_bytes())
    proc = subprocess.Popen(
        [*HEATMETRO, "ingest", "-c", str(cfg), str(stream), "--follow", "-w", str(workers)],
        env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's job
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # Under way: some batches committed, the two dead letters among them.
        while _activities(state) == 0 or _activities(state, "dead_letters") < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "nothing ingested within 60 s"
            time.sleep(0.05)
        children = _worker_children(proc.pid)
        assert len(children) == workers - 1
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = err.decode()
    assert "Traceback" not in stderr and "panicked" not in stderr, stderr
    assert stderr.splitlines() == [f"heatmetro ingest: stopped by {sig.name}; rerun to resume"]
    assert proc.returncode == 128 + sig, (proc.returncode, stderr)
    assert _integrity(state) == ["ok"] * len(shard_files(state))
    deadline = time.monotonic() + 10
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, children)), f"worker {children} outlived the stopped ingest"
    dead = [json.loads(x) for x in (state / "dead_letters.jsonl").read_text().splitlines()]
    assert [d["position"] for d in dead] == [1, 2], dead

    ingest(run_cli, cfg, stream, workers=workers)  # the same input, without --follow
    assert tables(cfg) == reference


def _free_addresses(n: int) -> str:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return ";".join(f"127.0.0.1:{s.getsockname()[1]}" for s in socks)
    finally:
        for s in socks:
            s.close()


def test_sigterm_to_one_cluster_member_ends_the_other_in_one_line(
    tmp_path: Path, october: Path
) -> None:
    """Kubernetes stops pods one by one: the stopped member says so, its peer (which
    cannot go on without it) says why it ended; neither shows a traceback or a panic."""
    addresses = _free_addresses(2)
    procs, states = [], []
    for i in range(2):
        cfg = new_project(tmp_path / f"m{i}")
        states.append(cfg.parent / "state")
        procs.append(
            subprocess.Popen(
                [
                    *HEATMETRO,
                    "ingest",
                    "-c",
                    str(cfg),
                    str(october),
                    "--follow",
                    "-a",
                    addresses,
                    "-i",
                    str(i),
                ],
                env=cli_env(),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
        )
    try:
        deadline = time.monotonic() + 60
        while not all(map(_activities, states)):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "nothing ingested within 60 s"
            time.sleep(0.05)
        os.kill(procs[1].pid, signal.SIGTERM)
        errs = [p.communicate(timeout=30)[1].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert errs[1].splitlines() == ["heatmetro ingest: stopped by SIGTERM; rerun to resume"]
    assert procs[1].returncode == 143
    assert errs[0].splitlines() == [
        "heatmetro ingest: error: a cluster member stopped or its connection was lost; "
        "rerun every member to resume"
    ], errs[0]
    assert procs[0].returncode == 1
    for state in states:
        assert _integrity(state) == ["ok"] * len(shard_files(state))


def test_a_quiet_followed_stream_still_gets_its_aggregates(tmp_path: Path, october: Path) -> None:
    """Following, aggregates are rebuilt when the next batch comes (at most every 10 s):
    a stream gone quiet kept them unbuilt, and `heatmetro stats` counted no athlete (an
    outside review). A quiet shard is rebuilt on its own now."""
    cfg = new_project(tmp_path / "p")
    state = cfg.parent / "state"
    stream = tmp_path / "part.jsonl"
    stream.write_bytes(b"".join(october.read_bytes().splitlines(keepends=True)[:200]))
    proc = subprocess.Popen(
        [*HEATMETRO, "ingest", "-c", str(cfg), str(stream), "--follow"],
        env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _activities(state) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "nothing ingested"
            time.sleep(0.1)
        deadline = time.monotonic() + 40  # the stream is quiet from now on
        while _activities(state, "athlete_months") == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no aggregate 40 s into a quiet stream"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
