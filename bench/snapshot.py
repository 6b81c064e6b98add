"""Benchmark ``heatmetro snapshot``: street lines (res 13) vs res 11, parallel and incremental.

Steps, all through the real CLI on real ValleyBike rides (the six months in
``../shared/data/valleybike``, or the two bundled months with ``--bundled``):

1. Ingest the same events twice: ``heat_resolution = 11`` (before: streets as ~40 px
   bands of discs) and ``13`` (after: streets as lines). Report the store's bytes per km
   of GPS track (trimmed paths + per-athlete heat aggregates) for each.
2. Full snapshot of each (every core), under ``/usr/bin/time -v``: wall time, peak RSS;
   and the res-13 one with ``tile_workers = 1``, three times (the median): tiles/s of
   ONE core in the tile stage (the sum of the per-layer figures the CLI prints). Then, in this process on
   the same plans, drawing + PNG encoding by the current rasteriser against the
   RENDER_VERSION 2 one (``bench/raster_v2.py``), alternating: their ratio, and apart
   the time this machine takes to create that many PNG files (the part of a ``png``
   tile stage no code here controls).
3. Change 1% of the athletes (every 100th: their athlete-month rows are dropped, as an
   opt-out would), rebuild incrementally on top of the published build (tile cache,
   window and Metro caches of ``state_dir`` as the last full build left them), compare
   with a full build of the changed store in a fresh folder (``--no-cache``): time
   ratio, per stage (the CLI's ``stages:`` line) and byte-identical output. Before the
   change, a rebuild with nothing changed: the part of every rebuild that no change
   causes (start-up, reading the caches, writing every published file again); and one
   with a single athlete changed (the first of the 1%, checked against a full build too):
   what every rebuild pays once anything changed, however little.

Times are wall clock on a noisy shared machine: read the ratios, not the seconds.
Projects live in ``bench/.runs/`` (this machine's /tmp is slow at creating files).
``--towns N`` replays the rides in N towns (``bench/towns.py``): N times the data, for
what a rebuild costs as the data grows (its start-up does not grow; a full build does).
Usage::

    .venv/bin/python bench/snapshot.py [--bundled] [--keep] [--workers N] [--towns N]
"""

from __future__ import annotations

import argparse
import filecmp
import math
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

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.raster_v2 import render_tiles as render_tiles_v2  # noqa: E402
from bench.towns import in_towns  # noqa: E402
from heatmetro.core.config import load_config  # noqa: E402
from heatmetro.core.months import window_months  # noqa: E402
from heatmetro.flows.importers.jsonl import write_jsonl  # noqa: E402
from heatmetro.flows.importers.valleybike import valleybike_events  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs  # noqa: E402
from heatmetro.site_builder import tiles as tiles_module  # noqa: E402
from heatmetro.site_builder.load import load_window  # noqa: E402
from heatmetro.site_builder.png import encode_indexed_png, encode_scanlines  # noqa: E402
from heatmetro.site_builder.raster import ZoomPlan, plan_zoom, render_tiles  # noqa: E402
from heatmetro.site_builder.tile_levels import levels_for, sum_by_cell  # noqa: E402
from heatmetro.site_builder.tile_math import Projected, resolution_for_zoom  # noqa: E402
from heatmetro.site_builder.tile_output import PngTreeSink  # noqa: E402
from heatmetro.state.shards import ShardedStore  # noqa: E402
from heatmetro.state.view import ReadView  # noqa: E402
from tests.conftest import compile_checkout  # noqa: E402

HEATMETRO = [sys.executable, "-m", "heatmetro.cli"]
BENCH_SALT = "bench-salt-not-secret"
RUNS = REPO / "bench" / ".runs"
#: One-core builds per format: the machine is noisy, the median is reported.
ONE_CORE_RUNS = 3
#: The caches in state_dir a rebuild reads (the tile manifests are per site): each
#: format's rebuild starts from them as the last full build left them.
STATE_CACHES = (
    "window_cache",  # a folder of files
    "metro_cache.npz",
    "metro_plan_cache.npz",
    "metro_text_cache.npz",
    "metro_gpkg_cache.json",
    "metro_gpkg_cache.gpkg",
    "map_cache.json",
)


