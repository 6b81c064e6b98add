"""Kafka input against a real Kafka-protocol broker (librdkafka's mock cluster).

The broker runs in its own process (it lives inside a ``confluent_kafka.Producer``) and
speaks the real protocol on 127.0.0.1; ``heatmetro ingest kafka://...`` is run through
the CLI exactly as a user would.
"""

from __future__ import annotations

import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlite_utils
from confluent_kafka import Consumer, Producer, TopicPartition

from heatmetro.core.config import load_config
from tests.conftest import HEATMETRO, REPO, TEST_SALT, cli_env, write_config
from tests.store_rows import query, shard_files
from tests.streams import NORTH_EAST, NORTH_WEST, activity, athlete, line, street_rides, to_jsonl

TOPIC = "rides"
BROKER = """
from confluent_kafka import Producer
holder = Producer({"test.mock.num.brokers": 1, "broker.address.family": "v4"})
md = holder.list_topics(timeout=10)
print(",".join(f"{b.host}:{b.port}" for b in md.brokers.values()), flush=True)
while True:
    holder.poll(0.5)
"""
MALFORMED = b'{"kind": "activity", "activity_id": "broken"'  # cut off mid-message

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """The bootstrap address (``127.0.0.1:PORT``) of a one-broker mock cluster."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BROKER], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), f"mock broker said {address!r}"
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def produce(
    address: str, topic: str, values: Sequence[bytes | None], keys: Sequence[bytes] | None = None
) -> None:
    """Write ``values`` in order to ``topic`` (auto-created): all to partition 0, or by
    ``keys`` (the broker's partitioner spreads them)."""
    producer = Producer({"bootstrap.servers": address, "broker.address.family": "v4"})
    errors: list[Any] = []
    for i, value in enumerate(values):
        if keys is None:
            producer.produce(topic, value=value, partition=0, on_delivery=_collect(errors))
        else:
            producer.produce(topic, value=value, key=keys[i], on_delivery=_collect(errors))
    assert producer.flush(10) == 0, "messages left undelivered"
    assert not errors, errors


def messages_per_partition(address: str, topic: str) -> dict[int, int]:
    """Partition -> number of messages in it (high minus low watermark)."""
    consumer = Consumer(
        {"bootstrap.servers": address, "group.id": "count", "broker.address.family": "v4"}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        out = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            out[p] = high - low
        return out
    finally:
        consumer.close()


def _collect(errors: list[Any]) -> Callable[[Any, Any], None]:
    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    return on_delivery


def new_project(folder: Path) -> tuple[Path, Path]:
    """A project folder with its config; returns (config.toml, state_dir)."""
    folder.mkdir()
    cfg = write_config(folder)
    return cfg, load_config(cfg, salt=TEST_SALT).state_dir


def rows(state_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    return query(state_dir, sql)


ACTIVITIES = "SELECT * FROM activities ORDER BY activity_id"
ATHLETE_MONTHS = "SELECT * FROM athlete_months ORDER BY athlete_id, month, layer"
DEAD = "SELECT source, position, reason FROM dead_letters ORDER BY source, position"


def first_stream() -> list[dict[str, Any]]:
    """Three athletes riding Elm Street, one of them with settings first."""
    return [athlete("a0", hide_start_end_m=100), *street_rides(3)]


def test_kafka_topic_ingests_like_jsonl_and_resumes(
    broker: str, run_cli: Run, tmp_path: Path
) -> None:
    events = first_stream()
    messages: list[bytes | None] = [orjson.dumps(e) for e in events]
    messages.insert(2, MALFORMED)  # offset 2
    messages.append(None)  # a tombstone (no value), offset 5
    produce(broker, TOPIC, messages)

    cfg, store = new_project(tmp_path / "from_kafka")
    run_cli("ingest", "-c", cfg, f"kafka://{broker}/{TOPIC}")

    ids = [r[0] for r in rows(store, "SELECT activity_id FROM activities ORDER BY 1")]
    assert ids == ["a0-r1", "a1-r1", "a2-r1"]
    assert set(rows(store, "SELECT DISTINCT status FROM activities")) == {("active",)}
    dead = rows(store, DEAD)
    assert [(s, p) for s, p, _ in dead] == [(f"kafka:{TOPIC}:0", 2), (f"kafka:{TOPIC}:0", 5)]
    assert dead[0][2].startswith("invalid JSON")
    assert dead[1][2].startswith("invalid JSON: Input is a zero-length, empty document")
    exported = [orjson.loads(x) for x in (store / "dead_letters.jsonl").read_bytes().splitlines()]
    assert [(d["source"], d["position"]) for d in exported] == [(s, p) for s, p, _ in dead]

    # The same stream as a JSONL file gives the same store.
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(to_jsonl(events) + MALFORMED + b"\n")
    cfg_file, store_file = new_project(tmp_path / "from_file")
    run_cli("ingest", "-c", cfg_file, jsonl)
    assert rows(store_file, ACTIVITIES) == rows(store, ACTIVITIES)
    assert rows(store_file, ATHLETE_MONTHS) == rows(store, ATHLETE_MONTHS)
    assert len(rows(store, ATHLETE_MONTHS)) == 3

    # Rerun after more messages: only the new ones are read. The dead letter removed
    # here would come back if the topic were read again from the beginning.
    for shard in shard_files(store):
        db = sqlite_utils.Database(shard)
        db.execute("DELETE FROM dead_letters WHERE position = 2")
        db.conn.commit()
        db.close()
    more = [activity("a3-r1", "a3", line(NORTH_WEST, NORTH_EAST)), *street_rides(1, prefix="b")]
    produce(broker, TOPIC, [orjson.dumps(e) for e in more] + [b"not json"])  # offsets 6, 7, 8
    run_cli("ingest", "-c", cfg, f"kafka://{broker}/{TOPIC}")

    ids = [r[0] for r in rows(store, "SELECT activity_id FROM activities ORDER BY 1")]
    assert ids == ["a0-r1", "a1-r1", "a2-r1", "a3-r1", "b0-r1"]
    assert [(s, p) for s, p, _ in rows(store, DEAD)] == [
        (f"kafka:{TOPIC}:0", 5),
        (f"kafka:{TOPIC}:0", 8),
    ]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("kafka://127.0.0.1:9092", "no topic"),
        ("kafka:///rides", "no broker"),
        ("kafka://localhost/rides", "is not host:port"),
        ("kafka://localhost:99999/rides", "out of range"),
        ("kafka://localhost:9092/bad topic!", "not a valid Kafka topic name"),
    ],
)
def test_malformed_kafka_url_is_a_clean_cli_error(
    run_cli: Run, project: Path, url: str, words: str
) -> None:
    proc = run_cli("ingest", "-c", project / "config.toml", url, check=False)
    assert proc.returncode != 0
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_kafka_partitions_spread_over_two_processes(
    broker: str, run_cli: Run, tmp_path: Path
) -> None:
    events = [*street_rides(4), *street_rides(3, prefix="r", reverse=True)]
    # Keyed by athlete: the auto-created topic has several partitions.
    keys = [e["athlete_id"].encode() for e in events]
    produce(broker, "spread", [orjson.dumps(e) for e in events], keys)
    # The premise, checked: the messages really sit in more than one partition.
    filled = [n for n in messages_per_partition(broker, "spread").values() if n]
    assert len(filled) >= 2 and sum(filled) == len(events), filled

    cfg, store = new_project(tmp_path / "w2")
    # Every process builds the same flow (flows/runner.py); a mismatch made timely panic
    # and leave the other member waiting, so do not wait 300 s (a good run takes ~5 s).
    run_cli("ingest", "-c", cfg, f"kafka://{broker}/spread", "-w", "2", timeout=30)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(to_jsonl(events))
    cfg_file, store_file = new_project(tmp_path / "file")
    run_cli("ingest", "-c", cfg_file, jsonl)
    assert len(rows(store, ACTIVITIES)) == 7
    assert rows(store, ACTIVITIES) == rows(store_file, ACTIVITIES)
    assert rows(store, ATHLETE_MONTHS) == rows(store_file, ATHLETE_MONTHS)


def test_another_topic_on_the_same_state_dir_is_one_line(
    broker: str, run_cli: Run, tmp_path: Path
) -> None:
    """Bytewax panics on a recovered topic partition the source does not have: the CLI
    refuses a topic other than the one the recovery state was made reading, in one line."""
    produce(broker, "first-topic", [orjson.dumps(e) for e in first_stream()])
    produce(broker, "second-topic", [orjson.dumps(e) for e in street_rides(1, prefix="s")])
    cfg, store = new_project(tmp_path / "p")
    run_cli("ingest", "-c", cfg, f"kafka://{broker}/first-topic")
    before = rows(store, ACTIVITIES)
    proc = run_cli("ingest", "-c", cfg, f"kafka://{broker}/second-topic", check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 1 and len(err.splitlines()) == 1, err
    assert "Kafka topic(s) first-topic, not second-topic" in err and "panicked" not in err
    assert rows(store, ACTIVITIES) == before
    # The same topic again is fine, and removing the recovery folder, as advised, reads
    # the new topic from its start into the same store.
    run_cli("ingest", "-c", cfg, f"kafka://{broker}/first-topic")
    shutil.rmtree(store / "recovery")
    run_cli("ingest", "-c", cfg, f"kafka://{broker}/second-topic")
    assert [r[0] for r in rows(store, "SELECT activity_id FROM activities ORDER BY 1")] == [
        "a0-r1", "a1-r1", "a2-r1", "s0-r1",
    ]  # fmt: skip


def test_brokers_that_do_not_answer_are_one_line(run_cli: Run, tmp_path: Path) -> None:
    """librdkafka logs every retry to stderr; the run must end in the one line saying so."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg, store = new_project(tmp_path / "p")
    url = f"kafka://127.0.0.1:{port}/rides"
    env = cli_env(HEATMETRO_KAFKA_TIMEOUT_S="2.5")  # the default 15 s, shortened
    proc = run_cli("ingest", "-c", cfg, url, check=False, env=env)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1, proc.stderr[-2000:]
    assert "no answer from the Kafka brokers in 2.5 s" in err[0]
    # A timeout that is no number of seconds is one line too, before any wait.
    bad = run_cli("ingest", "-c", cfg, url, check=False, env=cli_env(HEATMETRO_KAFKA_TIMEOUT_S="0"))
    assert bad.returncode == 1, bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "heatmetro ingest: error: HEATMETRO_KAFKA_TIMEOUT_S='0': not a number of seconds above 0"
    ]
    # Nothing was read: the state is not tied to the topic of a run that never connected.
    assert not (store / "recovery" / "kafka_topics.json").exists()


def test_a_broker_gone_mid_follow_is_said_once_a_minute(run_cli: Run, tmp_path: Path) -> None:
    """librdkafka repeats its complaint on every retry from every consumer (~80 lines a
    second): ingest keeps waiting for the brokers, saying each complaint once a minute.

    Waits on what the run shows, not on fixed sleeps: under load the first read, or
    librdkafka's first complaint, once came later than the sleeps allowed."""
    own = subprocess.Popen([sys.executable, "-c", BROKER], stdout=subprocess.PIPE, text=True)
    assert own.stdout is not None
    address = own.stdout.readline().strip()
    produce(address, TOPIC, [orjson.dumps(e) for e in first_stream()], keys=[b"a"] * 4)
    cfg, store = new_project(tmp_path / "p")
    proc = subprocess.Popen(
        [*HEATMETRO, "ingest", "-c", str(cfg), f"kafka://{address}/{TOPIC}", "--follow"],
        env=cli_env(), cwd=REPO, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()

    def wait_for(done: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert proc.poll() is None, f"ingest --follow ended while waiting for {what}"
            assert time.monotonic() < deadline, f"no {what} in {timeout_s:g} s: {lines[-5:]}"
            time.sleep(0.2)

    rides = sum(e["kind"] == "activity" for e in first_stream())

    def read_all() -> bool:
        if not list((store / "shards").glob("*.db")):
            return False  # not made yet
        try:
            return len(rows(store, ACTIVITIES)) == rides
        except sqlite3.Error:  # busy, or mid-migration
            return False

    try:
        wait_for(read_all, "activities read from the topic")
        own.terminate()
        own.wait(timeout=10)
        wait_for(lambda: any(ln.startswith("heatmetro ingest: kafka: ") for ln in lines),
                 "complaint about the gone broker")  # fmt: skip
        time.sleep(5)  # librdkafka keeps retrying meanwhile: still said once
        assert proc.poll() is None, "ingest --follow gave up on the brokers"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        for p in (own, proc):
            if p.poll() is None:
                p.kill()
                p.wait()
    err = "".join(lines)
    said = [ln.rstrip("\n") for ln in lines if ln.strip()]
    assert said[-1] == "heatmetro ingest: stopped by SIGTERM; rerun to resume", err[-2000:]
    assert 1 <= len(said) - 1 <= 12, f"{len(said)} lines:\n" + "\n".join(said[:20])
    assert all(ln.startswith("heatmetro ingest: kafka: ") for ln in said[:-1]), said[:5]
