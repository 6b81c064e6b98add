"""SIGINT (Ctrl-C) and SIGTERM (systemd, Kubernetes) end an ingest at once, in one line.

Python would raise ``KeyboardInterrupt`` at whatever line a Bytewax step was running,
inside a store transaction even, and Bytewax turns that into a Rust panic. Instead the
handler ends the process where it stands, exactly like the SIGKILL ingest survives by
design: every batch is one SQLite transaction (an unfinished one is rolled back when the
shard is next opened), every write is an idempotent upsert, and the rerun resumes from
the last recovery snapshot. Stopping at a batch boundary instead would need every
worker of every process to agree on one, and a source partition that ends its stream
is not one Bytewax resumes the same way. Bytewax's run loop checks for signals every
millisecond, so the handler runs promptly, in the main thread.

Exit codes follow the shell: 128 + the signal (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_once = threading.Lock()  # the main thread's handler and the worker watcher: one line
_last_words: list[Callable[[], object]] = []


def on_stop(callback: Callable[[], object]) -> None:
    """Run ``callback`` when a signal stops the run, before the process ends: a quick
    write from what is committed (the dead-letter file), never a store write. A
    callback that fails is skipped: the next run does its work again."""
    _last_words.append(callback)


def stop(signum: int) -> NoReturn:
    """Say once why the run ended and exit now (``os._exit``: no Python unwinding)."""
    _once.acquire()  # a second caller waits here until the process is gone
    name = signal.Signals(signum).name
    try:
        for callback in _last_words:
            try:
                callback()
            except Exception:  # noqa: BLE001, S110 - last words, best effort
                pass
        sys.stdout.flush()
        print(f"heatmetro ingest: stopped by {name}; rerun to resume", file=sys.stderr, flush=True)
    finally:
        os._exit(128 + signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    stop(signum)


def install() -> None:
    """Stop on SIGINT and SIGTERM from now on (call from the main thread); a signal
    ignored by the parent (SIGINT of a background job in a script) stays ignored."""
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, _handler)


def ignore_in_child() -> None:
    """For ``-w N``'s worker processes (between fork and exec): the parent alone handles
    the signals (a terminal's Ctrl-C reaches the whole process group); its children die
    with it (``PR_SET_PDEATHSIG``). Python keeps an ignored SIGINT ignored at start-up."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
