"""The weekly map reads the week, at the cost of the week.

Two real stores (the real fold and ``StoreWriter``, one shard): one holds only a week's
rides, the other the same rides plus many more around them (other weeks and years, and
rides a second either side of the week's local-date edges), and is made to look like a
store from before the local-start index. The weekly maps published from the two must be
the same bytes, and reading the week from the big store must cost SQLite what it costs
on the small one: virtual-machine steps counted by SQLite's own progress handler.

An old store gets the index the first time it is opened, also by several worker
processes at once. Layers holding the same rows are thresholded once: their heat must
still be what each would get alone, and layers with as many but other rows keep theirs.
"""

from __future__ import annotations

import multiprocessing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import sqlite_utils

from heatmetro.core.config import Config, load_config
from heatmetro.core.errors import HeatmetroError
from heatmetro.site_builder.activity_layers import ActivityPath, layer_heat, per_athlete_counts
from heatmetro.site_builder.weekly import read_week, run_weekly
from heatmetro.site_builder.window import publishable_heat
from heatmetro.state.records import PATH_DTYPE
from heatmetro.state.shards import ShardedStore
from heatmetro.state.store import connect
from heatmetro.state.view import ReadView
from tests.conftest import TEST_SALT, write_config
from tests.streams import activity, athlete
from tests.test_fold_and_store import ELM, NORTH, Harness

OFFSET_S = -4 * 3600  # the rides' local time is UTC-4
FIRST, LAST = date(2021, 6, 14), date(2021, 6, 20)
WHEN = datetime(2021, 6, 21, 3, 30, tzinfo=UTC)


