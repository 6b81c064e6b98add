"""What the Metro path (hysteresis at the Metro resolution) adds to the ingest hot path.

Trims, maps and counts the bundled June 2018 ValleyBike rides with ``finish_batch``
twice in this process, alternating: as shipped, and with ``metro_paths`` replaced by a
stub that returns empty paths (no Metro crossings at all). Prints the ratio of the two
(best of several rounds, CPU time of this process) and the peak RSS.

Usage: ``.venv/bin/python bench/metro_path.py``.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from heatmetro.core.config import Config  # noqa: E402
from heatmetro.core.contract import ActivityEvent, parse_event  # noqa: E402
from heatmetro.flows import batch  # noqa: E402
from heatmetro.flows.importers.valleybike import valleybike_events  # noqa: E402
from heatmetro.flows.importers.valleybike_csv import bundled_csvs  # noqa: E402
from heatmetro.state.records import PATH_DTYPE  # noqa: E402

CONFIG = Config(salt="bench")


def jobs() -> list[batch.TrimJob]:
    out = []
    june = [p for p in bundled_csvs() if "june2018" in p.name]
    for event in valleybike_events(june):
        ev = parse_event(orjson.dumps(event))
        if isinstance(ev, ActivityEvent):
            tr = ev.streams
            base = {
                "activity_id": ev.activity_id, "athlete_id": ev.athlete_id, "updated_ms": 0,
                "sport_type": ev.sport_type, "layer": "ride", "commute": False,
                "start_s": 1_528_000_000, "utc_offset_s": -14400, "month": "2018-06",
                "hide_override_m": None, "cut_start_m": 200.0, "cut_end_m": 200.0,
                "zone_key": "[]", "fixes_in": len(tr.t), "max_speed_ms": 30.0,
            }  # fmt: skip
            out.append(batch.TrimJob(base, tr.lat, tr.lng, tr.t, (), "bench", len(out)))
    return out


def no_metro(*args: object, **kw: object) -> list[np.ndarray]:
    first_piece = args[5]
    assert isinstance(first_piece, np.ndarray)
    return [np.zeros(0, PATH_DTYPE) for _ in range(len(first_piece))]


def run(js: list[batch.TrimJob]) -> float:
    t0 = time.process_time()  # CPU time: the machine is shared
    for k in range(0, len(js), 256):
        batch.finish_batch(js[k : k + 256], CONFIG)
    return time.process_time() - t0


def main() -> None:
    js = jobs()
    fixes = sum(len(j.t) for j in js)
    real = batch.metro_paths
    with_metro, without = [], []
    for _ in range(7):
        batch.metro_paths = real
        with_metro.append(run(js))
        batch.metro_paths = no_metro  # type: ignore[assignment]
        without.append(run(js))
    batch.metro_paths = real
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(js)} rides, {fixes:,} fixes")
    print(
        f"trim + cells + counts with the Metro path / without: {min(with_metro) / min(without):.2f}x"
    )
    print(f"peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
