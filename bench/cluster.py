"""Benchmark: ingest throughput of a 1-, 2- and 4-process Bytewax cluster on this machine.

Each process is a separate ``heatmetro ingest -a ... -i I`` with its own config and
``state_dir`` (as on separate machines), all reading the same six ValleyBike months
(``/work/shared/data/valleybike``, or the two bundled months when absent); then the same
with ``heatmetro snapshot -a ... -i I`` of the latest month. Prints wall time, GPS fixes
per second in total and per process, and each process's CPU time (user+sys) so the
limit is visible: on a 2-core machine more than 2 processes only share the same cores.
Usage::

    .venv/bin/python bench/cluster.py [--bundled] [--processes 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from heatmetro.flows.importers.jsonl import write_jsonl  # noqa: E402
from heatmetro.flows.importers.valleybike import valleybike_events  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs  # noqa: E402

HEATMETRO = [sys.executable, "-m", "heatmetro.cli"]


def env() -> dict[str, str]:
    return dict(
        os.environ,
        HEATMETRO_SALT="bench-salt",
        PYTHONPATH=str(REPO),
        SOURCE_DATE_EPOCH="1700000000",
    )


def ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    out = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return out


def run_cluster(cfgs: list[Path], args: list[str]) -> tuple[float, float]:
    """Wall seconds and total child CPU seconds of one cluster command."""
    addresses = ";".join(f"127.0.0.1:{p}" for p in ports(len(cfgs)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*HEATMETRO, *args, "-c", str(c), "-q", "-a", addresses, "-i", str(i)],
            env=env(),
            cwd=REPO,
        )  # fmt: skip
        for i, c in enumerate(cfgs)
    ]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        sys.exit(f"{args[0]} failed: {codes}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundled", action="store_true")
    ap.add_argument("--processes", default="1,2,4")
    a = ap.parse_args()
    csvs = ([] if a.bundled else shared_csvs()) or bundled_csvs()
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        n = write_jsonl(valleybike_events(csvs), events)
        fixes = sum(
            len(e["streams"]["time"])
            for e in map(orjson.loads, events.read_bytes().splitlines())
            if e["kind"] == "activity"
        )
        month = "2021-02" if len(csvs) > 2 else "2020-10"
        print(f"{len(csvs)} months: {n:,} events, {fixes:,} GPS fixes; snapshot of {month}")
        print(f"{'processes':>9} {'ingest s':>9} {'fixes/s':>10} {'per process':>12} "
              f"{'CPU s':>7} {'snapshot s':>11}")  # fmt: skip
        for k in (int(x) for x in a.processes.split(",")):
            cfgs = []
            for i in range(k):
                folder = Path(tmp) / f"k{k}" / f"machine{i}"
                folder.mkdir(parents=True)
                (folder / "config.toml").write_text('state_dir = "state"\nout_dir = "site"\n')
                cfgs.append(folder / "config.toml")
            wall, cpu = run_cluster(cfgs, ["ingest", str(events)])
            snap, _ = run_cluster(cfgs, ["snapshot", "--month", month])
            print(f"{k:>9} {wall:>9.1f} {fixes / wall:>10,.0f} {fixes / wall / k:>12,.0f} "
                  f"{cpu:>7.1f} {snap:>11.1f}")  # fmt: skip
    print(f"\nmachine: {os.cpu_count()} CPUs (shared with other jobs); wall clock, one run each")


if __name__ == "__main__":
    main()
