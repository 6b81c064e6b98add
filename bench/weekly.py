"""Benchmark ``snapshot --weekly``: does a week cost the week, whatever the store holds?

Steps (everything timed in this one process, so compare the ratios):

1. Convert the six ValleyBike months from ``../shared/data/valleybike`` (or the two bundled
   months with ``--bundled``) to stream events. Ingest them all into one store (the full
   store) and, into a second, only the last week's (the week-only store): the real CLI,
   ``-w 2``, one shard each.
2. ``run_weekly`` for that week on the week-only store (the baseline) and on the full
   store, ``--rounds`` times: the ratio full / week-only is 1.0 when the weekly map costs
   its week and not the store.
3. The read alone (``read_week``) on the full store, through its local-start index, and on
   a copy without the index (the read as it was before it: a scan of every activity).
4. The full store's weekly run split in stages: read, thresholds (``layer_heat``), and the
   rest (tiles, page, publish, start of the SQLite connections).

Prints seconds, ratios and the process's peak RSS. Usage::

    .venv/bin/python bench/weekly.py [--bundled] [--rounds N]
"""

from __future__ import annotations

import argparse
import resource
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
from heatmetro.state.store import connect  # noqa: E402
from heatmetro.state.view import ReadView  # noqa: E402

WHEN = datetime(2024, 1, 1, tzinfo=UTC)  # a fixed build date: the same bytes every round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundled", action="store_true", help="the two bundled months only")
    parser.add_argument("--rounds", type=int, default=3)
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
        full, only = _store(root / "full", events), _store(root / "week", week)
        print(f"{len(csvs)} months of rides: {n_all:,} activity events; the week "
              f"{first}..{last}: {n_week:,} ({n_week / n_all:.0%})")  # fmt: skip

        base, cost = [], []
        for r in range(args.rounds):
            w0, s0 = _weekly(only, last)
            w1, s1 = _weekly(full, last)
            assert (w0.activities, w0.tiles) == (w1.activities, w1.tiles), (w0, w1)
            base.append(s0)
            cost.append(s1)
            print(f"round {r + 1}: weekly on the week-only store {s0:.2f} s, on the full "
                  f"store {s1:.2f} s = {s1 / s0:.2f}x ({w1.activities} activities, "
                  f"{w1.tiles} tiles)")  # fmt: skip
        print(f"weekly, full store / week-only store: {statistics.median(cost):.2f} s / "
              f"{statistics.median(base):.2f} s = "
              f"{statistics.median(cost) / statistics.median(base):.2f}x (medians)")  # fmt: skip

        # Two compacted copies of the full store, one without the index (the store before
        # migration m007), so that both reads see the same page layout.
        db, scan = root / "index.db", root / "no-index.db"
        c = connect(full.store_dir / "0000.db")
        for path in (db, scan):
            c.execute("VACUUM INTO ?", [str(path)])
        c.close()
        c = connect(scan)
        c.execute("DROP INDEX activities_by_local_start")
        c.close()
        reads = {}
        for name, path in (("index", db), ("scan", scan)):
            times = []
            for _ in range(args.rounds):
                times.append(_read(path, first, last)[1])
            reads[name] = statistics.median(times)
        print(f"read the week: through the index {reads['index'] * 1e3:.1f} ms, without it (a scan "
              f"of every activity, as before) {reads['scan'] * 1e3:.1f} ms = "
              f"{reads['scan'] / reads['index']:.2f}x")  # fmt: skip

        acts, t_read = _read(db, first, last)
        _DISK_CACHE.clear()
        _, t_heat = timed(
            lambda: layer_heat(
                acts,
                group_layers=True,
                sport_layers=full.sport_layers,
                night=full.night_layer,
                min_athletes=full.weekly_k,
                max_per_athlete=full.max_per_athlete,
                threshold_ring=full.threshold_ring,
            )  # fmt: skip
        )
        total = statistics.median(cost)
        print(f"stages of the full store's run: read {t_read:.2f} s, thresholds {t_heat:.2f} s, "
              f"tiles + page + publish {total - t_read - t_heat:.2f} s")  # fmt: skip
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss:.0f} MB")


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
