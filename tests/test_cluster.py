"""A Bytewax cluster of ``heatmetro`` processes, each with its own config, ``state_dir``
and ``out_dir`` (as if on separate machines), run through the real CLI on 127.0.0.1.

* ingest + snapshot on 2 processes equal one process: the stores' union row for row,
  the sites' union byte for byte, and both processes published part of it;
* SIGKILL of one member mid-ingest, then a restart of both, gives the same store;
* shards and recovery partitions move whole between machines (scale 2 -> 1);
* a store refuses a config with another shard count; Prometheus metrics are served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from heatmetro.flows.importers.jsonl import write_jsonl
from heatmetro.flows.importers.valleybike import valleybike_events
from heatmetro.flows.importers.valleybike_csv import DATA_DIR
from tests.conftest import HEATMETRO, REPO, cli_env, write_config
from tests.store_rows import _key, query

EPOCH = "1700000000"
MONTH = "2018-07"
TABLES = ("athletes", "activities", "athlete_months")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled June 2018 ValleyBike month (283 events): small, so the file stays fast;
    and each of its rides again 30 days later, so that the window has two months (the
    monthly Metro files must split them as one process does)."""
    out = tmp_path_factory.mktemp("stream") / "june2018.jsonl"
    events = list(valleybike_events([DATA_DIR / "june2018.csv.gz"]))
    later = []
    for event in events:
        if event["kind"] == "activity":
            copy = json.loads(json.dumps(event))
            copy["activity_id"] += "-july"
            for field in ("start_date", "updated_at"):
                when = datetime.fromisoformat(copy[field].replace("Z", "+00:00"))
                copy[field] = (when + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
            later.append(copy)
    write_jsonl(events + later, out)
    return out


def project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return write_config(folder)


def start(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*HEATMETRO, *args, "-c", str(cfg)],
        env=cli_env(SOURCE_DATE_EPOCH=EPOCH),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run(cfg: Path, *args: str) -> None:
    proc = start(cfg, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"heatmetro {args}: {err}"


def cluster(cfgs: list[Path], *args: str, timeout: float = 300) -> None:
    """Every member runs the same command with its own config, -a and its -i."""
    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(len(cfgs)))
    procs = [start(cfg, *args, "-a", addresses, "-i", str(i)) for i, cfg in enumerate(cfgs)]
    errors = [p.communicate(timeout=timeout)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), errors


def tables(*cfgs: Path) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    """The content of the stores of ``cfgs`` together (each athlete is in one of them)."""
    out = {}
    for t in TABLES:
        rows = [r for cfg in cfgs for r in query(cfg.parent / "state", f"SELECT * FROM {t}")]
        out[t] = sorted(rows, key=_key)
    return out


def site(cfg: Path) -> dict[str, str]:
    root = (cfg.parent / "site").resolve()
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory, stream: Path) -> Path:
    """The reference: one process, ingest then snapshot of June 2018."""
    cfg = project(tmp_path_factory.mktemp("one") / "p")
    run(cfg, "ingest", str(stream))
    run(cfg, "snapshot", "--month", MONTH)
    return cfg


def test_two_processes_store_and_publish_what_one_does(
    tmp_path: Path, stream: Path, one: Path
) -> None:
    members = [project(tmp_path / f"machine{i}") for i in range(2)]
    cluster(members, "ingest", str(stream))
    # Each member holds only its own shards, and together exactly the one-process store.
    own = [sorted(p.name for p in (c.parent / "state" / "shards").glob("*.db")) for c in members]
    assert own[0] and own[1] and not set(own[0]) & set(own[1])
    assert tables(*members) == tables(one)

    cluster(members, "snapshot", "--month", MONTH)
    parts = [site(c) for c in members]
    union = {**parts[1], **parts[0]}
    assert union == site(one)  # byte for byte, pages, tiles and Metro files
    tiles = [{k for k in p if k.endswith(".png")} for p in parts]
    assert tiles[0] and tiles[1] and not tiles[0] & tiles[1], "both published tiles"
    assert "index.html" in parts[0] and "metro/edges.csv" in parts[0]
    monthly = (one.parent / "site" / "metro" / "edges_monthly.csv").read_text()
    assert ",2018-06," in monthly and ",2018-07," in monthly  # two months to keep apart


