"""``heatmetro snapshot``: the store -> a complete, atomically published site for a month."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from heatmetro import __version__
from heatmetro.core.config import Config
from heatmetro.core.environment import build_time, describe_os_error
from heatmetro.core.errors import ConfigError, HeatmetroError, PublishError
from heatmetro.core.months import (
    check_month,
    last_complete_month,
    month_index,
    month_of,
    window_months,
)
from heatmetro.site_builder.forked import ForkedJob
from heatmetro.site_builder.heat_view import densest_view
from heatmetro.site_builder.pages import SiteMeta, write_pages
from heatmetro.site_builder.publish import (
    build_lock,
    discard,
    new_build_dir,
    publish,
    published_counts,
    start_pruning,
    stop_pruning,
)
from heatmetro.site_builder.tile_cache import TileCache
from heatmetro.site_builder.tiles import LayerHeat, default_workers, write_layers_tiles
from heatmetro.site_builder.weekly import (
    carry_weekly,
    publish_lock,
    published_weekly_format,
    published_weekly_window,
    refresh_weekly,
)
from heatmetro.site_builder.window import WindowData, neighbourhood_across_m
from heatmetro.site_builder.window_cache import (
    CACHE_DIR,
    CacheReport,
    WindowRead,
    read_window_cached,
)
from heatmetro.state.shards import ShardedStore
from heatmetro.state.street_network import ATTRIBUTION as OSM_ATTRIBUTION
from heatmetro.state.view import ReadView

if TYPE_CHECKING:
    from sqlite_utils import Database

    from heatmetro.site_builder.metro_streets import StreetWindow

MAP_CACHE = "map_cache.json"  # in state_dir: the rendered map of the last build (pages)


@dataclass(frozen=True)
class MetroDone:
    """What a Metro writer reports: data rows per file, and its cache's summary line."""

    rows: dict[str, int]
    cache_line: str = ""
    cache_problem: bool = False


@dataclass(frozen=True)
class SnapshotResult:
    month: str
    first_month: str
    out_dir: Path
    athletes: int
    activities: int
    tiles: int
    seconds: float

    def summary(self) -> str:
        return (
            f"published {self.first_month}..{self.month}: {self.athletes:,} athletes, "
            f"{self.activities:,} activities, {self.tiles:,} tiles in {self.seconds:.1f} s -> {self.out_dir}"
        )