def _saved(cache: Path) -> bytes | dict[str, bytes] | None:
    """A cache file's bytes, a cache folder's files' bytes, or None (none there)."""
    if cache.is_dir():
        return {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()}
    return cache.read_bytes() if cache.exists() else None


def _restore(cache: Path, saved: bytes | dict[str, bytes] | None) -> None:
    """Put back what ``_saved`` saved (nothing: none there)."""
    if cache.is_dir():
        shutil.rmtree(cache)
    cache.unlink(missing_ok=True)
    if isinstance(saved, dict):
        cache.mkdir()
        for name, data in saved.items():
            (cache / name).write_bytes(data)
    elif saved is not None:
        cache.write_bytes(saved)


@dataclass(frozen=True)
class Run:
    label: str
    seconds: float
    tiles: int
    tile_seconds: float
    reused: int
    peak_rss_mb: float
    stages: dict[str, tuple[float, float]]  # wall and CPU seconds per stage
    cpu_seconds: float  # user + system, the process and its children
    system_seconds: float  # of which in the kernel (page faults, file creation)
    minor_faults: int  # pages first touched (each zeroed, or copied after a fork)
    own_tiles: int = 0  # without twin layers (drawn with another: ``, drawn with all``)
    own_tile_seconds: float = 0.0
    metro_cache: str = ""  # the CLI's "metro cache: ..." and "metro.gpkg: ..." lines
    window_cache: str = ""  # the CLI's "window cache: ..." line (threshold redone or whole)


def env() -> dict[str, str]:
    return dict(
        os.environ, HEATMETRO_SALT=BENCH_SALT, PYTHONPATH=str(REPO), SOURCE_DATE_EPOCH="1700000000"
    )


def write_config(
    project: Path, res: int, *, out: str = "site", workers: int = 0, fmt: str = "png"
) -> Path:
    path = project / f"{out}.toml"
    path.write_text(
        f'state_dir = "state"\nout_dir = "{out}"\nheat_resolution = {res}\nshards = 1\n'
        f'tile_workers = {workers}\nbasemap_url = ""\ntiles_format = "{fmt}"\n'
    )
    return path


def track_km(events: list[dict]) -> float:
    """Kilometres of GPS track in the activity events (haversine between fixes)."""
    total = 0.0
    for ev in events:
        pts = ev.get("streams", {}).get("latlng") or []
        for (a, b), (c, d) in zip(pts, pts[1:], strict=False):
            p1, p2 = math.radians(a), math.radians(c)
            h = (
                math.sin((p2 - p1) / 2) ** 2
                + math.cos(p1) * math.cos(p2) * math.sin(math.radians(d - b) / 2) ** 2
            )
            total += 2 * 6_371_008.8 * math.asin(math.sqrt(h))
    return total / 1000.0


def ingest(project: Path, events_file: Path, workers: int) -> None:
    cmd = [*HEATMETRO, "ingest", "-c", str(project / "site.toml"), "-w", str(workers)]
    proc = subprocess.run(
        [*cmd, str(events_file)], env=env(), cwd=REPO, capture_output=True, text=True
    )
    if proc.returncode:
        sys.exit(f"ingest failed:\n{proc.stderr}")


def store_bytes(db_path: Path) -> int:
    """Bytes of the trimmed paths and the per-athlete heat aggregates."""
    with sqlite3.connect(db_path) as db:
        paths = db.execute("SELECT coalesce(sum(length(path)), 0) FROM activities").fetchone()[0]
        heat = db.execute("SELECT coalesce(sum(length(heat)), 0) FROM athlete_months").fetchone()[0]
    return int(paths) + int(heat)


