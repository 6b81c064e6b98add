"""``heatmetro snapshot -a "host:port;..." -i I``: the snapshot as one Bytewax cluster job.

Each process reads only its own shards (one consistent read view) and computes partial
per-cell sums before any threshold: per layer and cell, the capped heat, the number of
distinct athletes, and the distinct athletes in the cell's neighbourhood (``threshold_ring``).
All add across processes because an athlete lives in one shard only.
A Bytewax dataflow (timely over TCP, the same cluster flags as ingest) exchanges them:

1. partials are keyed by region (the cell's H3 parent at ``REGION_RES``) and summed on the
   region's worker, where ``min_athletes`` is applied to the global count;
2. the published cells are sent to every process (a sink partition per process), because
   drawing a tile needs its neighbours' splats and equalisation needs the global
   histogram of each zoom;
3. the per-athlete Metro records, and with a ``base_map`` the per-athlete street records
   (re-indexed by athlete across processes, so sums run in the same order as in one
   process), go to process 0, which writes pages, Metro files and metadata.

Each process then draws every tile but writes only the ones it owns (a hash of z/x/y)
into its own ``out_dir``: the union of the ``out_dir``s is byte for byte the site a
one-process snapshot of the same store writes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from bytewax.run import cli_main

from heatmetro.core.cluster_join import cluster_member, formed
from heatmetro.core.config import Config
from heatmetro.core.environment import build_time
from heatmetro.core.errors import PublishError
from heatmetro.core.sports import NIGHT_LAYER, sport_layer
from heatmetro.site_builder.load import MERGE_KEYS, MERGE_SUMS, load_window
from heatmetro.site_builder.metro_streets import StreetWindow, load_streets, merge_street_windows
from heatmetro.site_builder.publish import build_lock
from heatmetro.site_builder.snapshot import (
    SnapshotResult,
    build_site,
    check_snapshot_month,
    refuse_empty_over_heat,
)
from heatmetro.site_builder.weekly import WEEKLY
from heatmetro.site_builder.window import (
    LayerHeat,
    WindowData,
    publish_partials,
    thin_to_lines,
)
from heatmetro.site_builder.window_cache import remove_cache
from heatmetro.state.aggregates import cells_to_parent
from heatmetro.state.rebuild import MonthRow
from heatmetro.state.records import LAYERS, group_sum
from heatmetro.state.shards import ShardedStore
from heatmetro.state.view import ReadView

REGION_RES = 3  # ~12,000 km2 per region: a country's heat spreads over many workers


class _RecordingView(ReadView):
    """A read view that remembers the athletes in the order ``load_window`` indexes them."""

    def __init__(self, dbs: Any) -> None:
        super().__init__(dbs)
        self.athletes: list[str] = []

    def window_rows(
        self, first: str, last: str, athletes: Collection[str] | None = None
    ) -> Iterator[MonthRow]:
        for row in super().window_rows(first, last, athletes):
            if not self.athletes or self.athletes[-1] != row[0]:
                self.athletes.append(row[0])
            yield row


def tile_owner(z: int, x: int, y: int, processes: int) -> int:
    """Which process writes tile z/x/y: a cheap mix, so neighbours spread over processes."""
    return ((x * 0x9E3779B1) ^ (y * 0x85EBCA77) ^ (z * 0xC2B2AE3D)) % processes


def local_partials(config: Config, month: str) -> tuple[WindowData, list[str], StreetWindow | None]:
    """This process's window before thresholds, its athletes in index order, and its
    street records (None without a base map), all from one read view."""
    store = ShardedStore.open(
        config.state_dir, config.shards, salt=config.salt, resolutions=config.store_resolutions
    )
    dbs = store.connect_all()
    try:
        view = _RecordingView(dbs)
        with view:
            window = load_window(
                view,
                month,
                min_athletes=config.min_athletes,  # partial: not applied, see publishable_heat
                max_per_athlete=config.max_per_athlete,
                threshold_ring=config.threshold_ring,
                sport_layers=config.sport_layers,
                night=config.night_layer,
                partial=True,
            )
            return window, view.athletes, load_streets(dbs, month, config)
    finally:
        for db in dbs:
            db.close()


def _partial_items(window: WindowData, athletes: list[str], process: int) -> list[Any]:
    items: list[Any] = []
    for layer, lh in window.heat.items():
        if not len(lh.cells):
            continue
        regions = cells_to_parent(lh.cells, REGION_RES)
        near_regions = cells_to_parent(lh.nearby_cells, REGION_RES)
        # A cell and its neighbourhood count are keyed by the cell's own region.
        for region in np.unique(np.concatenate([regions, near_regions])):
            sel, nsel = regions == region, near_regions == region
            items.append(("heat", f"{layer}/{int(region):x}", layer, lh.cells[sel], lh.heat[sel],
                          lh.athletes[sel], lh.nearby_cells[nsel], lh.nearby[nsel]))  # fmt: skip
    items.append(("metro", process, athletes, window.edges, window.hexagons, window.od))
    items.append(("count", window.athletes, window.activities))
    return items


class _Partials(DynamicSource[Any]):
    """Each worker emits its own process's partials once (one worker per process)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Once:
        return _Once(self.items)


