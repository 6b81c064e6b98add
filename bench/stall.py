"""Benchmark: how long does ``ingest --follow`` stall while a snapshot runs?

Steps (all through the real CLI):

1. Ingest the six ValleyBike months (``/work/shared/data/valleybike``, or the two bundled
   months when absent) into a fresh project.
2. Start ``heatmetro ingest --follow`` on that stream plus a live file, with Prometheus
   metrics on; a feeder appends new rides (fresh ids) to the live file at a steady rate.
3. Three phases of the same length, sampling the metrics every 50 ms:
   * quiet: ingest alone;
   * snapshot: ``heatmetro snapshot`` of the latest month runs meanwhile;
   * old lock: the write lock of every shard is held for as long as the snapshot took,
     as the old privacy pass did with ``BEGIN IMMEDIATE`` (shows the measure would catch it).

Reported per phase: the longest time the committed-events counter stood still while the
feeder had appended more (the stall as seen from outside), and the longest write-lock
wait of one batch (``heatmetro_commit_stall_max_seconds``, cumulative). Usage::

    .venv/bin/python bench/stall.py [--rate 40] [--bundled]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
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


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("heatmetro_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class Feeder(threading.Thread):
    """Appends copies of real rides with fresh ids to the live file, ``rate`` per second."""

    def __init__(self, live: Path, rides: list[dict], rate: float) -> None:
        super().__init__(daemon=True)
        self.live, self.rides, self.rate = live, rides, rate
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with self.live.open("ab") as fh:
            while not self.stop.is_set():
                ride = dict(self.rides[self.sent % len(self.rides)])
                ride["activity_id"] = f"live-{self.sent}"
                ride["athlete_id"] = f"live-athlete-{self.sent % 500}"
                fh.write(orjson.dumps(ride) + b"\n")
                fh.flush()
                self.sent += 1
                time.sleep(1 / self.rate)


def phase(port: int, seconds: float, feeder: Feeder, during=None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Sample for ``seconds`` (or while ``during`` runs); longest standstill with backlog."""
    worker = threading.Thread(target=during) if during else None
    t0 = time.monotonic()
    if worker:
        worker.start()
    last_change, last_value, longest = time.monotonic(), -1.0, 0.0
    sent_at_change = feeder.sent
    while (worker and worker.is_alive()) or time.monotonic() - t0 < seconds:
        m = scrape(port)
        value = m.get("heatmetro_events_total", 0.0)
        now = time.monotonic()
        if value != last_value:
            last_value, last_change, sent_at_change = value, now, feeder.sent
        elif feeder.sent > sent_at_change:  # new events waiting, nothing committed
            longest = max(longest, now - last_change)
        time.sleep(0.05)
    time.sleep(1.0)  # the batch that waited reports its wait once it has committed
    m = scrape(port)
    return {
        "seconds": time.monotonic() - t0,
        "longest_standstill_s": longest,
        "lock_wait_max_s": m.get("heatmetro_commit_stall_max_seconds", 0.0),
        "events": m.get("heatmetro_events_total", 0.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=40.0, help="live rides appended per second")
    ap.add_argument("--bundled", action="store_true", help="use the two bundled months only")
    args = ap.parse_args()
    csvs = ([] if args.bundled else shared_csvs()) or bundled_csvs()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        port = free_port()
        cfg = project / "config.toml"
        cfg.write_text(f'state_dir = "state"\nout_dir = "site"\nmetrics_port = {port}\n')
        events = project / "events.jsonl"
        n = write_jsonl(valleybike_events(csvs), events)
        rides = [e for e in map(orjson.loads, events.read_bytes().splitlines())
                 if e["kind"] == "activity" and e.get("visibility") == "everyone"][:400]  # fmt: skip
        t0 = time.monotonic()
        subprocess.run([*HEATMETRO, "ingest", "-c", str(cfg), str(events), "-q"],
                       env=env(), cwd=REPO, check=True)  # fmt: skip
        print(f"store: {len(csvs)} months, {n:,} events, ingested in {time.monotonic() - t0:.1f} s")
        months = sorted({e["start_date"][:7] for e in rides})
        month = months[-1]
        live = project / "live.jsonl"
        live.touch()
        follow = subprocess.Popen(
            [*HEATMETRO, "ingest", "-c", str(cfg), "--follow", str(events), str(live), "-q"],
            env=env(), cwd=REPO, start_new_session=True,
        )  # fmt: skip
        feeder = Feeder(live, rides, args.rate)
        try:
            while not scrape(port):
                time.sleep(0.2)
            feeder.start()
            time.sleep(3)  # warm up: the live file is being followed
            snap_s: list[float] = []

            def snapshot() -> None:
                t = time.monotonic()
                subprocess.run([*HEATMETRO, "snapshot", "-c", str(cfg), "--month", month, "-q"],
                               env=env(), cwd=REPO, check=True)  # fmt: skip
                snap_s.append(time.monotonic() - t)

            quiet = phase(port, 10, feeder)
            snap = phase(port, 0, feeder, during=snapshot)

            def old_lock() -> None:
                cons = [sqlite3.connect(p, timeout=60, isolation_level=None)
                        for p in sorted((project / "state" / "shards").glob("*.db"))]  # fmt: skip
                for c in cons:
                    c.execute("BEGIN IMMEDIATE")
                time.sleep(snap_s[0])
                for c in cons:
                    c.execute("COMMIT")

            old = phase(port, 0, feeder, during=old_lock)
        finally:
            feeder.stop.set()
            os.killpg(follow.pid, signal.SIGKILL)  # ingest is crash-safe; no need to be gentle
            follow.wait()
    print(f"snapshot of {month} took {snap_s[0]:.1f} s; feeder {args.rate:.0f} rides/s\n")
    print(f"{'phase':<28}{'seconds':>8}{'longest standstill':>20}{'max lock wait (cum.)':>22}")
    for name, r in (("ingest alone", quiet), ("snapshot running", snap),
                    ("old privacy-pass lock (sim.)", old)):  # fmt: skip
        print(f"{name:<28}{r['seconds']:>8.1f}{r['longest_standstill_s'] * 1000:>17.0f} ms"
              f"{r['lock_wait_max_s'] * 1000:>19.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
