"""The ingest's sink: one partition per store shard, so every shard has one writer.

Items arrive keyed by shard (``shard_key``). Bytewax gives each shard partition to one
worker among those that list it (``list_parts``: the shard files in this process's own
``state_dir``), and routes each item to its shard's partition, across machines if need
be. A SQLite file therefore never has two writers, and no lock is shared between shards.
"""

from __future__ import annotations

import sys
import threading
import time
from functools import partial

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from heatmetro.core.cluster_join import formed
from heatmetro.core.config import Config
from heatmetro.core.errors import StoreError
from heatmetro.flows.fatal import end_run_on_environment_error
from heatmetro.flows.metrics import IngestMetrics, process_metrics
from heatmetro.state.changes import DeadLetter, StoreItem
from heatmetro.state.personal_store import PersonalChange, PersonalWriter
from heatmetro.state.rebuild import rebuild_dirty
from heatmetro.state.shards import ShardedStore, shard_name, shard_of
from heatmetro.state.store import connect, immediate
from heatmetro.state.writer import StoreWriter

AGGREGATE_REFRESH_S = 10.0  # rebuild touched athlete-months at most this often (and at the end)


def routing_key(item: StoreItem | PersonalChange) -> str:
    """What places an item: its athlete, or a dead letter's source (no athlete to trust)."""
    if isinstance(item, PersonalChange):
        return item.activity.athlete_id
    return item.source if isinstance(item, DeadLetter) else item.athlete_id


def shard_key(config: Config, item: StoreItem) -> tuple[str, StoreItem]:
    return shard_name(shard_of(routing_key(item), config.shards)), item


class _ShardPartition(StatefulSinkPartition[StoreItem, None]):
    def __init__(self, sink: ShardSink, shard: int) -> None:
        self.sink, self.shard = sink, shard
        store = ShardedStore(sink.config.state_dir, sink.config.shards)
        self.guard = partial(end_run_on_environment_error, store.path(shard))
        with self.guard():
            self.writer = StoreWriter.for_config(
                store.connect(shard), sink.config, refresh_every_s=AGGREGATE_REFRESH_S
            )

    def write_batch(self, items: list[StoreItem]) -> None:
        public = [i for i in items if not isinstance(i, PersonalChange)]
        with self.guard():  # a full disk, a corrupt store, a missing shard: one line
            for it in public:
                if shard_of(routing_key(it), self.sink.config.shards) != self.shard:
                    # Bytewax indexes the *global* sorted list of listed shards: a shard
                    # missing from every process would shift the others. Never write there.
                    msg = (
                        f"shard {shard_name(self.shard)} received an item of another shard: "
                        "some shard file is on no machine (see `heatmetro shards --list`)"
                    )
                    raise StoreError(msg)
            t0 = time.perf_counter()
            self.sink.last_write[self.shard] = time.monotonic()
            self.writer.write_batch(public)
            self.sink.write_personal(items)
        self.sink.observe(public, time.perf_counter() - t0, self.writer.lock_wait_s)

    def snapshot(self) -> None:
        return None  # every write is an idempotent upsert: replaying a batch is harmless

    def close(self) -> None:
        with self.guard():
            self.writer.refresh()
        self.writer.db.close()
        self.sink.part_closed()