class Stages:
    """Wall and CPU time of each snapshot stage, for the one-line summary on stderr.

    CPU time (this process and its finished tile workers) barely moves when other jobs
    share the machine, so it compares builds where wall time cannot.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._t = time.monotonic()
        self._c = _cpu()

    def done(self, stage: str) -> None:
        """``stage`` ended now (it began when the previous one ended)."""
        now, cpu = time.monotonic(), _cpu()
        self.wall[stage] = self.wall.get(stage, 0.0) + now - self._t
        self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu - self._c
        self._t, self._c = now, cpu

    def line(self) -> str:
        parts = (f"{k} {v:.2f}/{self.cpu[k]:.2f}" for k, v in self.wall.items())
        return "stages (wall/cpu s): " + ", ".join(parts)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_snapshot(
    config: Config,
    *,
    month: str | None = None,
    quiet: bool = False,
    cache: bool = True,
    allow_empty: bool = False,
    partial: bool = False,
) -> SnapshotResult:
    """Publish the site of the window ending with ``month``.

    With ``cache``, athletes whose rows did not change since the last snapshot are taken
    from the window cache in ``state_dir`` (``window_cache``); without, everything is
    read from the store (and the cache rewritten from it). A window without a single
    athlete does not replace a published site with heat unless ``allow_empty``. The
    month in progress takes ``partial`` (``check_snapshot_month``).
    """
    month = check_snapshot_month(month, partial=partial)
    with build_lock(config.out_dir):
        return _run_snapshot(
            config, month=month, quiet=quiet, cache=cache, allow_empty=allow_empty, partial=partial
        )


def _run_snapshot(
    config: Config, *, month: str, quiet: bool, cache: bool, allow_empty: bool, partial: bool
) -> SnapshotResult:
    t0 = time.monotonic()
    stages = Stages()
    when = build_time()
    # First the weekly map: its last 7 days rebuilt from the store as it is now (as
    # `snapshot --weekly` would), then carried into this build.
    weekly = refresh_weekly(config, when, quiet=quiet)
    if weekly is not None and not quiet:
        print(
            f"weekly map rebuilt from the store as it is now: {weekly.first}..{weekly.until}",
            file=sys.stderr,
        )
    dbs = ShardedStore.open(
        config.state_dir, config.shards, salt=config.salt, resolutions=config.store_resolutions
    ).connect_all()
    try:
        with ReadView(dbs) as view:  # read-only: ingest may keep committing meanwhile
            read = read_window_cached(
                view, window_months(month), config, config.state_dir / CACHE_DIR, reuse=cache
            )
            streets = _load_streets(dbs, month, config)
    finally:
        for db in dbs:
            db.close()
    if not allow_empty:
        refuse_empty_over_heat(read.metro_window(), config.out_dir)
    if not quiet:
        published = published_counts(config.out_dir)  # what the site shows now
        warn_overlapping_release(config, month, published)
        if not partial:
            warn_republished_window(month, read.changed_athletes, published)
    build = new_build_dir(config.out_dir, month)
    parallel = (config.tile_workers or default_workers()) > 1
    metro: ForkedJob[MetroDone] | None = None
    saving: ForkedJob[CacheReport] | None = None
    try:
        start_pruning(config.out_dir, parallel=parallel)  # what publish would remove, meanwhile
        # The Metro files need no heat: on two cores they are written meanwhile.
        metro = start_metro(
            replace(read.metro_window(), month_in_progress=partial), config, when, build,
            streets, map_cache=True, reuse=cache, parallel=parallel,
        )  # fmt: skip
        window = replace(read.assemble(), month_in_progress=partial)
        # Nothing reads the window cache before the next snapshot: saved meanwhile too.
        saving = ForkedJob(read.save, parallel=parallel, what="the window cache writer")
        forked = saving.forked
        if not forked:  # one process: saved here, before the tiles, as ever
            _report_cache(read, saving, quiet)
        stages.done("window")
        n_tiles = build_site(
            window, config, when, streets=streets, quiet=quiet, stages=stages, map_cache=True,
            reuse=cache, build=build, metro=metro,
        )  # fmt: skip
        if forked:
            _report_cache(read, saving, quiet)
    except OSError as exc:  # as in build_site: the old site keeps serving
        _give_up(build, metro, saving)
        msg = f"cannot write the site in {build.parent}: {describe_os_error(exc)}"
        raise PublishError(msg) from exc
    except BaseException:
        _give_up(build, metro, saving)
        raise
    if not quiet:
        print(stages.line(), file=sys.stderr)
    return SnapshotResult(
        window.month, window.first_month, config.out_dir, window.athletes, window.activities,
        n_tiles, time.monotonic() - t0,
    )  # fmt: skip


def _load_streets(dbs: list[Database], month: str, config: Config) -> StreetWindow | None:
    """The window's street records, or None without a base map. The street modules (and
    the Metro tables they import, ~0.05 s) are loaded only with a base map: without one,
    only the Metro writer needs them, in its own process."""
    if config.base_map is None:
        return None
    from heatmetro.site_builder.metro_streets import load_streets

    return load_streets(dbs, month, config)


def check_snapshot_month(month: str | None, *, partial: bool = False) -> str:
    """``--month`` checked, or the last complete month. Both by the clock, not by
    ``SOURCE_DATE_EPOCH``: that only stamps the build, and a cron job pinning
    it for byte-identical rebuilds would otherwise publish one month forever. A month
    after this one has no activities yet: a typo, not a build. This month is not over:
    its counts would read as a whole month's, so it takes ``partial`` (which the
    published files then say)."""
    now = datetime.now(UTC)
    if month is None:
        month = last_complete_month(now)
    else:
        check_month(month, what="--month")
    today = month_of(now)
    if month > today:
        msg = f"--month {month}: that month has not begun (this is {today})"
        raise ConfigError(msg)
    if month == today and not partial:
        msg = (
            f"--month {month}: that month is not over (today is {now:%Y-%m-%d}), so its "
            "counts would be partial; --partial publishes it marked as such"
        )
        raise ConfigError(msg)
    if month != today and partial:
        msg = f"--partial: --month {month} is over (--partial is for the month in progress)"
        raise ConfigError(msg)
    return month


def warn_overlapping_release(config: Config, month: str, before: dict[str, object] | None) -> None:
    """Exact Metro counts of two overlapping windows differ by a month's part less the
    part of the month that left: one or two people's trips can come out (README rule 9).
    Said where the choice is made, each time it applies."""
    last = before.get("month") if before else None
    if config.metro_epsilon is not None or not isinstance(last, str) or last == month:
        return
    try:
        apart = abs(month_index(month) - month_index(last))
    except ValueError:
        return
    if apart < 12:
        print(
            f"heatmetro snapshot: warning: the Metro files of {last} and {month} cover "
            "overlapping windows, and with exact counts their difference can single out "
            "one or two people's trips (README, rule 9): set metro_epsilon for monthly "
            "releases",
            file=sys.stderr,
        )


def warn_republished_window(
    month: str, changed: int | None, before: dict[str, object] | None
) -> None:
    """Two builds of one window that differ by a few people's changes show those
    people's share to anyone who keeps both and compares them (docs/operations.md,
    section 4): said when a snapshot republishes the window it published last with
    athletes' records changed since (an opt-out or a deletion applied at once, a cron
    job rebuilding the same month every night)."""
    if not changed or not before or before.get("month") != month:
        return
    if before.get("month_in_progress"):  # the month's own final build, as scheduled
        return
    people = "one athlete's" if changed == 1 else f"{changed:,} athletes'"
    print(
        f"heatmetro snapshot: warning: the published site already shows the window ending "
        f"{month}, and {people} records changed since the last snapshot: where that "
        "changes what is published, whoever keeps both builds can compare them and see "
        "those people's share. Apply privacy requests and late uploads with the next "
        "month's snapshot (docs/operations.md, section 4)",
        file=sys.stderr,
    )


def refuse_empty_over_heat(window: WindowData, out_dir: Path | None) -> None:
    """PublishError when ``window`` has no athlete but the published site in ``out_dir``
    has some (None: whatever is published, as a cluster member holds only part of the
    site and all members must decide alike). A mistyped ``--month`` in a cron job would
    otherwise swap the public map for an empty one; ``--allow-empty`` is the way when
    everyone has really gone."""
    if window.athletes:
        return
    # A cluster member cannot tell what the others publish: it refuses either way.
    was = "whatever the cluster has published (its members cannot tell) with an empty site"
    if out_dir is not None:
        published = published_counts(out_dir)
        if published is None or not published.get("athletes"):
            return
        athletes, month = published["athletes"], published.get("month", "?")
        was = f"the site in {out_dir} ({athletes:,} athletes, window ending {month}) with an empty one"
    msg = (
        f"--month {window.month}: no athlete has an activity in {window.first_month}.."
        f"{window.month}; publishing would replace {was}. Check --month, "
        "or pass --allow-empty"
    )
    raise PublishError(msg)


def _report_cache(read: WindowRead, saving: ForkedJob[CacheReport], quiet: bool) -> None:
    """Print what the window cache did; a writer that failed is a cache not saved, never
    a failed snapshot."""
    try:
        report = saving.result()
    except HeatmetroError as exc:
        report = read.outcome(read.unsaved(str(exc).splitlines()[0]))
    if not quiet or report.problem:
        print(report.line(), file=sys.stderr)


def _give_up(
    build: Path, metro: ForkedJob[MetroDone] | None, saving: ForkedJob[CacheReport] | None
) -> None:
    """A failed build: its writers let finish (a kill mid-write would leave a cache's
    temporary file behind; what they save is true of the store; on Ctrl-C they stop
    themselves), the build folder removed; the published site stays."""
    if metro is not None:
        metro.cancel(kill=False)
    if saving is not None:
        saving.cancel(kill=False)
    stop_pruning(build.parent)
    discard(build)


def build_site(
    window: WindowData,
    config: Config,
    when: datetime,
    *,
    streets: StreetWindow | None = None,
    quiet: bool = False,
    owns: Callable[[int, int, int], bool] | None = None,
    pages: bool = True,
    stages: Stages | None = None,
    map_cache: bool = False,
    reuse: bool = True,
    build: Path | None = None,
    metro: ForkedJob[MetroDone] | None = None,
    weekly: bool = True,
) -> int:
    """Write and atomically publish the site of ``window``; returns the tile count.

    A member of a distributed snapshot writes only the tiles it ``owns``; only the one
    with ``pages`` writes the pages, Metro files and metadata (docs/scaling.md).
    With ``map_cache``, the rendered map and the Metro edge sums are kept in ``state_dir``
    for the next build (and taken from there if ``reuse``). ``build`` and ``metro``: the
    build folder and the Metro writer (``start_metro``) if the caller started them.
    Without ``weekly``, a published weekly map is neither offered nor carried into it.
    """
    month = window.month
    stages = stages or Stages()
    build = build or new_build_dir(config.out_dir, month)
    try:
        n_tiles, bounds = _write_tiles(window, config, build, quiet=quiet, owns=owns)
        stages.done("tiles")
        if not pages:
            publish(build, config.out_dir)
            return n_tiles
        metro = metro or start_metro(
            window, config, when, build, streets, map_cache=map_cache, reuse=reuse, parallel=False
        )
        done = metro.result()
        metro_rows = done.rows
        if done.cache_line and (not quiet or done.cache_problem):
            print(done.cache_line, file=sys.stderr)
        stages.done("metro")
        layers = tuple(layer for layer, lh in window.heat.items() if len(lh.cells))
        weekly_format = published_weekly_format(config.out_dir) if weekly else None
        weekly_window = published_weekly_window(config.out_dir) if weekly_format else None
        counts = {
            "athletes": window.athletes,
            "activities": window.activities,
            "cells": len(window.heat["all"].cells),
            "tiles": n_tiles,
            "edges": metro_rows.get("edges.csv", 0),
        }
        if "streets.csv" in metro_rows:  # with a street base map
            counts["streets"] = metro_rows["streets.csv"]
        write_pages(
            build,
            SiteMeta(
                month=window.month,
                first_month=window.first_month,
                min_athletes=config.min_athletes,
                max_per_athlete=config.max_per_athlete,
                round_to=config.round_to,
                min_zoom=config.min_zoom,
                public_max_zoom=config.public_max_zoom,
                max_zoom=config.max_zoom,
                hide_start_end_m=config.default_hide_start_end_m,
                hide_jitter_m=config.hide_jitter_m,
                bounds=bounds,
                layers=layers,
                counts=counts,
                version=__version__,
                build_date=when.strftime("%Y-%m-%d"),
                basemap_url=config.basemap_url,
                basemap_attribution=config.basemap_attribution,
                has_metro=True,
                osm_attribution=OSM_ATTRIBUTION if streets is not None else "",
                weekly_min_athletes=config.weekly_k,
                weekly_public_max_zoom=config.weekly_max_zoom,
                has_weekly=weekly_format is not None,
                weekly_format=weekly_format or "png",
                weekly_days=(weekly_window.first, weekly_window.last) if weekly_window else None,
                weekly_bounds=weekly_window.bounds if weekly_window else None,
                view=densest_view(window.heat["all"].cells, window.heat["all"].heat),
                tiles_format=config.tiles_format,
                metro_epsilon=config.metro_epsilon,
                metro_delta=config.metro_delta,
                threshold_across_m=(
                    neighbourhood_across_m(config.heat_resolution, config.threshold_ring)
                    if config.threshold_ring
                    else 0
                ),
                month_in_progress=window.month_in_progress,
            ),
            template_dir=config.template_dir,
            map_cache=config.state_dir / MAP_CACHE if map_cache else None,
            reuse_map=reuse,
        )
        _write_metadata(build, window, config, counts, metro_rows, when, bounds)
        _write_members_notice(build, config)
        stages.done("pages")
        with publish_lock(config.out_dir):
            if weekly:
                carry_weekly(config.out_dir, build)  # the weekly map stays published
            publish(build, config.out_dir)
        stages.done("publish")
    except OSError as exc:  # a full disk mid-build: the old site keeps serving
        _give_up(build, metro, None)
        msg = f"cannot write the site in {build.parent}: {describe_os_error(exc)}"
        raise PublishError(msg) from exc
    except BaseException:  # Ctrl-C or a bug: still never a half-written site
        _give_up(build, metro, None)
        raise
    return n_tiles


def start_metro(
    window: WindowData,
    config: Config,
    when: datetime,
    build: Path,
    streets: StreetWindow | None,
    *,
    map_cache: bool,
    reuse: bool,
    parallel: bool,
) -> ForkedJob[MetroDone]:
    """The Metro files of ``window`` into ``build/metro``: started in a forked process
    when ``parallel`` (``forked``), else written when asked for the result."""
    metro_dir = build / "metro"
    metro_dir.mkdir()

    def work() -> MetroDone:
        # Imported in the writer's own process: loading GDAL's pyogrio and the Metro
        # modules (~0.08 s, the cache's ~0.04 s) stays off the heat's path.
        from heatmetro.site_builder.metro import MetroSettings, write_metro
        from heatmetro.site_builder.metro_cache import CACHE_FILE as METRO_CACHE
        from heatmetro.site_builder.metro_cache import MetroCache
        from heatmetro.site_builder.metro_reuse import (
            OUTPUT_CACHE,
            OutputCache,
            output_cache_path,
        )

        settings = MetroSettings(
            min_athletes=config.min_athletes,
            round_to=config.round_to,
            month=window.month,
            first_month=window.first_month,
            version=__version__,
            build_date=when.strftime("%Y-%m-%d"),
            epsilon=config.metro_epsilon,
            delta=config.metro_delta,
            salt=config.salt,
            base_map=str(config.base_map) if config.base_map else None,
            month_in_progress=window.month_in_progress,
        )
        cache = MetroCache(config.state_dir / METRO_CACHE, reuse) if map_cache else None
        output = None
        if map_cache:  # unchanged files are taken from the published build (as tiles are)
            published = config.out_dir.resolve() / "metro" if config.out_dir.is_symlink() else None
            final = build.resolve().with_name(build.name.removesuffix(".partial")) / "metro"
            (config.state_dir / OUTPUT_CACHE).unlink(missing_ok=True)  # one for all sites, before
            path = output_cache_path(config.state_dir, final)
            output = OutputCache(path, published, final, reuse=reuse)
        rows = write_metro(window, settings, metro_dir, streets, cache, output, parallel=parallel)
        if cache is None:
            return MetroDone(rows)
        lines = [cache.line(), cache.gpkg_line()]
        return MetroDone(rows, "\n".join(line for line in lines if line), cache.problem)

    return ForkedJob(work, parallel=parallel, what="the Metro writer")


def _write_tiles(
    window: WindowData,
    config: Config,
    build: Path,
    *,
    quiet: bool,
    owns: Callable[[int, int, int], bool] | None = None,
) -> tuple[int, tuple[float, float, float, float] | None]:
    """Every layer's tile pyramid; (tiles written, bounds of the ``all`` heat or None)."""
    total = 0
    bounds = None
    # Unchanged tiles are linked from the published build (see tile_cache).
    published = config.out_dir.resolve() if config.out_dir.is_symlink() else None
    cache = (
        TileCache(
            config.state_dir / "tile_cache",
            published,
            build.with_name(build.name.removesuffix(".partial")),
        )
        if owns is None  # a cluster member's build holds only its own tiles: nothing to reuse
        else None
    )
    # All layers through one pool of workers: a fork per layer cost more than it drew.
    every = write_layers_tiles(
        [LayerHeat(layer, lh.cells, lh.heat) for layer, lh in window.heat.items()],
        out_root=build,
        min_zoom=config.min_zoom,
        public_max_zoom=config.public_max_zoom,
        max_zoom=config.max_zoom,
        heat_resolution=config.heat_resolution,
        tiles_format=config.tiles_format,
        cache=cache,
        workers=config.tile_workers or default_workers(),
        owns=owns,
    )
    for layer, stats in every.items():
        n = sum(stats.tiles_per_zoom.values())
        total += n
        if layer == "all" and n:
            bounds = stats.bounds
        if not quiet and n:
            rate = n / max(stats.seconds, 1e-9)
            twin = f", drawn with {stats.twin_of}" if stats.twin_of else ""
            print(
                f"tiles {layer:<6} {n:>7,} in {stats.seconds:.3f} s ({rate:,.0f}/s, "
                f"{stats.reused:,} unchanged{twin})",
                file=sys.stderr,
            )
    return total, bounds


