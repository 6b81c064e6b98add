"""``heatmetro demo``: the whole job on real ValleyBike rides, end to end.

Converts the bundled rides to stream events (once), ingests them with the real Bytewax
dataflow, publishes the snapshot for the data's last month, and says where the site is.
Rerunning is cheap: ingest resumes from recovery and finds nothing new.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from heatmetro.core.config import load_config
from heatmetro.flows.importers.jsonl import write_jsonl
from heatmetro.flows.importers.valleybike import valleybike_events
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs
from heatmetro.flows.runner import run_ingest
from heatmetro.site_builder.snapshot import run_snapshot
from heatmetro.state.shards import ShardedStore

DEMO_SALT = "heatmetro-demo-salt"  # demo only: real deployments set HEATMETRO_SALT


def run_demo(
    *, config_path: str | None, workers: int, all_data: bool, serve: bool, quiet: bool = False
) -> int:
    os.environ.setdefault("HEATMETRO_SALT", DEMO_SALT)
    say = (lambda *_: None) if quiet else print
    config = load_config(config_path)
    csvs = (shared_csvs() if all_data else []) or bundled_csvs()
    events = (
        config.state_dir.parent
        / "events"
        / ("valleybike-all.jsonl" if all_data else "valleybike.jsonl.gz")
    )
    t0 = time.monotonic()
    if not events.exists():
        events.parent.mkdir(parents=True, exist_ok=True)
        n = write_jsonl(valleybike_events(csvs), events)
        say(f"1/3 converted {len(csvs)} ValleyBike files to {n:,} stream events -> {events}")
    else:
        say(f"1/3 stream events already in {events}")
    dead = run_ingest(config, [str(events)], workers=workers, quiet=quiet)
    s = ShardedStore.open(config.state_dir, config.shards).stats()
    say(
        f"2/3 ingested with {workers} worker(s): {s['athletes']:,} athletes, {s['activities']:,} activities "
        f"({', '.join(f'{n:,} {k}' for k, n in sorted(s['activities_by_status'].items()))}), "
        f"{dead} dead letters"
    )
    month = s["months"][-1] if s["months"] else None
    result = run_snapshot(config, month=month, quiet=True)
    say(f"3/3 {result.summary()}")
    site = config.out_dir.absolute()
    say(f"\ndone in {time.monotonic() - t0:.0f} s. The site is in {site}")
    say(f"  open  file://{site}/index.html")
    say(f"  or    heatmetro serve --directory {site}   (http://127.0.0.1:8000/)")
    say(f"  Metro files: {site}/metro/index.html")
    if serve:
        from heatmetro.site_builder.serve import serve as serve_site

        serve_site(Path(site), 8000)  # prints "Serving DIR at URL (Ctrl-C to stop)"
    return 0