def test_sigkill_of_one_member_then_restart_of_both(
    tmp_path: Path, stream: Path, one: Path
) -> None:
    early: list[str] = []
    # A random moment, then sooner: on a fast machine the cluster may finish the stream
    # before the first one comes (member 1 then exits 0, and the kill is tried again).
    for attempt, latest in enumerate((0.5, 0.1, 0.0)):
        members = [project(tmp_path / f"try{attempt}" / f"machine{i}") for i in range(2)]
        addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(2))
        args = ("ingest", str(stream), "-a", addresses)
        procs = [start(cfg, *args, "-i", str(i)) for i, cfg in enumerate(members)]
        # Kill member 1 at a random moment once its store exists (the kill may also land
        # while the store is being created: the restart must cope with that too).
        deadline = time.monotonic() + 120
        while not (members[1].parent / "state" / "recovery").exists():
            assert time.monotonic() < deadline and procs[1].poll() is None, "member 1 never started"
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, latest))
        killed = procs[1].poll() is None
        if killed:
            os.killpg(procs[1].pid, signal.SIGKILL)
        # The survivor cannot finish without its peer: stop it too, as an operator (or
        # Kubernetes) restarts the whole cluster.
        errors = []
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            errors.append(p.communicate()[1])
        if killed:
            break
        why = f"member 1 exited ({procs[1].returncode}) before the kill: {errors[1][-3000:]}"
        # Retried: the cluster done already (exit 0), or a port taken between free_ports()
        # and the bind by a test running in parallel. Any other exit is a failure.
        assert procs[1].returncode == 0 or "in use" in errors[1].lower(), why
        early.append(why)
    assert killed, "\n".join(early)

    cluster(members, "ingest", str(stream))
    assert tables(*members) == tables(one)


