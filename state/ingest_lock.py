"""While ``heatmetro ingest`` runs, its ``state_dir`` holds a lock that moving files needs.

SQLite cannot tell an idle writer from none (a checkpoint succeeds beside an open
connection between batches), and a shard moved away under a running ingest takes the
next batch into unlinked files: lost (found by a review). Ingest holds a shared
``flock`` on ``state_dir/ingest.lock`` for its whole run; ``shards export``/``import``
take it exclusively, without waiting, and refuse while an ingest runs.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from heatmetro.core.errors import StoreError

LOCK_FILE = "ingest.lock"


@contextmanager
def _locked(state_dir: Path, how: int) -> Iterator[bool]:
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def ingesting(state_dir: Path) -> Iterator[None]:
    """Held by an ingest run (shared: a run's processes may each hold it)."""
    with _locked(state_dir, fcntl.LOCK_SH):
        yield


@contextmanager
def no_ingest_running(state_dir: Path) -> Iterator[None]:
    """For moving files: a StoreError while any ingest runs on ``state_dir``."""
    with _locked(state_dir, fcntl.LOCK_EX) as alone:
        if not alone:
            msg = f"an ingest is running on {state_dir}: stop it (every member) before moving files"
            raise StoreError(msg)
        yield
