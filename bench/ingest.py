"""Ingest throughput against a naive baseline, peak memory, and how compact the state is.

Converts every ValleyBike ride (all six shared months, or the two bundled ones) to one
JSONL stream, then in the same run:

1. baseline: ``json.loads`` every line and ``h3.latlng_to_cell(lat, lng, 11)`` (the
   default string API) for every fix, in this process; run before and after the ingests
   (the machines are noisy) and averaged;
2. ``heatmetro ingest`` of the file into a fresh project with ``-w 1`` and ``-w 2``, each
   a subprocess under ``/usr/bin/time -v`` (peak RSS), timed wall-clock as a whole
   command (start-up, recovery snapshots and SQLite commits included); and ``-w 1`` at
   ``heat_resolution = 11`` too, for what the default res 13 costs over it (goal <= 1.3x);
3. the store's size per aggregate entry and per athlete-month, extrapolated to a city;
4. clean vs messy: the same number of fixes of messy phone GPS (``bench/messy_tracks.py``:
   buses, cold starts, spikes, clock jumps, still watches, 100,000-fix hikes) ingested
   with ``-w 1`` right after the clean stream, in interleaved rounds: fixes/s of each,
   the ratio of their per-fix costs (goal: messy <= 1.5x clean), and peak RSS.

Usage: ``make bench`` or ``.venv/bin/python bench/ingest.py`` (``--messy`` runs only 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import h3
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from heatmetro.flows.importers.jsonl import write_jsonl  # noqa: E402
from heatmetro.flows.importers.valleybike import valleybike_events  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs  # noqa: E402
from heatmetro.state.records import EDGE_DTYPE, HEAT_DTYPE, HEX_DTYPE, OD_DTYPE, PATH_DTYPE  # noqa: E402
from heatmetro.state.settings import AthleteSettings, Zone  # noqa: E402

GOAL_RATIO = 1.5
RES_GOAL = 1.3  # ingest at heat_resolution 13 may cost at most this much more than at 11
LOW_RES = 11
MESSY_GOAL = 1.5  # messy phone GPS may cost at most this much more per fix than clean
ROUNDS = 5
MESSY_ROUNDS = 3
RAM_BYTES = 24 * 2**30  # this machine
CITY_ATHLETES = 50_000
CITY_MONTHS = 12
HEAVY_ACTIVITIES_PER_MONTH = 20  # a keen club rider, for the upper-bound line
MIB = 2**20


def baseline(path: Path) -> tuple[float, int]:
    """Seconds for the naive loop over ``path``, and the fixes it saw."""
    fixes = 0
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        for line in fh:
            obj = json.loads(line)
            if obj["kind"] == "activity":
                for lat, lng in obj["streams"]["latlng"]:
                    h3.latlng_to_cell(lat, lng, 11)
                    fixes += 1
    return time.perf_counter() - t0, fixes


class TreeRss:
    """Samples the summed RSS of a process and its descendants (``-w 2`` has two)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, sum(_rss(p) for p in _tree(self.pid)))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def ingest(stream: Path, folder: Path, workers: int, res: int | None = None) -> dict[str, Any]:
    """Run ``heatmetro ingest`` in a fresh project; wall seconds and peak RSS."""
    folder.mkdir()
    # One shard: the figures below read one SQLite file (shards: bench/stall.py, docs/scaling.md).
    extra = f"heat_resolution = {res}\n" if res else ""
    (folder / "config.toml").write_text(
        f'state_dir = "state"\nout_dir = "site"\nshards = 1\n{extra}'
    )
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "heatmetro.cli",
        "ingest",
        "-c",
        str(folder / "config.toml"),
        str(stream),
        "-w",
        str(workers),
    ]
    env = dict(os.environ, HEATMETRO_SALT="bench-salt", HEATMETRO_QUIET="1", PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = TreeRss(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    tree_peak = sampler.stop()
    if proc.returncode:
        sys.exit(f"ingest -w {workers} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    m = re.search(rb"Maximum resident set size \(kbytes\): (\d+)", err)
    cpu = sum(float(x) for x in re.findall(rb"(?:User|System) time \(seconds\): ([\d.]+)", err))
    return {
        "wall": wall,
        "cpu": cpu,  # user + system of the command and its waited-for children
        "max_rss": int(m.group(1)) * 1024 if m else 0,
        "tree_rss": tree_peak,
        "summary": out.decode().strip(),
    }


def table_digest(db: sqlite3.Connection, sql: str) -> str:
    h = hashlib.sha256()
    for row in db.execute(sql):
        h.update(repr(row).encode())
    return h.hexdigest()[:16]


def messy_vs_clean(clean: Path, tmp: Path) -> None:
    """Ingest ``clean`` and as many fixes of messy tracks, interleaved; print the ratio."""
    sys.path.insert(0, str(REPO / "bench"))
    from messy_tracks import messy_events
    from messy_tracks import write_jsonl as write_messy

    clean_fixes = 0
    with clean.open("rb") as fh:
        for line in fh:
            obj = orjson.loads(line)
            if obj["kind"] == "activity":
                clean_fixes += len(obj["streams"]["time"])
    messy = tmp / "messy.jsonl"
    n_events, messy_fixes = write_messy(messy_events(clean_fixes, seed=2021), messy)
    print(
        f"messy stream: {n_events:,} events, {messy_fixes:,} fixes "
        f"(clean: {clean_fixes:,}); bench/messy_tracks.py, seed 2021"
    )
    runs: dict[str, list[dict[str, Any]]] = {"clean": [], "messy": []}
    for k in range(MESSY_ROUNDS):
        for name, stream in (("clean", clean), ("messy", messy)):
            runs[name].append(ingest(stream, tmp / f"m{k}{name}", 1))
        c, m = runs["clean"][-1]["wall"], runs["messy"][-1]["wall"]
        print(
            f"round {k + 1}: clean {c:5.2f} s ({clean_fixes / c:,.0f} fixes/s)   "
            f"messy {m:5.2f} s ({messy_fixes / m:,.0f} fixes/s)   per fix {(m / messy_fixes) / (c / clean_fixes):4.2f}x"
        )
    ratios = sorted(
        (m["wall"] / messy_fixes) / (c["wall"] / clean_fixes)
        for c, m in zip(runs["clean"], runs["messy"], strict=True)
    )
    med = ratios[len(ratios) // 2]
    print("messy / clean cost per fix, `heatmetro ingest -w 1` (whole command), median of rounds")
    for name, fixes in (("clean", clean_fixes), ("messy", messy_fixes)):
        walls = sorted(r["wall"] for r in runs[name])
        peak = max(r["max_rss"] for r in runs[name])
        print(
            f"  {name}: {fixes / walls[len(walls) // 2]:,.0f} fixes/s, peak RSS {peak / MIB:,.0f} MiB"
        )
    verdict = "meets" if med <= MESSY_GOAL else "misses"
    print(
        f"  ratio {med:4.2f}x [{ratios[0]:4.2f}x .. {ratios[-1]:4.2f}x] "
        f"({verdict} the <= {MESSY_GOAL}x goal)"
    )
    db = sqlite3.connect(tmp / f"m{MESSY_ROUNDS - 1}messy" / "state" / "shards" / "0000.db")
    cols = ("spike_fixes", "bad_end_fixes", "vehicle_fixes", "vehicle_stretches", "pause_splits")
    sums = db.execute(
        f"SELECT {', '.join(f'sum({c})' for c in cols)}, sum(fixes_kept), sum(fixes_in), "
        "sum(status = 'active'), count(*) "
        "FROM activities"
    ).fetchone()
    dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    db.close()
    print(
        "  messy store: "
        + ", ".join(f"{v:,} {c}" for c, v in zip(cols, sums, strict=False))
        + f"; {sums[-4]:,} of {sums[-3]:,} fixes kept after cleaning and hiding"
        + f"; {sums[-2]:,} of {sums[-1]:,} activities active, {dead} dead letters"
    )


def main() -> int:
    csvs = shared_csvs() or bundled_csvs()
    if "--messy" in sys.argv[1:]:
        with tempfile.TemporaryDirectory(prefix="heatmetro-bench-") as tmp_s:
            tmp = Path(tmp_s)
            write_jsonl(valleybike_events(csvs), tmp / "valleybike.jsonl")
            messy_vs_clean(tmp / "valleybike.jsonl", tmp)
        return 0
    which = "shared (6 months)" if shared_csvs() else "bundled (2 months)"
    with tempfile.TemporaryDirectory(prefix="heatmetro-bench-") as tmp_s:
        tmp = Path(tmp_s)
        stream = tmp / "valleybike.jsonl"
        t0 = time.perf_counter()
        n_events = write_jsonl(valleybike_events(csvs), stream)
        kinds: dict[str, int] = {}
        with stream.open("rb") as fh:
            for line in fh:
                k = orjson.loads(line)["kind"]
                kinds[k] = kinds.get(k, 0) + 1
        print(
            f"stream: ValleyBike {which}: {n_events:,} events "
            f"({', '.join(f'{v:,} {k}' for k, v in sorted(kinds.items()))}), "
            f"{stream.stat().st_size / MIB:,.1f} MiB JSONL, written in {time.perf_counter() - t0:.1f} s"
        )

        # Interleaved rounds: this machine's speed drifts by up to 2x within minutes,
        # so each ingest is compared with the baseline measured right before it.
        rounds: list[tuple[float, dict[int, dict[str, Any]]]] = []
        res_ratios: list[float] = []
        cpu_ratios: list[float] = []  # CPU seconds: less swayed by other load than wall time
        fixes = 0
        for k in range(ROUNDS):
            b, fixes = baseline(stream)
            runs = {w: ingest(stream, tmp / f"r{k}w{w}", w) for w in (1, 2)}
            low = ingest(stream, tmp / f"r{k}low", 1, LOW_RES)
            rounds.append((b, runs))
            res_ratios.append(runs[1]["wall"] / low["wall"])
            cpu_ratios.append(runs[1]["cpu"] / low["cpu"])
            print(
                f"round {k + 1}: baseline {b:5.2f} s ({fixes / b:,.0f} fixes/s)   "
                + "   ".join(
                    f"-w {w} {r['wall']:5.2f} s = {r['wall'] / b:4.2f}x" for w, r in runs.items()
                )
                + f"   -w 1 res {LOW_RES} {low['wall']:5.2f} s = {low['wall'] / b:4.2f}x"
                + f"   res 13 / res {LOW_RES} {res_ratios[-1]:4.2f}x "
                + f"(CPU {runs[1]['cpu']:5.2f} s / {low['cpu']:5.2f} s = {cpu_ratios[-1]:4.2f}x)"
            )
        print(
            f"({fixes:,} fixes; baseline = json.loads per line + h3.latlng_to_cell(lat, lng, 11) "
            "per fix, in this process; ingest = the whole `heatmetro ingest` command)"
        )
        print()
        print("heatmetro ingest / baseline, median of the rounds (min in brackets)")
        for w in (1, 2):
            ratios = sorted(r[w]["wall"] / b for b, r in rounds)
            walls = sorted(r[w]["wall"] for _, r in rounds)
            med = ratios[len(ratios) // 2]
            verdict = "meets" if med <= GOAL_RATIO else "misses"
            last = rounds[-1][1][w]
            print(
                f"  -w {w}: ratio {med:4.2f}x [{ratios[0]:4.2f}x] ({verdict} the <= {GOAL_RATIO}x goal), "
                f"{fixes / walls[len(walls) // 2]:,.0f} fixes/s, peak RSS {last['max_rss'] / MIB:,.0f} MiB "
                f"largest process, {last['tree_rss'] / MIB:,.0f} MiB all processes"
            )
        for what, rs in (("wall", res_ratios), ("CPU", cpu_ratios)):
            rs.sort()
            med = rs[len(rs) // 2]
            verdict = "meets" if med <= RES_GOAL else "misses"
            print(
                f"  -w 1 at heat_resolution 13 (default) / at {LOW_RES}, {what} time: {med:4.2f}x "
                f"[{rs[0]:4.2f}x .. {rs[-1]:4.2f}x] ({verdict} the <= {RES_GOAL}x goal)"
            )
        runs = rounds[-1][1]
        print(f"  summary: {runs[1]['summary']}")
        tmp_last = tmp / f"r{ROUNDS - 1}w"

        dbs = {w: sqlite3.connect(f"{tmp_last}{w}/state/shards/0000.db") for w in runs}
        same = all(
            table_digest(dbs[1], sql) == table_digest(dbs[2], sql)
            for sql in (
                "SELECT * FROM activities ORDER BY activity_id",
                "SELECT * FROM athlete_months ORDER BY athlete_id, month, layer",
            )
        )
        print(
            f"  -w 1 and -w 2 stores identical (activities, athlete_months): {'yes' if same else 'NO'}"
        )
        print()
        compactness(dbs[1], Path(f"{tmp_last}1") / "state")
        for db in dbs.values():
            db.close()
        print()
        messy_vs_clean(stream, tmp)
    return 0


def compactness(db: sqlite3.Connection, state: Path) -> None:
    one = lambda sql: db.execute(sql).fetchone()  # noqa: E731
    n_rows, heat, edges, hexes, od = one(
        "SELECT count(*), coalesce(sum(length(heat)), 0), coalesce(sum(length(edges)), 0), "
        "coalesce(sum(length(hexagons)), 0), coalesce(sum(length(od)), 0) FROM athlete_months"
    )
    n_am, n_athletes = one(
        "SELECT count(*), count(DISTINCT athlete_id) FROM "
        "(SELECT DISTINCT athlete_id, month FROM athlete_months)"
    )
    am_activities = one("SELECT coalesce(sum(activities), 0) FROM athlete_months")[0]
    sizes = {
        "heat": (heat, HEAT_DTYPE.itemsize),
        "edges": (edges, EDGE_DTYPE.itemsize),
        "hexagons": (hexes, HEX_DTYPE.itemsize),
        "od": (od, OD_DTYPE.itemsize),
    }
    agg_bytes = heat + edges + hexes + od
    entries = sum(b // s for b, s in sizes.values())
    print("store: athlete_months (what a snapshot reads)")
    print(
        f"  {n_rows:,} rows (athlete x month x layer) = {n_am:,} athlete-months of {n_athletes:,} athletes, "
        f"{am_activities:,} activities ({am_activities / max(n_am, 1):.2f} per athlete-month)"
    )
    for name, (b, s) in sizes.items():
        print(f"  {name:9s} {b / MIB:8.2f} MiB  {b // s:10,} entries x {s} B")
    per_am = agg_bytes / max(n_am, 1)
    print(
        f"  total     {agg_bytes / MIB:8.2f} MiB  {entries:10,} entries: "
        f"{agg_bytes / max(entries, 1):.1f} B per aggregate entry, "
        f"{entries / max(n_am, 1):,.0f} entries = {per_am / 1024:,.1f} KiB per athlete-month"
    )
    n_all, n_act, path_b, a_heat, a_edges, a_hex, a_od = one(
        "SELECT count(*), sum(status = 'active'), coalesce(sum(length(path)), 0), coalesce(sum(length(heat)), 0), "
        "coalesce(sum(length(edges)), 0), coalesce(sum(length(hexagons)), 0), "
        "coalesce(sum(length(od)), 0) FROM activities"
    )
    act_bytes = path_b + a_heat + a_edges + a_hex + a_od
    print(
        f"store: activities: {n_all:,} rows ({n_act:,} active), path {path_b / MIB:.2f} MiB "
        f"({path_b // PATH_DTYPE.itemsize:,} cells x {PATH_DTYPE.itemsize} B), per-activity aggregates "
        f"{(act_bytes - path_b) / MIB:.2f} MiB; {act_bytes / max(n_act, 1) / 1024:.1f} KiB per active activity"
    )
    files = [state / "shards" / "0000.db", state / "shards" / "0000.db-wal"]
    db_size = sum(p.stat().st_size for p in files if p.exists())
    rec = sum(p.stat().st_size for p in (state / "recovery").glob("*") if p.is_file())
    print(f"  SQLite file {db_size / MIB:.1f} MiB; Bytewax recovery folder {rec / MIB:.1f} MiB")
    print()

    am_year = CITY_ATHLETES * CITY_MONTHS
    city_agg = am_year * per_am
    per_act = act_bytes / max(n_act, 1)
    acts_per_am = am_activities / max(n_am, 1)
    city_act = am_year * acts_per_am * per_act
    heavy = HEAVY_ACTIVITIES_PER_MONTH / max(acts_per_am, 1e-9)
    print(
        f"a year of a {CITY_ATHLETES:,}-athlete city (assumes every athlete active in all "
        f"{CITY_MONTHS} months = {am_year:,} athlete-months, each like the measured average: "
        f"{acts_per_am:.2f} activities, {per_am / 1024:.1f} KiB of aggregates)"
    )
    print(
        f"  athlete_months {city_agg / MIB:10,.0f} MiB = {city_agg / RAM_BYTES:6.1%} of this machine's 24 GiB"
    )
    print(
        f"  activities     {city_act / MIB:10,.0f} MiB on disk ({per_act / 1024:.1f} KiB per active activity)"
    )
    print(
        f"  upper bound at {HEAVY_ACTIVITIES_PER_MONTH} activities per athlete-month (x{heavy:.1f}, entries "
        f"assumed to grow linearly although repeated routes share cells): athlete_months "
        f"{city_agg * heavy / MIB:,.0f} MiB = {city_agg * heavy / RAM_BYTES:.1%} of 24 GiB"
    )
    print()

    plain = AthleteSettings()
    zoned = AthleteSettings(
        updated_ms=1_700_000_000_000,
        opt_out=False,
        hide_start_end_m=400.0,
        zones=(Zone(42.3195, -72.645, 400.0), Zone(42.3295, -72.625, 250.0)),
    )
    p_plain, p_zoned = len(pickle.dumps(plain)), len(pickle.dumps(zoned))
    print(
        "Bytewax state: one AthleteSettings per athlete (the only keyed state): "
        f"pickle.dumps = {p_plain} B (defaults), {p_zoned} B (hide 400 m, 2 zones)"
    )
    for w in (1, 2):
        print(
            f"  {CITY_ATHLETES:,} athletes over {w} worker(s): {CITY_ATHLETES // w:,} per worker x "
            f"{p_zoned} B = {CITY_ATHLETES // w * p_zoned / MIB:.1f} MiB per worker (pickled size)"
        )


if __name__ == "__main__":
    sys.exit(main())