class _Once(StatelessSourcePartition[Any]):
    def __init__(self, items: list[Any]) -> None:
        self.items: list[Any] | None = items

    def next_batch(self) -> list[Any]:
        if self.items is None:
            raise StopIteration
        out, self.items = self.items, None
        return out


class _Collect(FixedPartitionedSink[Any, None]):
    """One partition per process, listed only by that process: ``(process, item)`` pairs
    reach exactly that process, whichever worker produced them."""

    def __init__(self, process: int) -> None:
        self.process = process
        self.items: list[Any] = []
        self.lock = threading.Lock()

    def list_parts(self) -> list[str]:
        formed()  # every worker lists them, once connected (heatmetro.core.cluster_join)
        return [f"{self.process:04d}"]

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Into:
        return _Into(self)


class _Into(StatefulSinkPartition[Any, None]):
    def __init__(self, sink: _Collect) -> None:
        self.sink = sink

    def write_batch(self, values: list[Any]) -> None:
        with self.sink.lock:
            self.sink.items.extend(values)

    def snapshot(self) -> None:
        return None


def _threshold(min_athletes: int) -> Any:
    def finish(kv: tuple[str, list[Any]]) -> tuple[str, Any]:
        parts = kv[1]
        cells, heat, athletes, near_cells, near = (
            np.concatenate([p[i] for p in parts]) for i in range(3, 8)
        )
        lh = publish_partials(parts[0][2], cells, heat, athletes, near_cells, near, min_athletes)
        return kv[0], ("heat", lh.layer, lh.cells, lh.heat, lh.athletes, lh.nearby_cells)

    return finish


def exchange_flow(items: list[Any], sink: _Collect, processes: int, min_athletes: int) -> Dataflow:
    everyone = [f"{p:04d}" for p in range(processes)]
    flow = Dataflow("heatmetro_snapshot")
    inp = op.input("partials", flow, _Partials(items))
    split = op.branch("is_heat", inp, lambda x: x[0] == "heat")
    keyed = op.key_on("by_region", split.trues, lambda x: x[1])
    gathered = op.fold_final("gather", keyed, list, lambda acc, x: [*acc, x])
    published = op.map("threshold", gathered, _threshold(min_athletes))
    to_all = op.flat_map("to_everyone", published, lambda kv: [(p, kv[1]) for p in everyone])
    rest = op.flat_map(
        "route",
        split.falses,
        lambda x: [("0000", x)] if x[0] in ("metro", "streets") else [(p, x) for p in everyone],
    )
    op.output("collect", op.merge("results", to_all, rest), sink)
    return flow


def _layer_order(config: Config) -> list[str]:
    """Layers in the order ``load_window`` makes them (the pages list them in this order):
    the sport groups always, then the extra layers that have published cells."""
    extra = [sport_layer(s) for s in config.sport_layers]
    return [*LAYERS, *extra, *([NIGHT_LAYER] if config.night_layer else [])]


def _global_window(local: WindowData, collected: list[Any], config: Config) -> WindowData:
    heat_parts: dict[str, list[Any]] = {layer: [] for layer in _layer_order(config)}
    athletes = activities = 0
    metro = []
    for item in collected:
        if item[0] == "heat":
            heat_parts[item[1]].append(item)
        elif item[0] == "count":
            athletes += item[1]
            activities += item[2]
        elif item[0] == "metro":
            metro.append(item)
    heat: dict[str, LayerHeat] = {}
    for layer, parts in heat_parts.items():
        if parts:
            cells = np.concatenate([p[2] for p in parts])
            order = np.argsort(cells, kind="stable")
            hs = np.concatenate([p[3] for p in parts])[order]
            ats = np.concatenate([p[4] for p in parts])[order]
            lh = LayerHeat(layer, cells[order], hs, ats)
            if config.threshold_ring:  # needs every region's cells: after the exchange
                lh = thin_to_lines(lh, np.sort(np.concatenate([p[5] for p in parts])))
            if len(lh.cells) or layer in LAYERS:
                heat[layer] = lh
        elif layer in LAYERS:
            empty = local.heat[layer]
            heat[layer] = LayerHeat(layer, empty.cells[:0], empty.heat[:0], empty.athletes[:0])
    edges, hexes, od = _metro(local, metro)
    return WindowData(
        month=local.month, first_month=local.first_month, heat=heat, edges=edges,
        hexagons=hexes, od=od, athletes=athletes, activities=activities,
        counts={f"cells_{k}": len(v.cells) for k, v in heat.items()},
    )  # fmt: skip