class ShardSink(FixedPartitionedSink[StoreItem, None]):
    """``(shard, item)`` pairs -> that shard's SQLite file, in this process's ``state_dir``."""

    def __init__(self, config: Config, *, quiet: bool = False, follow: bool = False) -> None:
        self.config = config
        self.quiet = quiet
        self.follow = follow
        self.last_write: dict[int, float] = {}  # shard -> when a batch last came
        self._progress: Progress | None = None
        self._personal: PersonalWriter | None = None
        self._open = 0
        self._lock = threading.Lock()  # several worker threads of one process share it

    def list_parts(self) -> list[str]:
        formed()  # every worker lists them, once connected (heatmetro.core.cluster_join)
        return [
            shard_name(s) for s in ShardedStore(self.config.state_dir, self.config.shards).local()
        ]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)  # the shard number: shards are listed in order, globally

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ShardPartition:
        with self._lock:
            if self._progress is None and self.config.personal_heatmaps:
                # The athletes' own maps: one separate file per state_dir, written by
                # this process's partitions in turn (state/personal_store.py).
                with end_run_on_environment_error():
                    self._personal = PersonalWriter.for_config(self.config)
            if self._progress is None:
                self._progress = Progress(quiet=self.quiet, metrics=process_metrics(
                    self.config.metrics_port
                ))  # fmt: skip
                if self.follow:
                    threading.Thread(
                        target=self._refresh_when_idle, name="heatmetro-idle-refresh", daemon=True
                    ).start()
            self.last_write.setdefault(int(for_part), time.monotonic())
            self._open += 1
        return _ShardPartition(self, int(for_part))

    def _refresh_when_idle(self) -> None:
        """Following, a stream may go quiet with athlete-months still to rebuild (a
        writer rebuilds them when its next batch comes, at most every
        ``AGGREGATE_REFRESH_S``): a shard quiet that long is rebuilt here, on a connection
        of its own (SQLite serialises it with the writer's batches)."""
        store = ShardedStore(self.config.state_dir, self.config.shards)
        while True:
            time.sleep(AGGREGATE_REFRESH_S / 4)
            now = time.monotonic()
            for shard, last in sorted(self.last_write.items()):
                if now - last < AGGREGATE_REFRESH_S:
                    continue
                with end_run_on_environment_error(store.path(shard)):
                    db = connect(store.path(shard), create=False)  # never a new, empty one
                    try:
                        if db.execute("SELECT 1 FROM dirty_months LIMIT 1").fetchone():
                            with immediate(db):
                                rebuild_dirty(db)
                    finally:
                        db.close()
                self.last_write[shard] = now  # not again until the next quiet spell

    def write_personal(self, items: list[StoreItem]) -> None:
        if self._personal is not None:
            with self._lock:
                self._personal.write_batch(items)

    def observe(self, items: list[StoreItem], batch_s: float, lock_wait_s: float) -> None:
        assert self._progress is not None
        with self._lock:
            self._progress.add(items, batch_s=batch_s, lock_wait_s=lock_wait_s)

    def part_closed(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0 and self._progress is not None:
                self._progress.done()
                if self._personal is not None:
                    self._personal.close()


class Progress:
    """Activities and points per second of this process on stderr, at most every few
    seconds (``quiet`` turns it off), and the Prometheus metrics when they are on."""

    EVERY_S = 5.0

    def __init__(self, *, quiet: bool, metrics: IngestMetrics | None = None) -> None:
        self.quiet = quiet
        self.metrics = metrics
        self.t0 = self.last = time.monotonic()
        self.activities = self.fixes = self.dead = 0
        self.max_stall_s = 0.0

    def add(
        self, items: list[StoreItem], *, batch_s: float = 0.0, lock_wait_s: float = 0.0
    ) -> None:
        for it in items:
            if isinstance(it, DeadLetter):
                self.dead += 1
            elif hasattr(it, "fixes_in"):
                self.activities += 1
                self.fixes += it.fixes_in  # type: ignore[union-attr]
        self.max_stall_s = max(self.max_stall_s, lock_wait_s)
        if self.metrics is not None:
            self.metrics.observe(items, batch_s=batch_s, lock_wait_s=lock_wait_s)
        now = time.monotonic()
        if now - self.last >= self.EVERY_S:
            self.last = now
            self._print("…")

    def _print(self, tail: str) -> None:
        if self.quiet or not self.activities + self.dead:
            return
        s = max(time.monotonic() - self.t0, 1e-9)
        # In a log (systemd's journal adds its own stamp, a plain file does not): UTC time.
        stamp = "" if sys.stderr.isatty() else time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime())
        print(
            f"{stamp}{self.activities:,} activities ({self.activities / s:,.0f}/s), "
            f"{self.fixes:,} GPS fixes ({self.fixes / s:,.0f}/s), {self.dead:,} dead letters, "
            f"longest commit stall {self.max_stall_s * 1000:,.0f} ms {tail}",
            file=sys.stderr,
        )

    def done(self) -> None:
        self._print("done")
