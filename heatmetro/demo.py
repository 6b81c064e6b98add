"""``heatmetro demo``: the whole job on real ValleyBike rides, end to end.

Converts the bundled rides to stream events (once), ingests them with the real Bytewax
dataflow, publishes the snapshot for the data's last month, and says where the site is.
Rerunning is cheap: ingest resumes from recovery and finds nothing new.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from heatmetro.core.config import Config, load_config
from heatmetro.core.errors import ConfigError, HeatmetroError
from heatmetro.flows.importers.jsonl import write_jsonl
from heatmetro.flows.importers.valleybike import valleybike_events
from heatmetro.flows.importers.valleybike_csv import bundled_csvs, shared_csvs
from heatmetro.flows.runner import run_ingest
from heatmetro.site_builder.snapshot import run_snapshot
from heatmetro.state.shards import ShardedStore, recorded_salt_check, salt_check

DEMO_SALT = "heatmetro-demo-salt"  # demo only: real deployments set HEATMETRO_SALT


def run_demo(
    *, config_path: str | None, workers: int, all_data: bool, serve: bool, quiet: bool = False
) -> int:
    say = (lambda *_: None) if quiet else print
    # Always the demo's own salt, whatever is exported: a store made with another one
    # (an operator's real store, under the same config) is then refused, untouched.
    os.environ["HEATMETRO_SALT"] = DEMO_SALT
    config = load_config(config_path).model_copy(update={"salt": DEMO_SALT})
    _check_demo_store(config)
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
    before = _dead_letters(config)
    # Progress lines for a terminal only, as `heatmetro ingest` prints them.
    progress = not quiet and sys.stderr.isatty()
    dead = run_ingest(config, [str(events)], workers=workers, quiet=not progress) - before
    s = ShardedStore.open(config.state_dir, config.shards).stats()
    say(
        f"2/3 ingested with {workers} worker(s): {s['athletes']:,} athletes, {s['activities']:,} activities "
        f"({', '.join(f'{n:,} {k}' for k, n in sorted(s['activities_by_status'].items()))}), "
        f"{dead} new dead letters"
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


def _check_demo_store(config: Config) -> None:
    """The demo writes only into a store of its own (one made with the demo's salt) or a
    new one: never into an operator's store, nor over a site published from one."""
    made = (config.state_dir / "shards").exists()
    ours = not made or recorded_salt_check(config.state_dir) == salt_check(DEMO_SALT)
    if not ours:
        msg = (
            f"the store in {config.state_dir} is not the demo's (it was made with another "
            "salt): `heatmetro demo` writes only into a store of its own. Run it in an empty "
            "folder, or give it a config (-c) whose state_dir and out_dir are new"
        )
        raise ConfigError(msg)
    if not made and (config.out_dir / "metadata.json").exists():
        msg = (
            f"out_dir {config.out_dir} holds a published site, and the demo's store is new: "
            "the demo would replace that site. Give it a config (-c) whose out_dir is new"
        )
        raise ConfigError(msg)


def _dead_letters(config: Config) -> int:
    """Dead letters on file before this run (the demo reports its own)."""
    try:
        return ShardedStore.open(config.state_dir, config.shards).stats()["dead_letters"]
    except HeatmetroError:  # no store yet
        return 0