def latest_month(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        return str(db.execute("SELECT max(month) FROM athlete_months").fetchone()[0])


def snapshot(label: str, project: Path, config: Path, month: str, *extra: str) -> Run:
    cmd = ["/usr/bin/time", "-v", *HEATMETRO, "snapshot", "-c", str(config), "--month", month]
    cmd += extra
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"snapshot {label} failed:\n{proc.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    layers = re.findall(r"tiles \S+\s+([\d,]+) in ([\d.]+) s .*?([\d,]+) unchanged", proc.stderr)
    # Layers drawn with an earlier one (the same input: a bike share's ride is all).
    own = re.findall(r"tiles \S+\s+([\d,]+) in ([\d.]+) s .*?unchanged\)", proc.stderr)
    return Run(
        label=label,
        seconds=seconds,
        tiles=sum(int(n.replace(",", "")) for n, _, _ in layers),
        tile_seconds=sum(float(s) for _, s, _ in layers),
        own_tiles=sum(int(n.replace(",", "")) for n, _ in own),
        own_tile_seconds=sum(float(s) for _, s in own),
        reused=sum(int(r.replace(",", "")) for _, _, r in layers),
        peak_rss_mb=int(rss.group(1)) / 1024 if rss else float("nan"),
        stages={
            k: (float(w), float(c))
            for k, w, c in re.findall(r"(\w+) ([\d.]+)/([\d.]+)", _stages(proc.stderr))
        },
        cpu_seconds=sum(
            float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr)
        ),
        system_seconds=float(_field(r"System time \(seconds\): ([\d.]+)", proc.stderr)),
        minor_faults=int(_field(r"Minor \(reclaiming a frame\) page faults: (\d+)", proc.stderr)),
        metro_cache="; ".join(
            ln for ln in proc.stderr.splitlines() if ln.startswith(("metro cache:", "metro.gpkg:"))
        ),
        window_cache=next(
            (ln for ln in proc.stderr.splitlines() if ln.startswith("window cache:")), ""
        ),
    )


def zoom_plans(config_path: Path, month: str) -> list[ZoomPlan]:
    """Every layer's plan of every zoom of a project's snapshot, as ``write_heat_tiles``
    makes them."""
    os.environ.setdefault("HEATMETRO_SALT", BENCH_SALT)
    config = load_config(config_path)
    dbs = ShardedStore.open(config.state_dir, config.shards).connect_all()
    try:
        with ReadView(dbs) as view:
            window = load_window(
                view, month, min_athletes=config.min_athletes,
                max_per_athlete=config.max_per_athlete, threshold_ring=config.threshold_ring,
                sport_layers=config.sport_layers, night=config.night_layer,
            )  # fmt: skip
    finally:
        for db in dbs:
            db.close()
    zooms = range(config.min_zoom, config.max_zoom + 1)
    res_of = {z: resolution_for_zoom(z, config.heat_resolution) for z in zooms}
    plans = []
    for lh in window.heat.values():
        if not len(lh.cells):
            continue
        cells, heat = sum_by_cell(lh.cells, lh.heat)
        levels = levels_for(cells, heat, config.heat_resolution, set(res_of.values()))
        for z in zooms:
            lvl = levels[res_of[z]]
            px, py, radius = Projected.of(lvl.lng, lvl.lat, lvl.radius_m).at(z)
            plans.append(plan_zoom(px, py, radius, lvl.level, z))
    return plans


def draw_and_encode(plans: list[ZoomPlan], baseline: bool) -> tuple[list[bytes], float]:
    """PNG bytes of every tile of ``plans`` drawn in this process, and the seconds taken,
    by the current rasteriser or the RENDER_VERSION 2 one (``bench/raster_v2.py``)."""
    header = tiles_module._HEADER
    out = []
    t0 = time.perf_counter()
    for plan in plans:
        every = np.arange(plan.tile_key.size)
        if baseline:
            out += [encode_indexed_png(lv, header) for _, lv in render_tiles_v2(plan, every)]
        else:
            out += [encode_scanlines(rows, header) for _, rows in render_tiles(plan, every)]
    return out, time.perf_counter() - t0