def test_shards_move_whole_when_a_machine_leaves(tmp_path: Path, stream: Path, one: Path) -> None:
    lines = stream.read_bytes().splitlines(keepends=True)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(lines[: len(lines) // 2]))
    members = [project(tmp_path / f"machine{i}") for i in range(2)]
    cluster(members, "ingest", str(events))

    # Machine 1 leaves: its shards and recovery partitions move to machine 0 (through a
    # folder whose name a raw SQLite URI would misread).
    moving = tmp_path / "moving #1?"
    state1 = members[1].parent / "state"
    # A stop by signal leaves a partition's newest state in its write-ahead log: here a
    # row written by a process that ends without closing (so without a checkpoint).
    part = sorted((state1 / "recovery").glob("*.sqlite3"))[0]
    subprocess.run([sys.executable, "-c", (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE probe (x)'); "
        "c.execute('INSERT INTO probe VALUES (42)'); c.commit(); os._exit(0)"
    ), str(part)], check=True)  # fmt: skip
    assert Path(f"{part}-wal").stat().st_size > 0
    shards = ",".join(str(int(p.stem)) for p in sorted((state1 / "shards").glob("*.db")))
    parts = ",".join(p.stem.split("-")[1] for p in sorted((state1 / "recovery").glob("*.sqlite3")))
    personal1 = state1 / "personal.db"
    theirs = sqlite3.connect(personal1).execute("SELECT count(*) FROM activities").fetchone()[0]
    assert theirs > 0  # the athletes' own maps (every visibility) live beside the shards
    run(
        members[1], "shards", "export", "--shards", shards, "--recovery", parts, "--to", str(moving)
    )
    assert sqlite3.connect(personal1).execute("SELECT count(*) FROM activities").fetchone() == (0,)
    assert not list((state1 / "shards").glob("*.db"))
    # As docs/scaling.md writes it: the config before the files.
    run(members[0], "shards", "import", "-c", str(members[0]), *map(str, sorted(moving.iterdir())))
    assert list(moving.iterdir()) == [], "the files moved, and nothing was left beside them"
    assert not list((state1 / "recovery").glob("*-wal")), "a log left behind"
    personal0 = sqlite3.connect(members[0].parent / "state" / "personal.db")
    ids = [r[0] for r in personal0.execute("SELECT DISTINCT athlete_id FROM activities")]
    assert (
        len(ids) > 1 and personal0.execute("SELECT count(*) FROM activities").fetchone()[0] > theirs
    )
    personal0.close()
    moved = members[0].parent / "state" / "recovery" / part.name
    con = sqlite3.connect(f"file:{moved}?mode=ro", uri=True)
    assert con.execute("SELECT x FROM probe").fetchall() == [(42,)]  # the log moved too
    con.close()

    # The rest of the stream, now on one machine alone, resumes where the cluster stopped.
    events.write_bytes(b"".join(lines))
    run(members[0], "ingest", str(events))
    assert tables(members[0]) == tables(one)


def test_a_store_keeps_its_shard_count(tmp_path: Path, stream: Path) -> None:
    cfg = project(tmp_path / "p")
    run(cfg, "ingest", str(stream))
    write_config(cfg.parent, shards=4)
    proc = start(cfg, "stats")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err
    assert "shards = 16" in err and "4" in err, err


def _value(text: str, name: str) -> float:
    found = [ln.split()[1] for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(found[0]) if found else 0.0


def test_ingest_serves_prometheus_metrics(tmp_path: Path, stream: Path) -> None:
    (port,) = free_ports(1)
    cfg = project(tmp_path / "p")
    write_config(cfg.parent, metrics_port=port)
    proc = start(cfg, "ingest", "--follow", str(stream))
    try:
        deadline = time.monotonic() + 120
        text = ""
        while _value(text, "heatmetro_events_total") < 283:
            assert time.monotonic() < deadline, text[-2000:]
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                continue
        metrics = dict(
            line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("heatmetro_")
        )
        assert float(metrics["heatmetro_fixes_total"]) > 10_000
        assert metrics["heatmetro_dead_letters_total"] == "0.0"
        assert float(metrics["heatmetro_batch_seconds_count"]) >= 1
        assert "heatmetro_commit_stall_seconds_count" in metrics
        assert float(metrics["heatmetro_lag_seconds"]) > 0  # the rides are years old
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_the_cluster_runs_through_public_bytewax_api() -> None:
    """``heatmetro`` starts Bytewax only through ``bytewax.run.cli_main`` (what
    ``python -m bytewax.run`` calls, listed in its ``__all__``): an upgrade that drops or
    renames it fails here, not in a cluster."""
    import inspect

    import bytewax.run

    from heatmetro.flows import runner
    from heatmetro.site_builder import distributed

    assert "cli_main" in bytewax.run.__all__
    params = inspect.signature(bytewax.run.cli_main).parameters
    assert {"flow", "workers_per_process", "process_id", "addresses"} <= set(params)
    for module in (runner, distributed):
        assert module.cli_main is bytewax.run.cli_main
        assert "bytewax._bytewax" not in inspect.getsource(module)


def _alone(cfg: Path, *args: str, timeout_s: str) -> subprocess.Popen[str]:
    """A cluster member whose peer never comes (its address is free: nobody listens)."""
    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(2))
    return subprocess.Popen(
        [*HEATMETRO, *args, "-c", str(cfg), "-a", addresses],
        env=cli_env(SOURCE_DATE_EPOCH=EPOCH, HEATMETRO_JOIN_TIMEOUT_S=timeout_s),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


@pytest.mark.parametrize("member", ["0", "1"])
def test_a_member_whose_peer_never_comes_gives_up_and_hears_signals(
    tmp_path: Path, stream: Path, member: str
) -> None:
    """It waited forever, silent, deaf to SIGTERM and Ctrl-C (an outside review): Bytewax
    connects inside Rust, where no Python signal handler runs."""
    cfg = project(tmp_path / "m")
    proc = _alone(cfg, "ingest", str(stream), "-i", member, timeout_s="3")
    try:
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 1 and "did not form within 3 s" in err, err
    assert "Traceback" not in err
    for args in (
        ("ingest", str(stream), "-i", member),
        ("snapshot", "--month", "2018-06", "-i", member),
    ):
        proc = _alone(cfg, *args, timeout_s="600")
        time.sleep(2.0)  # well into the wait for the peer
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            err = proc.communicate(timeout=20)[1]
        finally:
            proc.kill()
        assert proc.returncode == 128 + signal.SIGTERM, (args, proc.returncode, err)
        assert "stopped by SIGTERM" in err and "Traceback" not in err, err


def test_a_quiet_cluster_that_formed_outlives_the_join_timeout(tmp_path: Path) -> None:
    """A worker with no input partition and no data yet is still a member of a formed
    cluster: a first version took it for one still waiting and ended the run (a review
    of the change). Three local workers follow an empty file past an 8 s join timeout
    (long enough for three processes to start on a busy 2-core machine)."""
    cfg = project(tmp_path / "m")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = subprocess.Popen(
        [*HEATMETRO, "ingest", str(empty), "--follow", "-w", "3", "-c", str(cfg)],
        env=cli_env(SOURCE_DATE_EPOCH=EPOCH, HEATMETRO_JOIN_TIMEOUT_S="8"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(16)
        assert proc.poll() is None, proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):  # ended early: the assert says why
            os.killpg(proc.pid, signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
    assert "did not form" not in err and "waiting for the other" not in err, err
    assert proc.returncode == 128 + signal.SIGTERM, err


def test_files_do_not_move_while_an_ingest_runs(tmp_path: Path, stream: Path) -> None:
    """A checkpoint succeeds beside an idle writer: a shard moved under a running ingest
    took its next batch into unlinked files (a review of the change). Export refuses."""
    cfg = project(tmp_path / "m")
    proc = start(cfg, "ingest", str(stream), "--follow")
    try:
        shard = cfg.parent / "state" / "shards" / "0000.db"
        deadline = time.monotonic() + 60
        while not (cfg.parent / "state" / "ingest.lock").exists():  # taken once it runs
            assert proc.poll() is None and time.monotonic() < deadline, "no store"
            time.sleep(0.1)
        moved = subprocess.run(
            [*HEATMETRO, "shards", "export", "-c", str(cfg), "--shards", "0", "--to",
             str(tmp_path / "out")],
            env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert moved.returncode == 1 and "an ingest is running" in moved.stderr, moved.stderr
        assert shard.exists() and not (tmp_path / "out" / "0000.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
