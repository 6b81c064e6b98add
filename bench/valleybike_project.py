"""Shared bench set-up: ValleyBike rides as stream events, ingested by the real CLI.

Events are written in a child process so that a bench's own peak RSS counts only its
measured work.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
SALT = "bench-salt-not-secret"
T = TypeVar("T")


def write_events(events: Path, csvs: Sequence[Path]) -> None:
    """The rides of ``csvs`` as one JSONL stream at ``events`` (in a child process)."""
    subprocess.run(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; "
         "from heatmetro.flows.importers.jsonl import write_jsonl; "
         "from heatmetro.flows.importers.valleybike import valleybike_events; "
         "write_jsonl(valleybike_events([Path(c) for c in sys.argv[2:]]), Path(sys.argv[1]))",
         str(events), *map(str, csvs)],
        check=True,
    )  # fmt: skip


def ingest(config: Path, events: Path, *, workers: int = 2, salt: str = SALT) -> None:
    """``heatmetro ingest -q -w workers -c config events`` with a clean environment."""
    subprocess.run(
        [sys.executable, "-m", "heatmetro.cli", "ingest", "-q", "-w", str(workers), "-c",
         str(config), str(events)],
        check=True, env={"HEATMETRO_SALT": salt, "PATH": "/usr/bin:/bin"}, cwd=REPO,
    )  # fmt: skip


def one_shard_store(root: Path, csvs: Sequence[Path]) -> Path:
    """``csvs`` ingested into a one-shard store under ``root``; returns its config.toml.

    One shard, so a bench's queries read one SQLite file (``state/shards/0000.db``).
    """
    config = root / "config.toml"
    config.write_text('state_dir = "state"\nout_dir = "site"\nshards = 1\n')
    events = root / "events.jsonl"
    write_events(events, csvs)
    ingest(config, events)
    return config


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the wall seconds it took."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
