"""Benchmark the extra layers, the weekly map and personal heatmaps on real rides.

Steps (all on one store, all timed in this one process, so compare the ratios):

1. Convert the six ValleyBike months from ``../shared/data/valleybike`` (or the two bundled
   months with ``--bundled``) to stream events and ingest them with the CLI (``-w 2``).
2. ``load_window`` for the latest month with the five group layers only (the baseline),
   then with the per-sport and night layers too; ``run_snapshot`` both ways.
3. ``snapshot --weekly`` for the last week of the data.
4. ``heatmetro personal`` for the athlete with the most activities in ``personal.db``.

Prints seconds, ratios against the baseline, tiles, and the process's peak RSS. Usage::

    .venv/bin/python bench/layers.py [--bundled] [--rounds N]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.valleybike_project import SALT, one_shard_store, timed  # noqa: E402
from heatmetro.core.config import load_config  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs  # noqa: E402
from heatmetro.site_builder.load import load_window  # noqa: E402
from heatmetro.site_builder.personal import build_personal  # noqa: E402
from heatmetro.site_builder.snapshot import run_snapshot  # noqa: E402
from heatmetro.site_builder.weekly import run_weekly  # noqa: E402
from heatmetro.state.personal_store import (  # noqa: E402
    PersonalFilter,
    connect_personal,
    personal_db_path,
)
from heatmetro.state.store import connect  # noqa: E402
from heatmetro.state.view import ReadView  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundled", action="store_true", help="the two bundled months only")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    csvs = bundled_csvs() if args.bundled else (shared_csvs() or bundled_csvs())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one_shard_store(root, csvs)
        config = load_config(root / "config.toml", salt=SALT)
        groups = config.model_copy(update={"sport_layers": (), "night_layer": False})
        db = connect(config.store_dir / "0000.db")
        view = ReadView([db])
        month = db.execute("SELECT max(month) FROM athlete_months").fetchone()[0]
        paths = db.execute("SELECT coalesce(sum(length(path)), 0) / 24 FROM activities").fetchone()
        last_day = db.execute(
            "SELECT date(max(start_s + utc_offset_s), 'unixepoch') FROM activities "
            "WHERE status = 'active'"
        ).fetchone()[0]
        print(f"store: {len(csvs)} months of rides, {paths[0]:,} path cells, window ends {month}")
        for r in range(args.rounds):
            _, base = timed(
                lambda: load_window(
                    view, month, min_athletes=3, max_per_athlete=10, threshold_ring=1
                )  # noqa: B023
            )
            win, extra = timed(
                lambda: load_window(
                    view,
                    month,
                    min_athletes=3,
                    max_per_athlete=10,
                    threshold_ring=1,
                    sport_layers=config.sport_layers,
                    night=True,
                )  # fmt: skip
            )
            snap0, s0 = timed(lambda: run_snapshot(groups, month=month, quiet=True))
            snap1, s1 = timed(lambda: run_snapshot(config, month=month, quiet=True))
            print(
                f"round {r + 1}: load_window groups {base:.2f} s, + sport/night {extra:.2f} s "
                f"= {extra / base:.2f}x | snapshot groups {s0:.2f} s ({snap0.tiles:,} tiles), "
                f"+ sport/night {s1:.2f} s ({snap1.tiles:,} tiles) = {s1 / s0:.2f}x"
            )
        print(
            "extra layers:",
            {
                k: len(v.cells)
                for k, v in win.heat.items()
                if k.startswith("sport_") or k == "night"
            },
        )
        db.close()
        now = datetime.now(UTC)
        weekly, w = timed(lambda: run_weekly(config, until=last_day, when=now, quiet=True))
        print(f"weekly {weekly.first}..{weekly.until}: {weekly.athletes} athletes, "
              f"{weekly.activities} activities, {weekly.tiles} tiles in {w:.2f} s")  # fmt: skip
        pdb = connect_personal(personal_db_path(config.state_dir))
        who, n, hidden = pdb.execute(
            "SELECT athlete_id, count(*), sum(visibility != 'everyone' OR hide_map) "
            "FROM activities WHERE status = 'active' GROUP BY athlete_id "
            "ORDER BY count(*) DESC, athlete_id LIMIT 1"
        ).fetchone()
        stored = pdb.execute("SELECT count(*) FROM activities").fetchone()[0]
        pdb.close()
        res, p = timed(
            lambda: build_personal(
                config, who, root / "me", PersonalFilter(), build_date=now.strftime("%Y-%m-%d")
            )
        )
        print(f"personal.db: {stored:,} activities; busiest athlete: {n} activities "
              f"({hidden} not public), {res.tiles:,} tiles up to z{config.max_zoom} in {p:.2f} s")  # fmt: skip
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss:.0f} MB")


if __name__ == "__main__":
    main()
