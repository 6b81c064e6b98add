"""Benchmark ``snapshot --weekly``: does a week cost the week, whatever the store holds?

Steps (everything timed in this one process, so compare the ratios):

1. Convert the six ValleyBike months from ``../shared/data/valleybike`` (or the two bundled
   months with ``--bundled``) to stream events. Ingest them all into one store (the full
   store) and, into a second, only the last week's (the week-only store): the real CLI,
   ``-w 2``, one shard each.
   A third store, the old store, is the full one plus ``--years`` earlier years of the
   same activities (copied in SQL, shifted by 52-week steps): a store with history.
2. ``run_weekly`` for that week on each store, ``--rounds`` times (after a warm-up run):
   the ratios full / week-only and old / week-only are 1.0 when the weekly map costs its
   week and not the store.
3. The read alone (``read_week``) on the old store, through its local-start index, and
   on a copy without the index (the read as it was before it: a scan of every activity).
4. The old store's weekly run split in stages: read, thresholds (``layer_heat``), and the
   rest (tiles, page, publish, opening the SQLite files).

Prints seconds (best of the rounds, and medians), ratios and the process's peak RSS. Usage::

    .venv/bin/python bench/weekly.py [--bundled] [--rounds N] [--years N]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.valleybike_project import SALT, ingest, timed, write_events  # noqa: E402
from heatmetro.core.config import Config, load_config  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs  # noqa: E402
from heatmetro.site_builder.activity_layers import layer_heat  # noqa: E402
from heatmetro.site_builder.weekly import DAYS, WeeklyResult, read_week, run_weekly  # noqa: E402
from heatmetro.site_builder.window import _DISK_CACHE  # noqa: E402
from heatmetro.state.store import connect, immediate  # noqa: E402
from heatmetro.state.view import ReadView  # noqa: E402

WHEN = datetime(2024, 1, 1, tzinfo=UTC)  # a fixed build date: the same bytes every round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundled", action="store_true", help="the two bundled months only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--years", type=int, default=10, help="earlier years in the old store")
    args = parser.parse_args()
    csvs = bundled_csvs() if args.bundled else (shared_csvs() or bundled_csvs())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        events = root / "events.jsonl"
        write_events(events, csvs)
        last = _last_day(events)
        first = last - timedelta(days=DAYS - 1)
        week = root / "week.jsonl"
        n_all, n_week = _only_week(events, week, first, last)
        stores = {"week-only": _store(root / "week", week), "full": _store(root / "full", events)}
        shutil.copytree(root / "full", root / "old")  # nothing has it open: a clean copy
        stores["old"] = load_config(root / "old" / "config.toml", salt=SALT)
        n_old = _add_years(stores["old"], args.years)
        print(f"{len(csvs)} months of rides: {n_all:,} activity events, of which the week "
              f"{first}..{last} holds {n_week:,} ({n_week / n_all:.0%}); the old store: the "
              f"same plus {args.years} earlier years ({n_old:,} activities)")  # fmt: skip

        os.sync()  # the stores' writes on disk now, not under the timed runs
        _weekly(stores["week-only"], last)  # warm-up: imports, the page's templates
        times: dict[str, list[float]] = {name: [] for name in stores}
        for r in range(args.rounds):
            got = {name: _weekly(config, last) for name, config in stores.items()}
            for name, (_, seconds) in got.items():
                times[name].append(seconds)
            w0 = got["week-only"][0]
            assert all(
                (w.activities, w.tiles) == (w0.activities, w0.tiles) for w, _ in got.values()
            )
            print(f"round {r + 1}: " + ", ".join(f"{n} {s:.2f} s" for n, (_, s) in got.items())
                  + f" ({w0.activities} activities, {w0.tiles} tiles)")  # fmt: skip
        # Best of the rounds: other jobs on the machine only ever add time.
        best = {name: min(t) for name, t in times.items()}
        med = {name: statistics.median(t) for name, t in times.items()}
        for name in ("full", "old"):
            print(f"weekly, {name} store / week-only store: best {best[name]:.2f} s / "
                  f"{best['week-only']:.2f} s = {best[name] / best['week-only']:.2f}x "
                  f"(medians {med[name]:.2f} / {med['week-only']:.2f} s)")  # fmt: skip

        # Two compacted copies of the old store, one without the index (a store before
        # migration m007), so that both reads see the same page layout.
        db, scan = root / "index.db", root / "no-index.db"
        c = connect(stores["old"].store_dir / "0000.db")
        for path in (db, scan):
            c.execute("VACUUM INTO ?", [str(path)])
        c.close()
        c = connect(scan)
        c.execute("DROP INDEX activities_by_local_start")
        c.close()
        reads = {}
        for name, path in (("index", db), ("scan", scan)):
            reads[name] = min(_read(path, first, last)[1] for _ in range(args.rounds))
        print(f"read the week from the old store (best): through the index "
              f"{reads['index'] * 1e3:.1f} ms, "
              f"without it (a scan of every activity, as before) {reads['scan'] * 1e3:.1f} ms = "
              f"{reads['scan'] / reads['index']:.2f}x")  # fmt: skip

        old = stores["old"]
        acts = _read(db, first, last)[0]

        def thresholds() -> float:
            _DISK_CACHE.clear()
            return timed(
                lambda: layer_heat(
                    acts,
                    group_layers=True,
                    sport_layers=old.sport_layers,
                    night=old.night_layer,
                    min_athletes=old.weekly_k,
                    max_per_athlete=old.max_per_athlete,
                    threshold_ring=old.threshold_ring,
                )  # fmt: skip
            )[1]

        t_heat = min(thresholds() for _ in range(args.rounds))
        t_read = reads["index"]
        print(f"stages of the old store's run (best): read {t_read:.2f} s, thresholds "
              f"{t_heat:.2f} s, tiles + page + publish {best['old'] - t_read - t_heat:.2f} s")  # fmt: skip
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss:.0f} MB")


def _add_years(config: Config, years: int) -> int:
    """Copies of the store's activities in each of ``years`` earlier years (shifted by
    52-week steps, so weekdays keep), written in SQL: a store with that much history
    without ingesting it. Only the weekly map's inputs are copied (the paths, not the
    month aggregates), which is all this bench reads. Returns the activities stored."""
    c = connect(config.store_dir / "0000.db")
    cols = [row[1] for row in c.execute("PRAGMA table_info(activities)")]
    (top,) = c.execute("SELECT max(rowid) FROM activities").fetchone()
    with immediate(c):
        for k in range(1, years + 1):
            shift = k * 364 * 86_400
            new = {
                "activity_id": f"activity_id || '-{k}y'",
                "start_s": f"start_s - {shift}",
                "month": f"strftime('%Y-%m', start_s - {shift} + utc_offset_s, 'unixepoch')",
            }
            c.execute(
                f"INSERT INTO activities ({', '.join(cols)}) "
                f"SELECT {', '.join(new.get(col, col) for col in cols)} FROM activities "
                "WHERE rowid <= ?",
                [top],
            )
    (n,) = c.execute("SELECT count(*) FROM activities").fetchone()
    c.close()
    return int(n)


def _weekly(config: Config, last: date) -> tuple[WeeklyResult, float]:
    """``run_weekly`` as a fresh ``heatmetro snapshot --weekly`` runs it: no H3 disks
    cached by an earlier run in this process."""
    _DISK_CACHE.clear()
    return timed(lambda: run_weekly(config, until=str(last), when=WHEN, quiet=True))


def _last_day(events: Path) -> date:
    """The last local start date of an activity in ``events``."""
    last = date.min
    with events.open("rb") as fh:
        for line in fh:
            e = orjson.loads(line)
            if e["kind"] == "activity":
                last = max(last, _local_day(e))
    return last


def _local_day(event: dict) -> date:  # type: ignore[type-arg]
    start = datetime.fromisoformat(event["start_date"])
    return (start + timedelta(seconds=event["utc_offset_s"])).date()


def _only_week(events: Path, out: Path, first: date, last: date) -> tuple[int, int]:
    """``events`` without the activities outside ``first..last`` (everything else kept);
    returns (activities, activities kept)."""
    n = kept = 0
    with events.open("rb") as fh, out.open("wb") as dst:
        for line in fh:
            e = orjson.loads(line)
            if e["kind"] == "activity":
                n += 1
                if not first <= _local_day(e) <= last:
                    continue
                kept += 1
            dst.write(line)
    return n, kept


def _store(folder: Path, events: Path) -> Config:
    """``events`` ingested by the CLI into a one-shard store in ``folder``."""
    folder.mkdir()
    (folder / "config.toml").write_text('state_dir = "state"\nout_dir = "site"\nshards = 1\n')
    ingest(folder / "config.toml", events)
    config = load_config(folder / "config.toml", salt=SALT)
    # The weekly map is published inside a site; what the site holds does not matter here.
    config.out_dir.mkdir()
    (config.out_dir / "index.html").write_text("monthly site\n")
    return config


def _read(path: Path, first: date, last: date) -> tuple[list, float]:  # type: ignore[type-arg]
    db = connect(path)
    with ReadView([db]) as view:
        acts, seconds = timed(lambda: read_week(view, first, last))
    db.close()
    return acts, seconds


if __name__ == "__main__":
    main()
