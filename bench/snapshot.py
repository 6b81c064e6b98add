"""Benchmark ``heatmetro snapshot`` on real ValleyBike rides and on a 10x scale-up.

Steps:

1. Convert the six ValleyBike months from ``../shared/data/valleybike`` (or the two bundled
   months when that folder is absent) to stream events and ingest them once, with the CLI,
   into a temporary project using the DEFAULT config zooms (2..16, public up to 12).
2. Time ``heatmetro snapshot`` for the latest month under ``/usr/bin/time -v``: wall time,
   peak RSS, tiles written per second.
3. Copy the store and multiply it by 10: every ``athlete_months`` row is copied nine times
   with the athlete id suffixed ``-1`` .. ``-9`` (same cells: 10x the athletes and rows),
   then time the snapshot of that store the same way.

Prints a table and the growth ratio 10x/1x; times are wall clock on a noisy machine, so
compare the ratio, not the absolute seconds. Usage::

    .venv/bin/python bench/snapshot.py [--bundled] [--keep] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from heatmetro.core.months import window_months  # noqa: E402
from heatmetro.flows.importers.jsonl import write_jsonl  # noqa: E402
from heatmetro.flows.importers.valleybike import valleybike_events  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs  # noqa: E402

HEATMETRO = [sys.executable, "-m", "heatmetro.cli"]
SCALE = 10
BENCH_SALT = "bench-salt-not-secret"


@dataclass(frozen=True)
class Run:
    label: str
    rows: int
    athletes: int
    seconds: float
    tiles: int
    peak_rss_mb: float

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0


def env() -> dict[str, str]:
    return dict(
        os.environ,
        HEATMETRO_SALT=BENCH_SALT,
        HEATMETRO_QUIET="1",
        PYTHONPATH=str(REPO),
        SOURCE_DATE_EPOCH="1700000000",
    )


def write_config(project: Path) -> Path:
    """Default zooms and thresholds: only where the store and the site go."""
    path = project / "config.toml"
    path.write_text('state_dir = "state"\nout_dir = "site"\n')
    return path


def source_csvs(bundled: bool) -> list[Path]:
    return (shared_csvs() if not bundled else []) or bundled_csvs()


def ingest(project: Path, csvs: list[Path], workers: int) -> None:
    events = project / "events.jsonl.gz"
    t0 = time.perf_counter()
    n = write_jsonl(valleybike_events(csvs), events)
    print(f"converted {len(csvs)} CSV files -> {n:,} events in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    cmd = [
        *HEATMETRO,
        "ingest",
        "-c",
        str(project / "config.toml"),
        "-w",
        str(workers),
        str(events),
    ]
    proc = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"ingest failed:\n{proc.stderr}")
    print(f"{proc.stdout.strip()} in {time.perf_counter() - t0:.1f} s")


def latest_month(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        return str(db.execute("SELECT max(month) FROM athlete_months").fetchone()[0])


def window_figures(db_path: Path, month: str) -> tuple[int, int]:
    """``athlete_months`` rows and distinct athletes inside the snapshot's 12-month window."""
    first, last = window_months(month)
    with sqlite3.connect(db_path) as db:
        rows, athletes = db.execute(
            "SELECT count(*), count(DISTINCT athlete_id) FROM athlete_months "
            "WHERE month BETWEEN ? AND ?",
            (first, last),
        ).fetchone()
    return rows, athletes


def scale_up(src: Path, dst: Path, factor: int) -> None:
    """``dst`` = ``src``'s project with every athlete-month row copied ``factor - 1`` times."""
    dst.mkdir()
    write_config(dst)
    (dst / "state").mkdir()
    shutil.copy2(src / "state" / "heatmetro.db", dst / "state" / "heatmetro.db")
    with sqlite3.connect(dst / "state" / "heatmetro.db") as db:
        for k in range(1, factor):
            db.execute(
                "INSERT INTO athlete_months SELECT athlete_id || ?, month, layer, activities, "
                "heat, edges, hexagons, od FROM athlete_months WHERE athlete_id NOT LIKE '%-_'",
                (f"-{k}",),
            )
        db.commit()


def timed_snapshot(label: str, project: Path, month: str) -> Run:
    rows, athletes = window_figures(project / "state" / "heatmetro.db", month)
    cmd = ["/usr/bin/time", "-v", *HEATMETRO, "snapshot", "-q", "-c", str(project / "config.toml")]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--month", month], env=env(), cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"snapshot {label} failed:\n{proc.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    meta = json.loads((project / "site" / "metadata.json").read_text())
    return Run(
        label=label,
        rows=rows,
        athletes=athletes,
        seconds=seconds,
        tiles=int(meta["counts"]["tiles"]),
        peak_rss_mb=int(rss.group(1)) / 1024 if rss else float("nan"),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundled", action="store_true", help="use the two bundled months only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects")
    parser.add_argument("--workers", type=int, default=2, help="ingest workers (default 2)")
    args = parser.parse_args()
    if not Path("/usr/bin/time").is_file():
        sys.exit("needs /usr/bin/time (Debian package `time`) for peak memory")

    root = Path(tempfile.mkdtemp(prefix="heatmetro-bench-"))
    try:
        base = root / "x1"
        base.mkdir()
        write_config(base)
        csvs = source_csvs(args.bundled)
        ingest(base, csvs, args.workers)
        month = latest_month(base / "state" / "heatmetro.db")
        big = root / f"x{SCALE}"
        scale_up(base, big, SCALE)

        runs = [timed_snapshot("1x", base, month), timed_snapshot(f"{SCALE}x", big, month)]
        print(
            f"\nheatmetro snapshot --month {month} (window {window_months(month)[0]}..{month}), "
            f"default zooms 2..16, {len(csvs)} ValleyBike months ingested; "
            "rows/athletes = athlete_months rows in the window"
        )
        header = f"{'store':<6}{'rows':>9}{'athletes':>10}{'seconds':>9}{'tiles':>8}{'tiles/s':>9}{'peak RSS MB':>13}"
        print(header)
        print("-" * len(header))
        for r in runs:
            print(
                f"{r.label:<6}{r.rows:>9,}{r.athletes:>10,}{r.seconds:>9.1f}{r.tiles:>8,}"
                f"{r.tiles_per_s:>9,.0f}{r.peak_rss_mb:>13,.0f}"
            )
        one, ten = runs
        print(
            f"growth {SCALE}x/1x: time {ten.seconds / one.seconds:.2f}x, "
            f"peak RSS {ten.peak_rss_mb / one.peak_rss_mb:.2f}x, tiles {ten.tiles / max(one.tiles, 1):.2f}x"
        )
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
