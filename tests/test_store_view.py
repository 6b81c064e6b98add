"""The snapshot's read view: consistent, complete, and never in the way of ingest.

Real SQLite files in WAL mode, written by the real fold and ``StoreWriter``. The
"ingest" connection has no busy timeout at all, so any lock the snapshot held across
its read would make a commit fail at once instead of merely waiting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from heatmetro.core.config import Config
from heatmetro.site_builder.load import load_window
from heatmetro.site_builder.window import WindowData
from heatmetro.state.store import connect
from heatmetro.state.view import ReadView
from heatmetro.state.writer import StoreWriter
from tests.streams import activity, athlete
from tests.test_fold_and_store import ELM, NORTH, Harness, at


def _events(prefix: str, n: int, hours0: float = 0) -> list[dict[str, Any]]:
    ev: list[dict[str, Any]] = []
    for i in range(n):
        a = f"{prefix}{i}"
        ev.append(athlete(a, hide_start_end_m=0))
        ev.append(activity(f"{a}-elm", a, ELM, start=at(hours0 + i)))
        ev.append(activity(f"{a}-north", a, NORTH[::-1], start=at(hours0 + i + 0.5)))
    return ev


def _window(db: Any, config: Config) -> WindowData:
    with ReadView([db]) as view:
        return load_window(view, "2021-06", min_athletes=3, max_per_athlete=10, threshold_ring=1)


def _assert_same(a: WindowData, b: WindowData) -> None:
    assert (a.athletes, a.activities) == (b.athletes, b.activities)
    for layer in a.heat:
        np.testing.assert_array_equal(a.heat[layer].cells, b.heat[layer].cells)
        np.testing.assert_array_equal(a.heat[layer].heat, b.heat[layer].heat)
        np.testing.assert_array_equal(a.heat[layer].athletes, b.heat[layer].athletes)
        for part in (a.edges, a.hexagons, a.od):
            other = {id(a.edges): b.edges, id(a.hexagons): b.hexagons, id(a.od): b.od}[id(part)]
            assert part[layer].tobytes() == other[layer].tobytes()


def _writer(db: Any, config: Config, *, refresh_every_s: float) -> Harness:
    h = Harness(config, db)
    h.writer = StoreWriter.for_config(db, config, refresh_every_s=refresh_every_s)
    return h


def test_view_reads_what_was_committed_when_it_began_and_never_blocks_commits(
    config: Config, tmp_path: Path
) -> None:
    base = _events("a", 5)
    # The store as ingest leaves it mid-run: aggregates not rebuilt yet (dirty months).
    live = connect(tmp_path / "live.db")
    ingest = _writer(live, config, refresh_every_s=1e9)
    ingest.send(*base)
    assert live.execute("SELECT count(*) FROM dirty_months").fetchone()[0] > 0
    # The reference: the same events, aggregates rebuilt, nothing else.
    live.execute("VACUUM INTO ?", [str(tmp_path / "ref.db")])
    ref = connect(tmp_path / "ref.db")
    StoreWriter.for_config(ref, config).refresh()
    expected = _window(ref, config)
    assert expected.athletes == 5 and len(expected.heat["all"].cells) > 10

    live.execute("PRAGMA busy_timeout=0")  # a commit that had to wait would fail at once
    reader = connect(tmp_path / "live.db", create=False)
    with ReadView([reader]) as view:
        # ingest keeps committing (new athletes in the same month, then a rebuild) ...
        ingest.send(*_events("b", 4, hours0=10))
        ingest.writer.refresh()
        got = load_window(view, "2021-06", min_athletes=3, max_per_athlete=10, threshold_ring=1)
    # ... and the view still shows exactly what was committed when it began.
    _assert_same(got, expected)
    assert _window(reader, config).athletes == 9  # a new view sees the new commits