def write_files(root: Path, data: list[bytes]) -> float:
    """Seconds to write ``data`` as a fresh PNG tree the way a snapshot does (40 per folder)."""
    sink = PngTreeSink(root, "all", 99, None)
    t0 = time.perf_counter()
    for i, tile in enumerate(data):
        sink.put(16, i // 40, i % 40, tile)
    sink.close((0.0, 0.0, 0.0, 0.0))
    return time.perf_counter() - t0


def draw_rate(config_path: Path, month: str, scratch: Path, rounds: int = 5) -> str:
    """Draw + encode, current vs the RENDER_VERSION 2 rasteriser, same plans, same process,
    alternating (the median ratio and tiles/s of each on this one core); and, apart, the
    time this machine takes to create the PNG files."""
    plans = zoom_plans(config_path, month)
    draw_and_encode(plans, baseline=False)  # warm both up (allocations, caches)
    draw_and_encode(plans, baseline=True)
    new, old, files = [], [], []
    for r in range(rounds):
        data, s_new = draw_and_encode(plans, baseline=False)
        _, s_old = draw_and_encode(plans, baseline=True)
        files.append(write_files(scratch / f"files-{r}", data))
        new.append(s_new)
        old.append(s_old)
    n = len(data)
    ratios = sorted(o / w for o, w in zip(old, new, strict=True))
    med = rounds // 2
    return (
        f"draw + encode, {n:,} tiles in this process ({rounds} rounds, median): "
        f"{n / sorted(new)[med]:,.0f} tiles/s per core now, {n / sorted(old)[med]:,.0f} with the "
        f"RENDER_VERSION 2 rasteriser: {ratios[med]:.2f}x [{ratios[0]:.2f}x..{ratios[-1]:.2f}x]; "
        f"creating their {n:,} PNG files apart: {sorted(files)[med] * 1000:,.0f} ms "
        f"[{min(files) * 1000:,.0f}..{max(files) * 1000:,.0f}]"
    )


def _field(pattern: str, stderr: str) -> str:
    """A figure of ``/usr/bin/time -v``'s report (0 if it printed none)."""
    found = re.search(pattern, stderr)
    return found.group(1) if found else "0"


def _stages(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("stages ")]
    return lines[-1] if lines else ""


def athlete_ids(db_path: Path) -> list[str]:
    """Every athlete with a row in the store, sorted."""
    with sqlite3.connect(db_path) as db:
        return [
            r[0] for r in db.execute("SELECT DISTINCT athlete_id FROM athlete_months ORDER BY 1")
        ]


def drop_athletes(db_path: Path, gone: list[str]) -> int:
    """Drop the athlete-month rows of ``gone`` (as their opt-outs would); how many athletes."""
    with sqlite3.connect(db_path) as db:
        db.executemany("DELETE FROM athlete_months WHERE athlete_id = ?", [(a,) for a in gone])
        db.commit()
    return len(gone)


def same_tree(a: Path, b: Path) -> bool:
    """Whether two trees hold the same files with the same bytes (the differences, if
    any, are printed: a NO must come with its evidence)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if files_a != files_b:
        only = sorted(set(files_a) ^ set(files_b))
        print(f"{a} vs {b}: {len(only)} files in one only: {only[:5]}", file=sys.stderr)
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(p) for p in files_a], shallow=False)
    if mismatch or errors:
        print(f"{a} vs {b}: differ {mismatch[:5]}, unreadable {errors[:5]}", file=sys.stderr)
    return not mismatch and not errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundled", action="store_true", help="use the two bundled months only")
    parser.add_argument("--keep", action="store_true", help="keep the projects")
    parser.add_argument("--workers", type=int, default=2, help="ingest workers (default 2)")
    parser.add_argument(
        "--towns",
        type=int,
        default=1,
        help="the rides in N towns, N times the data (bench/towns.py)",
    )
    args = parser.parse_args()
    if not Path("/usr/bin/time").is_file():
        sys.exit("needs /usr/bin/time (Debian package `time`) for peak memory")
    cores = len(os.sched_getaffinity(0))
    compile_checkout()  # as pip does for the wheel: no start compiles from source
    RUNS.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="snapshot-", dir=RUNS))
    try:
        csvs = (shared_csvs() if not args.bundled else []) or bundled_csvs()
        events = list(in_towns(list(valleybike_events(csvs)), max(1, args.towns)))
        km = track_km([e for e in events if e.get("kind") == "activity"])
        events_file = root / "events.jsonl.gz"
        write_jsonl(iter(events), events_file)
        projects = {}
        for res in (11, 13):
            project = root / f"res{res}"
            project.mkdir()
            write_config(project, res)  # site.toml
            ingest(project, events_file, args.workers)
            projects[res] = project
        db13 = projects[13] / "state" / "shards" / "0000.db"
        month = latest_month(db13)
        size = {res: store_bytes(p / "state" / "shards" / "0000.db") for res, p in projects.items()}

        p13 = projects[13]
        full11 = snapshot(
            "res 11, png", projects[11], projects[11] / "site.toml", month, "--no-cache"
        )
        runs = [full11]
        one, one_rates, own_rate = {}, {}, {}
        for fmt in ("png", "pmtiles"):
            # ONE_CORE_RUNS builds, each into a fresh site (nothing to reuse): the median.
            ones = []
            for i in range(ONE_CORE_RUNS):
                cfg = write_config(p13, 13, out=f"one-{fmt}-{i}", workers=1, fmt=fmt)
                ones.append(snapshot(f"{fmt}, 1 core #{i + 1}", p13, cfg, month, "--no-cache"))
            runs += ones
            ones.sort(key=lambda r: r.tiles / r.tile_seconds)
            one[fmt] = ones[len(ones) // 2]
            one_rates[fmt] = ", ".join(f"{r.tiles / r.tile_seconds:,.0f}" for r in ones)
            own = sorted(r.own_tiles / r.own_tile_seconds for r in ones if r.own_tile_seconds)
            own_rate[fmt] = own[len(own) // 2] if own else float("nan")
        # Last before the change: the tile manifests then describe these published builds.
        full = {}
        for fmt in ("png", "pmtiles"):
            cfg = write_config(p13, 13, out=fmt, fmt=fmt)
            full[fmt] = snapshot(fmt, p13, cfg, month, "--no-cache")  # fills the window cache
            runs.append(full[fmt])
        draw_line = draw_rate(p13 / "site.toml", month, root / "scratch")
        caches = [p13 / "state" / name for name in STATE_CACHES]
        before = [_saved(c) for c in caches]  # as the last full build left them

        def restore_caches() -> None:
            for c, b in zip(caches, before, strict=True):
                _restore(c, b)  # each format's rebuild starts from them

        # A rebuild with nothing changed: what every rebuild pays before any change.
        unchanged = {}
        for fmt in ("png", "pmtiles"):
            restore_caches()
            unchanged[fmt] = snapshot(f"{fmt}, 0% rebuild", p13, p13 / f"{fmt}.toml", month)
            runs.append(unchanged[fmt])

        def rebuild_and_full(what: str, out: str) -> tuple[dict, dict, dict]:
            """Per format: a rebuild on the last full build's caches, a full build of the
            same store into ``out-FMT``, and whether the two published the same bytes."""
            rebuilt, full_of, same = {}, {}, {}
            for fmt in ("png", "pmtiles"):
                restore_caches()
                rebuilt[fmt] = snapshot(f"{fmt}, {what} rebuild", p13, p13 / f"{fmt}.toml", month)
                cfg = write_config(p13, 13, out=f"{out}-{fmt}", fmt=fmt)
                full_of[fmt] = snapshot(f"{fmt}, {what} full", p13, cfg, month, "--no-cache")
                same[fmt] = same_tree(p13 / fmt, p13 / f"{out}-{fmt}")
                runs.extend([rebuilt[fmt], full_of[fmt]])
            return rebuilt, full_of, same

        # One athlete changed (the first of the 1% below): what every rebuild pays once
        # anything changed, however little: the work that does not follow the change.
        one_percent = athlete_ids(db13)[::100]  # every 100th athlete
        drop_athletes(db13, one_percent[:1])
        single, single_fresh, single_identical = rebuild_and_full("1 athlete", "single")
        changed = drop_athletes(db13, one_percent)
        rebuild, fresh, identical = rebuild_and_full("1%", "fresh")

        first, _ = window_months(month)
        print(
            f"heatmetro snapshot --month {month} (window {first}..{month}), {len(csvs)} "
            f"ValleyBike months in {max(1, args.towns)} town(s), {km:,.0f} km of GPS track, "
            f"zooms 2..16, {cores} cores"
        )
        print("\nstore (trimmed paths + heat aggregates) per km of track")
        for res in (11, 13):
            print(f"  res {res}: {size[res] / km:8,.0f} bytes/km")
        print(f"  ratio res13/res11: {size[13] / size[11]:.2f}x")
        head = f"{'run (res 13 unless said)':<26}{'seconds':>8}{'tiles':>7}{'tile s':>7}"
        print(f"\n{head}{'tiles/s':>8}{'reused':>7}{'RSS MB':>7}")
        for r in runs:
            rate = r.tiles / r.tile_seconds if r.tile_seconds else 0.0
            print(
                f"{r.label:<26}{r.seconds:>8.2f}{r.tiles:>7,}{r.tile_seconds:>7.2f}"
                f"{rate:>8,.0f}{r.reused:>7,}{r.peak_rss_mb:>7,.0f}"
            )
        png = full["png"]
        print(f"\n{draw_line}")
        print(
            f"\nsnapshot time res13/res11 (png): {png.seconds / full11.seconds:.2f}x "
            f"(tile stage {png.tile_seconds / max(full11.tile_seconds, 1e-9):.2f}x)"
        )
        for fmt in ("png", "pmtiles"):
            o, f, r, n = one[fmt], full[fmt], rebuild[fmt], fresh[fmt]
            print(
                f"{fmt}: {o.tiles / o.tile_seconds:,.0f} tiles/s per core (tile stage, "
                f"tile_workers = 1, median of {one_rates[fmt]}; {own_rate[fmt]:,.0f} without the "
                f"layers drawn with another); tile stage {o.tile_seconds / max(f.tile_seconds, 1e-9):.2f}x "
                f"faster on {cores} cores; 1% rebuild ({changed} athletes): "
                f"{r.seconds / n.seconds:.0%} of a full build's time, tile stage "
                f"{r.tile_seconds / max(n.tile_seconds, 1e-9):.0%}, {r.reused:,} of {r.tiles:,} "
                f"tiles reused, byte-identical: {'yes' if identical[fmt] else 'NO'}"
            )
            print(
                f"  CPU time (user + system; steadier than wall time on a shared machine): "
                f"{r.cpu_seconds:.2f} / {n.cpu_seconds:.2f} s = {r.cpu_seconds / n.cpu_seconds:.0%}"
            )
            print(
                f"  of which in the kernel: {r.system_seconds:.2f} / {n.system_seconds:.2f} s "
                f"({r.system_seconds / max(r.cpu_seconds, 1e-9):.0%} / "
                f"{n.system_seconds / max(n.cpu_seconds, 1e-9):.0%} of each one's CPU); pages "
                f"first touched (minor faults): {r.minor_faults:,} / {n.minor_faults:,}"
            )
            u = unchanged[fmt]
            print(
                f"  nothing changed (the floor of any rebuild): {u.seconds / f.seconds:.0%} of a "
                f"full build's time, CPU {u.cpu_seconds / f.cpu_seconds:.0%}; by stage, CPU s: "
                + ", ".join(f"{k} {v[1]:.2f}" for k, v in u.stages.items())
            )
            s1, s1f = single[fmt], single_fresh[fmt]
            print(
                f"  1 athlete changed (the floor once anything changed): {s1.seconds / s1f.seconds:.0%}"
                f" of a full build's time, CPU {s1.cpu_seconds / s1f.cpu_seconds:.0%}, "
                f"byte-identical: {'yes' if single_identical[fmt] else 'NO'}; by stage, CPU s: "
                + ", ".join(f"{k} {v[1]:.2f}" for k, v in s1.stages.items())
            )
            print(f"    its {s1.metro_cache}; {s1.reused:,} of {s1.tiles:,} tiles reused")
            for i, what in enumerate(("wall", "CPU")):
                shares = ", ".join(
                    f"{k} {r.stages.get(k, (0.0, 0.0))[i]:.2f}/{v[i]:.2f}"
                    for k, v in n.stages.items()
                )
                print(f"  {fmt} 1% rebuild/full by stage, {what} s: {shares}")
            print(f"  rebuild's {r.metro_cache}")
            print(f"  rebuild's {r.window_cache}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
