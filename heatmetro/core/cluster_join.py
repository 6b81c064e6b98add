"""A cluster member waiting for its peers: signals still stop it, and it gives up in time.

Bytewax connects a member to every other before it runs a step, inside Rust, where no
Python signal handler runs: a member whose peer never came (a typo in ``-a``, a peer
that failed at once) waited forever, silent, deaf to SIGTERM and Ctrl-C (found by an
outside review). For a cluster run a watcher thread hears the signals, whatever the
main thread is doing; until the first step is built (``formed``) it also says that it
waits and, after ``HEATMETRO_JOIN_TIMEOUT_S`` seconds (default 600), ends the run with
one line.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_formed = threading.Event()
DEFAULT_JOIN_TIMEOUT_S = 600.0
SAY_WAITING_S = 30.0
GRACE_S = 2.0


def formed() -> None:
    """The cluster is up (a source or sink is being built): stop counting."""
    _formed.set()


def join_timeout_s() -> float:
    raw = os.environ.get("HEATMETRO_JOIN_TIMEOUT_S", "")
    try:
        return float(raw) if raw.strip() else DEFAULT_JOIN_TIMEOUT_S
    except ValueError:
        return DEFAULT_JOIN_TIMEOUT_S


@contextmanager
def cluster_member(
    command: str, addresses: list[str], on_signal: Callable[[int], object]
) -> Iterator[None]:
    """Run the block (call it from the main thread) as a cluster member: a signal reaches
    ``on_signal`` (which ends the process) from a watcher thread, and a cluster that does
    not form ends the run.

    The watcher reads the signal numbers Python's C-level handler writes to a wakeup fd,
    whichever thread the kernel delivered the signal to (numpy's threads too). Once the
    cluster is up, the main thread's own handler runs as ever; the watcher then acts
    only if that has not ended the process within ``GRACE_S``.
    """
    _formed.clear()
    done = threading.Event()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    before = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    limit = join_timeout_s()
    start = time.monotonic()

    def watch() -> None:
        said = False
        while not done.is_set():
            ready, _, _ = select.select([read_end], [], [], 0.2)
            if ready:
                got = os.read(read_end, 64)
                signums = [b for b in got if b in (signal.SIGINT, signal.SIGTERM)]
                if signums:
                    if _formed.is_set():
                        time.sleep(GRACE_S)  # the main thread's handler first
                    if not done.is_set():  # (once the block is over, it has the signal)
                        on_signal(signums[0])
                    return
            if _formed.is_set():
                continue
            waited = time.monotonic() - start
            if waited >= SAY_WAITING_S and not said:
                said = True
                print(
                    f"heatmetro {command}: waiting for the other cluster members "
                    f"({';'.join(addresses)}); giving up after {limit:.0f} s",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
            if waited >= limit:
                print(
                    f"heatmetro {command}: error: the cluster did not form within "
                    f"{limit:.0f} s: is every member running with the same -a "
                    f"({';'.join(addresses)}) and its own -i?",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
                os._exit(1)

    watcher = threading.Thread(target=watch, name="heatmetro-cluster-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        # The block is over (the cluster ran): the main thread's handler alone from now.
        signal.set_wakeup_fd(before)
        done.set()
        watcher.join(timeout=1.0)
        os.close(read_end)
        os.close(write_end)
