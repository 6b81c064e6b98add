"""Benchmark the heat threshold over a patch (``threshold_ring = 1``) against the per-cell
rule (``threshold_ring = 0``) on real rides.

Steps (one store, all timed in this one process, so compare the ratios):

1. Convert the six ValleyBike months from ``../shared/data/valleybike`` (or the two bundled
   months with ``--bundled``) to stream events and ingest them with the CLI (``-w 2``).
2. ``load_window`` for the latest month, sport and night layers included, with ring 0
   (the baseline) and ring 1; the cells drawn and the heat of the ``all`` layer.
3. ``run_snapshot`` both ways (tiles included).

Prints seconds, ratios against the baseline, and the process's peak RSS. Usage::

    .venv/bin/python bench/threshold.py [--bundled] [--rounds N]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.valleybike_project import SALT, one_shard_store, timed  # noqa: E402
from heatmetro.core.config import load_config  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs  # noqa: E402
from heatmetro.site_builder.load import load_window  # noqa: E402
from heatmetro.site_builder.snapshot import run_snapshot  # noqa: E402
from heatmetro.state.store import connect  # noqa: E402
from heatmetro.state.view import ReadView  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundled", action="store_true", help="the two bundled months only")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    csvs = bundled_csvs() if args.bundled else (shared_csvs() or bundled_csvs())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one_shard_store(root, csvs)
        config = load_config(root / "config.toml", salt=SALT)
        db = connect(config.store_dir / "0000.db")
        month = db.execute("SELECT max(month) FROM athlete_months").fetchone()[0]
        print(f"store: {len(csvs)} months of rides, window ends {month}")

        def window(ring: int):  # type: ignore[no-untyped-def]
            with ReadView([db]) as view:
                return load_window(
                    view, month, min_athletes=config.min_athletes,
                    max_per_athlete=config.max_per_athlete, threshold_ring=ring,
                    sport_layers=config.sport_layers, night=config.night_layer,
                )  # fmt: skip

        for r in range(args.rounds):
            w0, base = timed(lambda: window(0))
            w1, patch = timed(lambda: window(1))
            a0, a1 = w0.heat["all"], w1.heat["all"]
            print(
                f"round {r + 1}: load_window ring 0 {base:.2f} s, ring 1 {patch:.2f} s "
                f"({patch / base:.2f}x); all layer: {len(a0.cells):,} cells drawn "
                f"(heat {a0.heat.sum():,.0f}) -> {len(a1.cells):,} (heat {a1.heat.sum():,.0f})"
            )
        for r in range(args.rounds):
            times = []
            for ring in (0, 1):
                cfg = config.model_copy(update={"threshold_ring": ring})
                res, s = timed(lambda: run_snapshot(cfg, month=month, quiet=True))  # noqa: B023
                times.append((s, res.tiles))
            (b, t0), (p, t1) = times
            print(
                f"round {r + 1}: snapshot ring 0 {b:.2f} s ({t0:,} tiles), ring 1 {p:.2f} s "
                f"({t1:,} tiles) ({p / b:.2f}x)"
            )
        db.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
