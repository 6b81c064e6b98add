"""Prometheus metrics of a running ingest (``metrics_port`` in the config; 0 = off).

One HTTP endpoint per process, on 127.0.0.1 (scrape it through a sidecar or a tunnel;
the figures are counts and timings, never identifiers). Process ``i`` of a cluster on one
machine serves ``metrics_port + i`` so local processes do not collide.
"""

from __future__ import annotations

import time

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from heatmetro.state.changes import DeadLetter, StoreItem

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class IngestMetrics:
    """The ingest's counters; created once per process, shared by its sink partitions."""

    def __init__(self) -> None:
        self.events = Counter(
            "heatmetro_events", "stream items written to the store (activities, settings, deletes)"
        )
        self.fixes = Counter("heatmetro_fixes", "GPS fixes of the activities written")
        self.dead_letters = Counter("heatmetro_dead_letters", "records sent to dead letters")
        self.lag = Gauge(
            "heatmetro_lag_seconds",
            "wall clock minus the updated_at of the newest item written (event-time lag)",
        )
        self.batch_latency = Histogram(
            "heatmetro_batch_seconds", "wall time of one store write (one batch, one shard)",
            buckets=_BUCKETS,
        )  # fmt: skip
        self.commit_stall = Histogram(
            "heatmetro_commit_stall_seconds",
            "time a batch waited for its shard's write lock before it could write",
            buckets=_BUCKETS,
        )
        self.commit_stall_max = Gauge(
            "heatmetro_commit_stall_max_seconds", "longest write-lock wait so far"
        )
        self._newest_ms = 0
        self._stall_max = 0.0

    def observe(self, items: list[StoreItem], *, batch_s: float, lock_wait_s: float) -> None:
        n_dead = sum(1 for it in items if isinstance(it, DeadLetter))
        self.dead_letters.inc(n_dead)
        self.events.inc(len(items) - n_dead)
        self.fixes.inc(sum(getattr(it, "fixes_in", 0) for it in items))
        newest = max((getattr(it, "updated_ms", 0) for it in items), default=0)
        if newest > self._newest_ms:
            self._newest_ms = newest
        if self._newest_ms:
            self.lag.set(max(0.0, time.time() - self._newest_ms / 1000))
        self.batch_latency.observe(batch_s)
        self.commit_stall.observe(lock_wait_s)
        if lock_wait_s > self._stall_max:
            self._stall_max = lock_wait_s
            self.commit_stall_max.set(lock_wait_s)


_METRICS: IngestMetrics | None = None


def process_metrics(port: int) -> IngestMetrics | None:
    """This process's metrics, serving on ``port`` from the first call (None when 0)."""
    global _METRICS  # noqa: PLW0603 - one registry and one server per process
    if not port:
        return None
    if _METRICS is None:
        _METRICS = IngestMetrics()
        start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
    return _METRICS