def local(day: date, seconds: int) -> datetime:
    """``seconds`` after local midnight of ``day``, as UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        seconds=seconds - OFFSET_S
    )


def ride(name: str, who: str, start: datetime, points: list[list[float]] = ELM) -> dict:
    return activity(name, who, points, start=start, utc_offset_s=OFFSET_S)


def in_week() -> list[dict[str, Any]]:
    rides = [ride(f"w{i}", f"a{i}", local(FIRST + timedelta(days=i), 15 * 3600)) for i in range(6)]
    # The week's first and last local seconds belong to it.
    rides.append(ride("first-second", "a0", local(FIRST, 0), NORTH))
    rides.append(ride("last-second", "a1", local(LAST, 86_399), NORTH))
    # Never on the map: a ride only its athlete may see, and an opted-out athlete's.
    rides.append(ride("private", "a2", local(FIRST, 9 * 3600)) | {"visibility": "only_me"})
    rides.append(athlete("out", aggregate_opt_out=True))
    rides.append(ride("opted-out", "out", local(FIRST, 9 * 3600)))
    return rides


def around_week() -> list[dict[str, Any]]:
    # A second before and after the week (local dates), on the same street, by the same
    # people: read by mistake, they would change the counts and the heat.
    rides = [ride(f"edge-before-{i}", f"a{i}", local(FIRST, -1)) for i in range(5)]
    rides += [ride(f"edge-after-{i}", f"a{i}", local(LAST, 86_400)) for i in range(5)]
    for week in range(1, 25):  # other weeks either side, last year's too
        for sign, years in ((-1, 0), (1, 0), (-1, 1)):
            day = FIRST + timedelta(days=sign * 7 * week - 365 * years)
            rides.append(ride(f"o{week}{sign}{years}", f"b{week % 7}", local(day, 12 * 3600)))
    return rides


def build_store(folder: Path, events: list[dict[str, Any]]) -> Config:
    folder.mkdir()
    write_config(folder, shards=1)
    config = load_config(folder / "config.toml", salt=TEST_SALT)
    store = ShardedStore.open(config.state_dir, config.shards, create=True)
    db = store.connect(0)
    h = Harness(config, db)
    h.send(*events)
    h.writer.refresh()
    db.close()
    # What run_weekly checks for: a published monthly site to live in.
    config.out_dir.mkdir()
    (config.out_dir / "index.html").write_text("monthly site\n")
    (config.out_dir / "metadata.json").write_text("{}\n")
    return config


def make_old(config: Config) -> None:
    """The store as a version before the local-start index left it."""
    db = ShardedStore.open(config.state_dir, config.shards).connect(0)
    db.execute("DROP INDEX activities_by_local_start")
    db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm007_local_start'")
    db.close()


def week_read_cost(config: Config) -> tuple[int, list[str]]:
    """SQLite VM steps (in tens) spent reading the week; the activities' sports
    and start times read, to show it was the week."""
    dbs: list[sqlite_utils.Database] = ShardedStore.open(
        config.state_dir, config.shards
    ).connect_all()
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # 0: go on

    with ReadView(dbs) as view:
        for db in dbs:
            db.conn.set_progress_handler(count, 10)
        acts = read_week(view, FIRST, LAST)
    for db in dbs:
        db.close()
    return steps[0], sorted(f"{a.athlete}/{a.start_s}" for a in acts)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_weekly_reads_only_the_week_and_costs_what_the_week_costs(tmp_path: Path) -> None:
    small = build_store(tmp_path / "small", in_week())
    big = build_store(tmp_path / "big", in_week() + around_week())
    make_old(big)

    small_steps, small_acts = week_read_cost(small)
    big_steps, big_acts = week_read_cost(big)  # reopening the old store adds the index
    assert big_acts == small_acts and len(small_acts) == 8
    # A scan of the big store's 90 rows costs several times the week's 8; the index
    # range costs the week's rows plus a descent of the index.
    assert big_steps <= small_steps * 1.2 + 2, (small_steps, big_steps)

    # What a visitor gets: the same weekly map, byte for byte.
    got = []
    for config in (small, big):
        result = run_weekly(config, until=LAST.isoformat(), when=WHEN, quiet=True)
        assert (result.athletes, result.activities) == (6, 8)
        got.append(files((config.out_dir / "weekly").resolve()))
    assert got[0] == got[1]
    assert any(name.endswith(".png") for name in got[0])


def _path(lat: float, n: int) -> np.ndarray:
    """A straight east-west track of ``n`` heat cells at latitude ``lat``."""
    path = np.zeros(n, PATH_DTYPE)
    path["cell"] = [h3.latlng_to_cell(lat, -72.64 + i * 0.0001, 13) for i in range(n)]
    path["t"] = np.arange(n, dtype=np.float32)
    return path


def test_layers_with_the_same_rows_get_the_same_heat_and_others_their_own() -> None:
    # Six people ride one street; the same six run another, as long: the ride and run
    # layers hold as many rows, but not the same ones. All rides start at 14:00 UTC in
    # June in Massachusetts (no night layer rows).
    start = int(datetime(2021, 6, 15, 14, tzinfo=UTC).timestamp())
    rides = [ActivityPath(i, "ride", "Ride", start, OFFSET_S, _path(42.31, 40)) for i in range(6)]
    runs = [ActivityPath(i, "run", "Run", start, OFFSET_S, _path(42.32, 40)) for i in range(6)]
    settings: dict[str, Any] = dict(sport_layers=("Run",), night=False)
    for acts, same in ((rides, {"all", "ride"}), (rides + runs, {"run", "sport_run"})):
        got = layer_heat(acts, group_layers=True, min_athletes=5, max_per_athlete=10,
                         threshold_ring=1, **settings)  # fmt: skip
        assert same <= set(got)
        # Each layer as if it were thresholded alone.
        for name, rows in per_athlete_counts(acts, group_layers=True, **settings).items():
            alone = publishable_heat(name, rows, 5, 10, threshold_ring=1)
            if not len(alone.cells):
                assert name not in got
                continue
            assert got[name].layer == name
            for field in ("cells", "heat", "athletes"):
                np.testing.assert_array_equal(getattr(got[name], field), getattr(alone, field))
        first, second = sorted(same)
        np.testing.assert_array_equal(got[first].cells, got[second].cells)
    assert not np.array_equal(got["ride"].cells, got["run"].cells)


def _open(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()  # every process opens the store at the same moment
    try:
        connect(Path(path)).close()
        results.put("ok")
    except HeatmetroError as exc:
        results.put(str(exc))


def test_an_old_store_opened_by_several_workers_at_once_is_upgraded_once(
    tmp_path: Path,
) -> None:
    # ``ingest -w N`` after an upgrade: every worker opens the store at once, each one
    # finding the local-start index missing; all must start, and the index be made once.
    config = build_store(tmp_path / "old", in_week() + around_week())
    make_old(config)
    path = str(config.store_dir / "0000.db")
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [results.get(timeout=5) for _ in workers] == ["ok"] * 4
    db = connect(Path(path))
    assert db.execute(
        "SELECT count(*) FROM sqlite_master WHERE name = 'activities_by_local_start'"
    ).fetchone() == (1,)
    assert db.execute(
        "SELECT count(*) FROM _sqlite_migrations WHERE name = 'm007_local_start'"
    ).fetchone() == (1,)
    db.close()
