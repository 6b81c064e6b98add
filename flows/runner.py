"""Run the ingest dataflow with recovery always on (what ``heatmetro ingest`` calls).

Two ways to run more than one worker, both a Bytewax cluster (timely dataflow over TCP):

* ``-w N`` alone: N worker *processes* on 127.0.0.1 sharing this ``state_dir``, not threads
  (the per-activity work is Python, so only processes use more than one core). Worker 0
  runs in this process; the others are children that die with it (Linux
  ``PR_SET_PDEATHSIG``), so killing ``heatmetro ingest`` stops the whole run.
* ``-a "host:port;..." -i I [-w W]``: this process is member I of a cluster started by
  hand (or by Kubernetes), exactly as ``python -m bytewax.run`` means those flags; W is
  worker threads per process. Each member has its own config and ``state_dir``: it
  creates and writes only its own shards and recovery partitions (docs/scaling.md).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import (
    cli_main,  # public: bytewax.run's ``__all__`` (what ``-m bytewax.run`` calls)
)

from heatmetro.core.cluster import ClusterMember
from heatmetro.core.cluster_join import cluster_member
from heatmetro.core.config import Config
from heatmetro.core.errors import HeatmetroError, StoreError
from heatmetro.flows.fatal import check_recovery_parts, end_run_on_lost_peer, watch_children
from heatmetro.flows.ingest import build_flow
from heatmetro.flows.stop import ignore_in_child, on_stop, stop
from heatmetro.flows.stop import install as stop_on_signals
from heatmetro.state.ingest_lock import ingesting
from heatmetro.state.personal_store import remove_personal_store
from heatmetro.state.shards import MANIFEST, ShardedStore, salt_check
from heatmetro.state.store import export_dead_letters

# Recovery partitions are fixed when the folder is created; runs may use up to this
# many workers (Bytewax can resume with any worker count).
RECOVERY_PARTITIONS = 8


def ensure_recovery(config: Config, member: ClusterMember | None = None) -> None:
    """The recovery partitions: all here, or (cluster member) this process's share.

    Bytewax needs the full set of partitions across the cluster, each on one process.
    Made in a scratch folder and renamed into place, so a kill midway leaves none.
    """
    if config.recovery_dir.exists():
        return
    with tempfile.TemporaryDirectory(dir=config.state_dir) as tmp:
        init_db_dir(Path(tmp), RECOVERY_PARTITIONS)
        for part in range(RECOVERY_PARTITIONS):
            if member is not None and not member.owns(part):
                (Path(tmp) / f"part-{part}.sqlite3").unlink()
        Path(tmp).rename(config.recovery_dir)
        Path(tmp).mkdir()  # for TemporaryDirectory's cleanup


TOPICS_FILE = "kafka_topics.json"


def check_recovered_topics(recovery_dir: Path, inputs: list[str]) -> None:
    """Refuse, in one line, Kafka topics other than those the recovery state was made
    reading: it holds each topic partition's offset, and Bytewax panics on a partition it
    does not know. The first topics read are recorded beside the partitions.

    Raises:
        StoreError: the recovery state belongs to other topics.
    """
    kafka = [i for i in inputs if i.startswith("kafka://")]
    topics: list[str] = []
    if kafka:  # confluent-kafka loads only for a Kafka input
        from heatmetro.flows.kafka_input import parse_kafka_url, topic_partitions

        urls = [parse_kafka_url(i) for i in kafka]
        topics = sorted({url.topic for url in urls})
    record = recovery_dir / TOPICS_FILE
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError) as exc:
        msg = f"recovery file {record} is unreadable ({exc}); remove it"
        raise StoreError(msg) from None
    if recorded is None:
        if topics:
            # Recorded once the brokers answer: a first run that never reached them
            # (a typo in the topic or host) must not tie the state to its topic.
            for url in urls:
                topic_partitions(url)
            record.write_text(json.dumps(topics) + "\n", encoding="utf-8")
        return
    if topics and topics != recorded:
        msg = (
            f"{recovery_dir} holds the read positions of Kafka topic(s) {', '.join(recorded)}, "
            f"not {', '.join(topics)}: use a new state_dir for another topic, or remove "
            f"{recovery_dir} to read every input from its start (the store is kept)"
        )
        raise StoreError(msg)


def run_worker(
    config: Config,
    inputs: list[str],
    *,
    follow: bool,
    process_id: int | None = None,
    addresses: list[str] | None = None,
    workers_per_process: int = 1,
    quiet: bool = False,
) -> None:
    """One Bytewax process: the whole flow (alone) or one member of a cluster."""
    # Parsed streams are millions of small lists and floats without reference cycles;
    # the default cyclic-GC thresholds rescan them over and over (a third of ingest
    # time when measured). Collect far less often; reference counting frees them.
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)
    if config.metrics_port:  # processes sharing a machine must not share a port
        config = config.model_copy(update={"metrics_port": config.metrics_port + (process_id or 0)})
    flow = build_flow(
        config,
        inputs,
        follow=follow,
        allow_empty=addresses is not None,  # cluster members must build the same steps
        stdin_elsewhere=bool(process_id),  # only the first process owns the terminal
        quiet=quiet,
    )
    member = cluster_member("ingest", addresses, stop) if addresses else nullcontext()
    with member, end_run_on_lost_peer():
        cli_main(
            flow,
            workers_per_process=workers_per_process,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=config.epoch_s),
            recovery_config=RecoveryConfig(str(config.recovery_dir), timedelta(0)),
        )


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    ignore_in_child()  # SIGINT/SIGTERM are the parent's to handle (flows/stop.py)


def run_ingest(
    config: Config,
    inputs: list[str],
    *,
    follow: bool = False,
    workers: int = 1,
    member: ClusterMember | None = None,
    quiet: bool = False,
) -> int:
    """Ingest ``inputs`` into the store; returns the number of dead letters now on file.

    SIGINT and SIGTERM end it at once with one line (flows/stop.py); rerun to resume.
    """
    stop_on_signals()
    owned = None if member is None else [s for s in range(config.shards) if member.owns(s)]
    store = ShardedStore.open(
        config.state_dir,
        config.shards,
        create=True,
        owned=owned,
        salt=config.salt,
        resolutions=config.store_resolutions,
    )
    ensure_recovery(config, member)
    check_recovery_parts(config.recovery_dir)  # Bytewax would panic on a corrupt one
    check_recovered_topics(config.recovery_dir, inputs)  # ... and on another topic
    # A signal ends the run at once: the dead-letter file still shows what is committed.
    on_stop(lambda: export_dead_letters(store.connect_all(), config.dead_letter_path))
    with ingesting(config.state_dir):  # no shard file moves away meanwhile
        if not config.personal_heatmaps:
            drop_personal_store(config)
        if member is not None:
            run_worker(
                config, inputs, follow=follow, process_id=member.process_id,
                addresses=member.addresses, workers_per_process=member.workers_per_process,
                quiet=quiet,
            )  # fmt: skip
        elif workers == 1:
            run_worker(config, inputs, follow=follow, quiet=quiet)
        else:
            _run_local_cluster(config, inputs, follow=follow, workers=workers, quiet=quiet)
    return export_dead_letters(store.connect_all(), config.dead_letter_path)


def drop_personal_store(config: Config) -> None:
    """With ``personal_heatmaps`` off no private data is kept: a personal store left from
    before is removed (said even with --quiet: it is the athletes' own maps)."""
    removed = remove_personal_store(config.state_dir)
    if removed is not None:
        print(
            f"personal_heatmaps = false: removed the personal store {removed} (it would miss "
            "every later delete and privacy zone); turned back on, it starts empty",
            file=sys.stderr,
            flush=True,
        )


def _run_local_cluster(
    config: Config, inputs: list[str], *, follow: bool, workers: int, quiet: bool
) -> None:
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(workers)]
    env = dict(os.environ, HEATMETRO_CONFIG_JSON=config.model_dump_json())
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "heatmetro.flows.cluster_worker",
                str(i),
                json.dumps(addresses),
                json.dumps(inputs),
                "1" if follow else "0",
                "1" if quiet else "0",
            ],
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist yet
        )  # fmt: skip
        for i in range(1, workers)
    ]
    watch_children(children)
    try:
        run_worker(config, inputs, follow=follow, process_id=0, addresses=addresses, quiet=quiet)
    finally:
        codes = [c.wait() for c in children]
    if any(codes):
        msg = f"ingest worker processes exited with {codes}; rerun to resume"
        raise HeatmetroError(msg)


def warn_default_salt(config: Config) -> None:
    """A store made with the built-in salt (before a new one was refused): said each run.
    (Without a store, opening one refuses to make it: ``ShardedStore.open``; a store made
    with a secret salt refuses the built-in one there, so nothing is said here.)"""
    manifest = config.state_dir / "shards" / MANIFEST
    if not config.salt_is_default or not manifest.is_file():
        return
    try:
        made_with = json.loads(manifest.read_text()).get("salt_check")
    except (OSError, ValueError, AttributeError):
        return  # an unreadable manifest is for ShardedStore.open to name
    # No record: a store from before the check, likely made with this same salt.
    if made_with in (None, salt_check(config.salt)):
        print(
            "warning: this store was made with the built-in development salt, which is "
            "public; re-ingest into a new state_dir with HEATMETRO_SALT set to a secret "
            "before it holds real athletes' data",
            file=sys.stderr,
        )
