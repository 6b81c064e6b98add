"""Ingest cost with map matching vs without, as a ratio measured in one run.

The same stream (noisy tracks routed along the streets of the Helsinki extract, seeded)
is ingested by the real CLI twice per round: once with ``base_map`` set, once without,
in fresh state folders, interleaved so the machine's drift hits both alike. The parsed
network is cached beforehand (as a running deployment has it).

    .venv/bin/python bench/map_match.py [--activities 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import HEATMETRO, cli_env, write_config  # noqa: E402
from tests.streams import activity, athlete, to_jsonl  # noqa: E402
from tests.street_tracks import HELSINKI, helsinki, noisy_track, route_through  # noqa: E402


def stream(n: int, state: Path) -> tuple[bytes, int]:
    net = helsinki(state)
    rng = np.random.default_rng(7)
    long_edges = np.flatnonzero((net.length_m > 40) & (net.bike > 0))
    events, fixes = [], 0
    for i in range(n):
        e = int(rng.choice(long_edges))
        route = route_through(net, e, bool(rng.integers(2)), bike=True, around_m=600)
        pts = noisy_track(net, route, seed=i)
        fixes += len(pts)
        events.append(athlete(f"b{i % 97}", hide_start_end_m=0))
        events.append(activity(f"b{i}", f"b{i % 97}", pts))
    return to_jsonl(events), fixes


def ingest(folder: Path, events: Path, base_map: str | None) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one ``heatmetro ingest``."""
    extra = {"base_map": base_map} if base_map else {}
    write_config(folder, **extra)
    cmd = [
        "/usr/bin/time",
        "-f",
        "%M",
        *HEATMETRO,
        "ingest",
        "-c",
        str(folder / "config.toml"),
        str(events),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=REPO, check=True)
    seconds = time.perf_counter() - t0
    return seconds, int(proc.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--activities", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mm-"))
    try:
        data, fixes = stream(args.activities, tmp / "net")
        events = tmp / "events.jsonl"
        events.write_bytes(data)
        print(f"{args.activities} rides, {fixes:,} fixes, on {HELSINKI.name}")
        ratios, rss = [], {True: 0, False: 0}
        for r in range(args.rounds):
            times = {}
            for with_map in (False, True):
                folder = tmp / f"r{r}-{int(with_map)}"
                folder.mkdir()
                if with_map:  # the network cache a running deployment already has
                    shutil.copytree(tmp / "net" / "streets", folder / "state" / "streets")
                times[with_map], peak = ingest(folder, events, str(HELSINKI) if with_map else None)
                rss[with_map] = max(rss[with_map], peak)
            ratios.append(times[True] / times[False])
            print(
                f"round {r + 1}: without {times[False]:.2f} s ({fixes / times[False]:,.0f} fixes/s)"
                f"   with base map {times[True]:.2f} s = {ratios[-1]:.2f}x"
            )
        print(
            f"ingest with map matching / without: median {statistics.median(ratios):.2f}x "
            f"[min {min(ratios):.2f}x]; peak RSS {rss[False] / 1024:.0f} MiB without, "
            f"{rss[True] / 1024:.0f} MiB with"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