def _metro(local: WindowData, metro: list[Any]) -> tuple[dict[str, np.ndarray], ...]:
    """Per-athlete Metro records of every process, indexed as one process would."""
    if not metro:  # not process 0: it writes no Metro files
        return local.edges, local.hexagons, local.od
    everyone = sorted(a for m in metro for a in m[2])
    rank = {a: i for i, a in enumerate(everyone)}
    out: tuple[dict[str, np.ndarray], ...] = ({}, {}, {})
    for pos, table in enumerate(out):
        for layer in local.edges:
            parts = []
            for m in metro:
                arr = m[3 + pos][layer].copy()
                remap = np.array([rank[a] for a in m[2]], dtype=np.int32)
                if len(arr):
                    arr["athlete"] = remap[arr["athlete"]]
                parts.append(arr)
            kind = _KINDS[pos]  # as ``load_window`` merges them: month and ride kept apart
            table[layer] = group_sum(np.concatenate(parts), MERGE_KEYS[kind], MERGE_SUMS[kind])
    return out


_KINDS = ("edges", "hexagons", "od")


def _stopped(signum: int) -> None:
    """A signal to a cluster member: one line and out (its unfinished build is cleared by
    the next run, as a killed one's is)."""
    name = signal.Signals(signum).name
    print(f"heatmetro snapshot: stopped by {name}", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def run_distributed_snapshot(
    config: Config,
    *,
    addresses: list[str],
    process_id: int,
    month: str | None = None,
    quiet: bool = False,
    allow_empty: bool = False,
    partial: bool = False,
) -> SnapshotResult:
    """This process's part of a cluster snapshot (every process runs the same command)."""
    if config.tiles_format != "png":
        msg = f"a cluster snapshot writes png tiles (one file each), not {config.tiles_format}"
        raise PublishError(msg)
    t0 = time.monotonic()
    when = build_time()
    month = check_snapshot_month(month, partial=partial)
    local, athletes, streets = local_partials(config, month)
    # Cluster members keep no window cache: drop one a one-machine snapshot left, so no
    # derived rows outlive a deletion in the store.
    remove_cache(config.state_dir)
    sink = _Collect(process_id)
    items = _partial_items(local, athletes, process_id)
    if streets is not None:  # per-athlete street records: to process 0, as Metro's
        items.append(("streets", process_id, streets.athletes, streets.records))
    flow = exchange_flow(items, sink, len(addresses), config.min_athletes)
    with cluster_member("snapshot", addresses, _stopped):
        cli_main(
            flow, workers_per_process=1, process_id=process_id, addresses=addresses,
            epoch_interval=timedelta(seconds=3600),
        )  # fmt: skip
    window = replace(_global_window(local, sink.items, config), month_in_progress=partial)
    if not allow_empty:
        refuse_empty_over_heat(window, None)  # the global window: every member alike
    n = len(addresses)
    if streets is not None:
        parts = [
            StreetWindow(streets.net, i[3], athletes=i[2]) for i in sink.items if i[0] == "streets"
        ]
        streets = merge_street_windows(streets.net, parts) if process_id == 0 else None
    if (config.out_dir / WEEKLY).is_symlink() and process_id == 0:
        # The weekly map reads every shard in one process: a member holds only its own, so
        # it can neither rebuild one nor vouch for an old one (an opt-out since).
        print(
            f"weekly map in {config.out_dir} not carried into this cluster build: "
            "run `snapshot --weekly` on one machine holding every shard",
            file=sys.stderr,
        )
    with build_lock(config.out_dir):
        n_tiles = build_site(
            window, config, when, streets=streets, quiet=quiet, pages=process_id == 0,
            owns=lambda z, x, y: tile_owner(z, x, y, n) == process_id, weekly=False,
        )  # fmt: skip
    return SnapshotResult(
        window.month, window.first_month, config.out_dir, window.athletes, window.activities,
        n_tiles, time.monotonic() - t0,
    )  # fmt: skip