def _write_members_notice(build: Path, config: Config) -> None:
    """``members/README.txt``: the folder a host's `aws s3 sync out/` would publish with
    the rest unless told (a visitor's review: only docs/operations.md said so)."""
    if config.max_zoom <= config.public_max_zoom:  # no street-level tiles
        return
    members = build / "members"
    members.mkdir(exist_ok=True)
    (members / "README.txt").write_text(
        f"Street-level heat tiles (zooms {config.public_max_zoom + 1} to {config.max_zoom}) "
        "for signed-in members only.\n"
        "Serve this folder behind your platform's login; never copy it to a public bucket "
        "or CDN\n(docs/operations.md, section 3: e.g. rsync --exclude members/).\n"
        "To publish no street-level tiles at all, set max_zoom = public_max_zoom.\n",
        encoding="utf-8",
    )


def _write_metadata(build, window, config, counts, metro_rows, when, bounds) -> None:  # type: ignore[no-untyped-def]
    meta = {
        "software": {"name": "heatmetro", "version": __version__},
        "month": window.month,
        "window": {
            "first_month": window.first_month,
            "last_month": window.month,
            "last_month_in_progress": window.month_in_progress,
        },
        "built_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "thresholds": {
            "min_athletes": config.min_athletes,
            "threshold_ring": config.threshold_ring,
            "max_per_athlete": config.max_per_athlete,
            "round_to": config.round_to,
            "public_max_zoom": config.public_max_zoom,
            "max_zoom": config.max_zoom,
            "min_zoom": config.min_zoom,
        },
        "resolutions": {
            "heat": config.heat_resolution,
            "metro": config.metro_resolution,
            "od": config.od_resolution,
        },
        "counts": counts,
        "cells_per_layer": {k: len(v.cells) for k, v in window.heat.items()},
        "metro_rows": metro_rows,
        "bounds": list(bounds) if bounds else None,
    }
    (build / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
