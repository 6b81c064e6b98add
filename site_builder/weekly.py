"""``heatmetro snapshot --weekly``: the last 7 days, published under ``out_dir/weekly/``.

A short window leaks more than a year: one person's regular route stands out. So the
weekly map is stricter than the monthly one: a cell needs ``weekly_min_athletes``
distinct athletes (default 5) and tiles stop at ``weekly_public_max_zoom`` (default 11),
with no members tree. Activities are filed by their local start date and read from the
stored per-activity paths (the month aggregates are too coarse for 7 days), through an
index on the local start: the read scales with the week, not with the store.

Publishing, without disturbing the monthly site's atomic swap: each weekly build is a
folder in ``.{out}.weekly.builds/`` beside ``out_dir``; ``out_dir/weekly`` is a relative
symbolic link to the current one, replaced with one atomic rename. The monthly snapshot
carries the link into each new monthly build (``carry_weekly``), and both publish
steps hold one lock file, so neither loses the other's work.

Each monthly snapshot also rebuilds the published weekly map for the last 7 days from
the store as it is then (``refresh_weekly``): an opt-out, a deletion or a new privacy
zone leaves the weekly map by the next snapshot, as it leaves the monthly one, even when
the weekly job has stopped.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from heatmetro import __version__
from heatmetro.core.config import Config
from heatmetro.core.errors import PublishError
from heatmetro.site_builder.activity_layers import ActivityPath, layer_heat
from heatmetro.site_builder.load import contributing_paths
from heatmetro.site_builder.map_page import PageText, page_meta, write_layer_tiles, write_map_page
from heatmetro.site_builder.publish import (
    builds_dir,
    check_replaceable,
    new_build_in,
    out_dir_lock,
    prune_builds,
)
from heatmetro.state.shards import ShardedStore
from heatmetro.state.view import ReadView

WEEKLY = "weekly"
DAYS = 7


@dataclass(frozen=True)
class WeeklyResult:
    first: str
    until: str
    out_dir: Path
    athletes: int
    activities: int
    tiles: int
    seconds: float

    def summary(self) -> str:
        return (
            f"published weekly {self.first}..{self.until}: {self.athletes:,} athletes, "
            f"{self.activities:,} activities, {self.tiles:,} tiles in {self.seconds:.1f} s "
            f"-> {self.out_dir}"
        )


def parse_until(text: str | None, now: datetime) -> date:
    """``--until`` (default: yesterday, the last complete day)."""
    if text is None:
        return now.date() - timedelta(days=1)
    try:
        if len(text) != 10:
            raise ValueError(text)
        until = date.fromisoformat(text)
    except ValueError:
        msg = f"--until {text!r}: expected YYYY-MM-DD, e.g. 2021-06-20"
        raise PublishError(msg) from None
    if until >= now.date():  # a typo in a cron job must not blank or clip the weekly map
        msg = (
            f"--until {text}: that day is not over (today is {now.date()} UTC); the weekly "
            "map ends on a complete day (by default yesterday)"
        )
        raise PublishError(msg)
    return until


def run_weekly(
    config: Config, *, until: str | None, when: datetime, quiet: bool = False
) -> WeeklyResult:
    t0 = time.monotonic()
    # The clock's yesterday, not SOURCE_DATE_EPOCH's: that only stamps the build, and a
    # cron job pinning it for byte-identical rebuilds would otherwise publish one week
    # forever.
    last = parse_until(until, datetime.now(UTC))
    first = last - timedelta(days=DAYS - 1)
    check_replaceable(config.out_dir)  # a folder of someone's with an index.html too
    if not (config.out_dir / "index.html").exists():
        msg = (
            f"no published site in {config.out_dir}: run `heatmetro snapshot` first "
            "(the weekly map is published inside it)"
        )
        raise PublishError(msg)
    dbs = ShardedStore.open(
        config.state_dir, config.shards, salt=config.salt, resolutions=config.store_resolutions
    ).connect_all()
    try:
        with ReadView(dbs) as view:  # read-only: ingest may keep committing meanwhile
            acts = read_week(view, first, last)
    finally:
        for db in dbs:
            db.close()
    heat = layer_heat(
        acts,
        group_layers=True,
        sport_layers=config.sport_layers,
        night=config.night_layer,
        min_athletes=config.weekly_k,
        max_per_athlete=config.max_per_athlete,
        threshold_ring=config.threshold_ring,
    )
    athletes = len({a.athlete for a in acts})
    with publish_lock(config.out_dir):
        build = _new_build(config.out_dir, last.isoformat())
        n_tiles, bounds = write_layer_tiles(
            heat, build, config, max_zoom=config.weekly_max_zoom, tiles_format=config.tiles_format
        )
        counts = {"athletes": athletes, "activities": len(acts), "tiles": n_tiles}
        meta = page_meta(
            config, first=first.isoformat(), last=last.isoformat(),
            max_zoom=config.weekly_max_zoom, min_athletes=config.weekly_k, layers=tuple(heat),
            bounds=bounds, heat=heat, counts=counts, version=__version__,
            build_date=when.strftime("%Y-%m-%d"), tiles_format=config.tiles_format,
        )  # fmt: skip
        page = PageText(
            title=f"Weekly heatmap {first} to {last}",
            heading=f"7 days to {last}",
            window=f"Public activities started {first} to {last} (local dates)",
            # Nothing recorded and everything below the threshold read differently.
            empty=(
                f"No heat is published for this week: {len(acts):,} public activities "
                f"by {athletes:,} people, and no spot reached {config.weekly_k} people."
                if acts
                else "No public activity was recorded this week."
            ),
            legend="Activities per cell, log scale",
            links=(
                ("../index.html", "Global Heatmap"),
                ("../about.html#weekly", "Why less detail"),
            ),
            notes=(
                f"Stricter than the monthly map: a spot needs {config.weekly_k} different "
                f"people, and the map stops at zoom {config.weekly_max_zoom} (a screen pixel "
                f"is about {meta.ground_per_pixel(config.weekly_max_zoom)} of ground).",
            ),
        )
        write_map_page(build, meta, page, template_dir=config.template_dir)
        (build / "metadata.json").write_text(
            json.dumps(
                {
                    "software": {"name": "heatmetro", "version": __version__},
                    "window": {"first_day": first.isoformat(), "last_day": last.isoformat()},
                    "built_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "thresholds": {
                        "min_athletes": config.weekly_k,
                        "threshold_ring": config.threshold_ring,
                        "max_per_athlete": config.max_per_athlete,
                        "max_zoom": config.weekly_max_zoom,
                        "min_zoom": config.min_zoom,
                    },
                    "counts": counts,
                    "cells_per_layer": {k: len(v.cells) for k, v in heat.items()},
                    # The monthly page asks for weekly tiles only here (no 404s around).
                    "bounds": list(bounds) if bounds is not None else None,
                },
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        # Read by the monthly page (built once a month) to name and place its weekly layer.
        (build / "weekly.js").write_text(
            "window.heatmetroWeekly = "
            + json.dumps(
                {
                    "first": first.isoformat(),
                    "last": last.isoformat(),
                    "bounds": [[bounds[0], bounds[1]], [bounds[2], bounds[3]]] if bounds else None,
                    "format": config.tiles_format,
                },
                sort_keys=True,
            )
            + ";\n"
        )
        _publish(build, config.out_dir)
    return WeeklyResult(
        first.isoformat(), last.isoformat(), config.out_dir / WEEKLY, athletes, len(acts),
        n_tiles, time.monotonic() - t0,
    )  # fmt: skip


def read_week(view: ReadView, first: date, last: date) -> list[ActivityPath]:
    """The contributing activities that started (local date) ``first`` .. ``last``.

    A range of the store's local-start index (``activities_by_local_start``): the read
    costs the week's rows, however many years the store holds.
    """
    # The index's own expression (state.store.LOCAL_START): SQLite uses an expression
    # index only where the query spells the same expression.
    start = "a.start_s + a.utc_offset_s"
    return list(
        contributing_paths(
            view,
            f"{start} >= ? AND {start} < ?",
            (_epoch(first), _epoch(last + timedelta(days=1))),
            sort_in_sql=False,
        )
    )


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def weekly_builds_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.weekly.builds"


def publish_lock(out_dir: Path) -> AbstractContextManager[None]:
    """One publisher at a time for ``out_dir`` (monthly and weekly share the tree)."""
    return out_dir_lock(out_dir, "publish")


def published_weekly_format(out_dir: Path) -> str | None:
    """The published weekly map's tile format (``png`` or ``pmtiles``), None without one.

    Read from the files, not the config: the monthly page must point at what the last
    weekly build wrote, even if ``tiles_format`` changed since.
    """
    weekly = out_dir / WEEKLY
    if not (weekly / "index.html").exists():
        return None
    return "pmtiles" if any((weekly / "tiles").glob("*.pmtiles")) else "png"


def carry_weekly(out_dir: Path, build: Path) -> bool:
    """Give a new monthly ``build`` the published weekly map's link; True if there is one.

    Call it holding ``publish_lock``. The link stays relative, so the site still works
    when the whole folder is copied elsewhere (``cp -rL``/``rsync -L`` to a CDN).
    """
    current = out_dir / WEEKLY
    if not current.is_symlink() or not current.exists():
        return False
    target = current.resolve()
    (build / WEEKLY).symlink_to(os.path.relpath(target, build), target_is_directory=True)
    return True


@dataclass(frozen=True)
class WeeklyWindow:
    """What the monthly page says of the published weekly map."""

    first: str
    last: str
    bounds: tuple[float, float, float, float] | None


def published_weekly_window(out_dir: Path) -> WeeklyWindow | None:
    """The published weekly map's days and heat bounds; None without one (or unreadable:
    the monthly page then offers the layer without dates, as before)."""
    try:
        meta = json.loads((out_dir / WEEKLY / "metadata.json").read_text(encoding="utf-8"))
        window = meta["window"]
        bounds = meta.get("bounds")
        return WeeklyWindow(
            str(window["first_day"]),
            str(window["last_day"]),
            tuple(float(v) for v in bounds) if bounds else None,  # type: ignore[arg-type]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def refresh_weekly(config: Config, when: datetime, quiet: bool = False) -> WeeklyResult | None:
    """Rebuild the published weekly map for the last 7 days (as ``snapshot --weekly``
    does) from the store as it is now; None without one. The privacy rules' "by the next
    snapshot" (DESIGN rules 5 and 6) holds for the weekly map too: an athlete who opted
    out, an activity deleted or made private since the weekly build must not stay on it
    until someone runs the weekly job again. The last 7 days, not the published map's
    own: the same days again would differ from it by nothing but those removals, which
    would show whose they were (docs/operations.md, "Do not publish a build for one
    request"). Nothing of the published map is read: a damaged one is simply replaced."""
    if not (config.out_dir / WEEKLY).is_symlink():
        return None
    return run_weekly(config, until=None, when=when, quiet=quiet)


def _new_build(out_dir: Path, label: str) -> Path:
    return new_build_in(weekly_builds_dir(out_dir), label)


def _publish(build: Path, out_dir: Path) -> None:
    """Swap ``out_dir/weekly`` to ``build`` with one rename; prune old weekly builds."""
    final = build.with_name(build.name.removesuffix(".partial"))
    build.rename(final)
    site = out_dir.resolve()
    link = site / f".{WEEKLY}.link-{os.getpid()}"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(final, site), target_is_directory=True)
    served = (site / WEEKLY).resolve() if (site / WEEKLY).is_symlink() else None
    link.replace(site / WEEKLY)
    # Kept: this build, the one served until now (rollback), and every one a monthly
    # build still links to (the monthly build kept for rollback has its own link).
    monthly = builds_dir(out_dir)
    linked = [b / WEEKLY for b in monthly.iterdir()] if monthly.is_dir() else []
    prune_builds(final.parent, {final, served, *(w.resolve() for w in linked if w.is_symlink())})
