"""Run the ingest dataflow with recovery always on (what ``heatmetro ingest`` calls).

``-w N`` runs N Bytewax worker *processes* on 127.0.0.1 (a Bytewax cluster), not
threads: the per-activity work is Python, so only processes use more than one core.
Worker 0 runs in this process; the others are children that die with it (Linux
``PR_SET_PDEATHSIG``), so killing ``heatmetro ingest`` stops the whole run.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import timedelta

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig, init_db_dir

from heatmetro.core.config import Config
from heatmetro.core.errors import HeatmetroError
from heatmetro.flows.fatal import check_recovery_parts, watch_children
from heatmetro.flows.ingest import build_flow
from heatmetro.state.store import connect, export_dead_letters

# Recovery partitions are fixed when the folder is created; runs may use up to this
# many workers (Bytewax can resume with any worker count).
RECOVERY_PARTITIONS = 8


def ensure_recovery(config: Config) -> None:
    """Create the recovery partitions once, atomically.

    They are made in a scratch folder and renamed into place: a run killed while creating
    them (SIGKILL in the first second) must not leave a folder with some of the
    partitions, which Bytewax refuses to resume from.
    """
    if config.recovery_dir.exists():
        return
    scratch = config.recovery_dir.with_name(config.recovery_dir.name + ".creating")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    init_db_dir(scratch, RECOVERY_PARTITIONS)
    scratch.rename(config.recovery_dir)


def run_worker(
    config: Config,
    inputs: list[str],
    *,
    follow: bool,
    process_id: int | None = None,
    addresses: list[str] | None = None,
) -> None:
    """One Bytewax process: the whole flow (alone) or one member of a cluster."""
    # Parsed streams are millions of small lists and floats without reference cycles;
    # the default cyclic-GC thresholds rescan them over and over (a third of ingest
    # time when measured). Collect far less often; reference counting frees them.
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)
    flow = build_flow(
        config,
        inputs,
        follow=follow,
        allow_empty=addresses is not None,  # cluster members must build the same steps
        stdin_elsewhere=bool(process_id),  # only the first process owns the terminal
    )
    cli_main(
        flow,
        workers_per_process=1,
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


def run_ingest(config: Config, inputs: list[str], *, follow: bool = False, workers: int = 1) -> int:
    """Ingest ``inputs`` into the store; returns the number of dead letters now on file."""
    connect(config.db_path).close()  # create / migrate before the workers race for it
    ensure_recovery(config)
    check_recovery_parts(config.recovery_dir)  # Bytewax would panic on a corrupt one
    if workers == 1:
        run_worker(config, inputs, follow=follow)
    else:
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
                ],
                env=env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist yet
            )  # fmt: skip
            for i in range(1, workers)
        ]
        watch_children(children)
        try:
            run_worker(config, inputs, follow=follow, process_id=0, addresses=addresses)
        finally:
            codes = [c.wait() for c in children]
        if any(codes):
            msg = f"ingest worker processes exited with {codes}; rerun to resume"
            raise HeatmetroError(msg)
    db = connect(config.db_path)
    try:
        return export_dead_letters(db, config.dead_letter_path)
    finally:
        db.close()


def warn_default_salt(config: Config) -> None:
    if config.salt_is_default:
        print(
            "warning: using the built-in development salt; set HEATMETRO_SALT to a secret "
            "before ingesting real athletes' data",
            file=sys.stderr,
        )
