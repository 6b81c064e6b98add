"""A broken environment inside a running dataflow ends the run with one line.

An exception raised inside a Bytewax step becomes a Rust panic with a multi-line
report. A full disk, a corrupt store or an input that vanished is not a bug, so the
step prints one line and exits at once instead. That is as safe as a SIGKILL, which
ingest survives by design: the failed batch's transaction was rolled back, and the
rerun resumes from the last recovery snapshot.

Two more ways a run would otherwise end badly are caught here: a corrupt recovery file
(Bytewax panics on opening it) and a dead cluster member (the others would wait for it
forever).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from heatmetro.core.environment import describe_os_error, describe_store_error
from heatmetro.core.errors import HeatmetroError, StoreError

EXIT_CODE = 1


@contextmanager
def end_run_on_environment_error(db_path: Path | None = None) -> Iterator[None]:
    """Turn an environment error (``OSError``, SQLite, a store error) into one line and an exit."""
    try:
        yield
    except (HeatmetroError, OSError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, HeatmetroError):
            line = str(exc)
        elif isinstance(exc, sqlite3.Error):
            line = describe_store_error(exc, db_path or "(unknown)")
        else:
            line = describe_os_error(exc)
        if not isinstance(exc, HeatmetroError):  # the environment: fix it, then rerun
            line += "; rerun to resume"
        print(f"heatmetro ingest: error: {line}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_CODE)


# What timely's network threads panic with when a peer's connection closes.
_PEER_LOST = ("Send thread panic", "Recv thread panic")
# ``ingest -w N``'s worker processes (``watch_children``), and one lock for the one line:
# a killed worker is seen both by the watcher and, as a lost peer, by timely.
_children: list[subprocess.Popen[bytes]] = []
_said = threading.Lock()


def _dead_child() -> tuple[int, int] | None:
    """(index, exit code) of a worker process that ended with an error, if one did."""
    for i, child in enumerate(_children, start=1):
        code = child.poll()
        if code is not None and code != 0:
            return i, code
    return None


def _say_worker_died(i: int, code: int) -> None:
    if code != EXIT_CODE:  # it could not say why itself (killed, crashed)
        print(
            f"heatmetro ingest: error: worker process {i} ended with code {code}; rerun to resume",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def end_run_on_lost_peer() -> Iterator[None]:
    """A cluster member that lost a peer (stopped, killed, its machine gone) ends in one
    line instead of Bytewax's ``PanicException`` traceback; any other panic is a bug and
    keeps its traceback. Exits at once: other worker threads may be mid-batch."""
    try:
        yield
    except BaseException as exc:  # PanicException derives from BaseException
        if type(exc).__name__ != "PanicException" or not str(exc).startswith(_PEER_LOST):
            raise
        # With -w N the lost peer is one of our own worker processes: name it, as the
        # watcher would (it polls every 0.2 s; timely may notice first).
        deadline = time.monotonic() + 1.0
        dead = _dead_child()
        while dead is None and _children and time.monotonic() < deadline:
            time.sleep(0.05)
            dead = _dead_child()
        _said.acquire()  # the watcher, if it got there first, is ending the process
        if dead is not None:
            _say_worker_died(*dead)
        else:
            print(
                "heatmetro ingest: error: a cluster member stopped or its connection was "
                "lost; rerun every member to resume",
                file=sys.stderr,
                flush=True,
            )
        sys.stdout.flush()
        os._exit(EXIT_CODE)


def check_recovery_parts(recovery_dir: Path) -> None:
    """Refuse, in one line, a recovery folder Bytewax could not open (it would panic).

    Raises:
        StoreError: a part is not a readable SQLite file.
    """
    for part in sorted(recovery_dir.glob("part-*.sqlite3")):
        try:
            con = sqlite3.connect(f"file:{part}?mode=ro", uri=True)
            try:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            msg = (
                f"recovery file {part} is corrupt ({exc}); remove {recovery_dir} to re-read "
                "the inputs from their start (the store is kept: re-delivered events change "
                "nothing)"
            )
            raise StoreError(msg) from None


def watch_children(children: Sequence[subprocess.Popen[bytes]]) -> None:
    """End this process too when a cluster member dies before finishing.

    Timely waits for a lost peer forever, so a member that ended on a full disk (having
    said why) or was killed would leave ``ingest -w N`` hanging. Dying is safe (as safe
    as a SIGKILL); the other members follow (``PR_SET_PDEATHSIG``).
    """

    _children[:] = children

    def watch() -> None:
        while True:
            dead = _dead_child()
            if dead is not None:
                _said.acquire()  # the main thread, if it got there first, is ending it
                _say_worker_died(*dead)
                os._exit(EXIT_CODE)
            time.sleep(0.2)

    threading.Thread(target=watch, name="heatmetro-watch-workers", daemon=True).start()
