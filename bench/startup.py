"""What one ``heatmetro`` command costs before it does any work: the start-up every CLI run
pays (the test suite makes ~500 of them; a 1% rebuild pays it once in ~5 s).

Three commands on a tiny project (5 bundled ValleyBike events): ``--help`` (the CLI's
imports), ``ingest`` into a new store (Bytewax, the 16 shards' creation) and
``snapshot`` of that store (the page templates, the map, the Metro writer's fork). Each
is timed as a whole process: wall and CPU (user + system, children included), the median
of ``--rounds``, and peak RSS.

``--baseline REV`` also checks REV out into a temporary git worktree and runs the same
commands from it, alternating with this checkout's runs round by round (these machines
drift within minutes): the ratio of the medians, this checkout / REV. Both compile their
modules first (``compileall``), as pip does for an installed wheel.

Usage::

    .venv/bin/python bench/startup.py [--rounds 7] [--baseline e6e0a8e]
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from heatmetro.flows.importers.jsonl import write_jsonl  # noqa: E402
from heatmetro.flows.importers.valleybike import valleybike_events  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import DATA_DIR  # noqa: E402
from tests.conftest import compile_checkout  # noqa: E402

CONFIG = (
    'state_dir = "state"\nout_dir = "site"\nmin_zoom = 10\npublic_max_zoom = 12\nmax_zoom = 14\n'
)


def compile_and_check(root: Path) -> None:
    """Compile ``root``'s modules, and check that PYTHONPATH makes Python import them
    (not the editable install's)."""
    compile_checkout(root)
    where = subprocess.run(
        [sys.executable, "-c", "import heatmetro.state.store as m; print(m.__file__)"],
        env=dict(os.environ, PYTHONPATH=str(root)), cwd=root.parent,
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(where).is_relative_to(root):
        sys.exit(f"PYTHONPATH={root} imports heatmetro from {where}")


def run(root: Path, project: Path, args: list[str]) -> tuple[float, float, float]:
    """Wall s, CPU s (children included), peak RSS MB of ``heatmetro ARGS`` from ``root``."""
    env = dict(
        os.environ,
        PYTHONPATH=str(root),
        HEATMETRO_SALT="bench-salt-not-secret",
        HEATMETRO_QUIET="1",
        SOURCE_DATE_EPOCH="1700000000",
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "heatmetro.cli", *args],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"heatmetro {' '.join(args)} from {root} exited {proc.returncode}: {proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024


def one_round(root: Path, project: Path, events: Path) -> dict[str, tuple[float, float, float]]:
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    (project / "config.toml").write_text(CONFIG)
    shutil.copy(events, project / "events.jsonl")
    return {
        "--help": run(root, project, ["--help"]),
        "ingest": run(root, project, ["ingest", "-c", "config.toml", "events.jsonl"]),
        "snapshot": run(root, project, ["snapshot", "-c", "config.toml", "--month", "2018-06"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", metavar="REV", help="a git revision to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as tmp:
        work = Path(tmp)
        write_jsonl(
            itertools.islice(valleybike_events([DATA_DIR / "june2018.csv.gz"]), 5),
            work / "events.jsonl",
        )
        roots = {"now": REPO}
        if args.baseline:
            base = work / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(base), args.baseline],
                cwd=REPO, check=True,
            )  # fmt: skip
            roots["baseline"] = base
        try:
            for root in roots.values():
                compile_and_check(root)
            runs: dict[str, list[dict[str, tuple[float, float, float]]]] = {k: [] for k in roots}
            for _ in range(args.rounds):
                for name, root in roots.items():
                    runs[name].append(one_round(root, work / "runs" / name, work / "events.jsonl"))
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(work / "baseline")],
                    cwd=REPO, check=False,
                )  # fmt: skip
    print(f"start-up, median of {args.rounds} rounds (wall s / CPU s, children included)")
    for command in ("--help", "ingest", "snapshot"):
        line = f"  {command:<9}"
        med = {}
        for name in roots:
            wall = statistics.median(r[command][0] for r in runs[name])
            cpu = statistics.median(r[command][1] for r in runs[name])
            med[name] = (wall, cpu)
            line += f"  {name}: {wall:.2f} / {cpu:.2f}"
        if "baseline" in med:
            line += (
                f"  ratio now/baseline: wall {med['now'][0] / med['baseline'][0]:.2f}x,"
                f" CPU {med['now'][1] / med['baseline'][1]:.2f}x"
            )
        print(line)
    peak = max(r[c][2] for rs in runs.values() for r in rs for c in r)
    print(f"  peak RSS of any one command: {peak:.0f} MB")


if __name__ == "__main__":
    main()
