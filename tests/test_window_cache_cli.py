"""The incremental snapshot (window cache in ``state_dir``) through the real CLI.

A rebuild after an opt-out or a deleted activity reads only the changed athletes from
the store; it must publish exactly what a full build from scratch publishes: the
athlete's cells gone from the tiles and the Metro counts, byte for byte the same site.
A damaged cache costs one line on stderr and a full read, never a wrong site.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from heatmetro.site_builder.window_cache import CACHE_FORMAT
from heatmetro.site_builder.window_cache_files import STATE_FIELDS
from tests.conftest import write_config
from tests.streams import (
    NORTH_EAST,
    NORTH_WEST,
    NORTHAMPTON_EAST,
    NORTHAMPTON_WEST,
    activity,
    athlete,
    deleted,
    line,
    street_rides,
)
from tests.test_snapshot_cli import (
    SDE_ENV,
    ZOOMS,
    Run,
    along,
    alpha_near,
    csv_rows,
    ingest,
    snapshot,
    tree,
)

# A third street ~1.1 km south of Elm Street, ridden by four people who never change.
SOUTH_WEST = (42.3095, -72.6450)
SOUTH_EAST = (42.3095, -72.6250)
# Three more parallel streets, 1.1 km apart, three riders each: one of them will lower
# their visibility, add a privacy zone, or hide a mile at both ends.
MORE = {"v": 42.2995, "z": 42.2895, "h": 42.2795}
LATER = datetime(2021, 6, 25, tzinfo=UTC)


def _street(prefix: str) -> tuple[tuple[float, float], tuple[float, float]]:
    return (MORE[prefix], SOUTH_WEST[1]), (MORE[prefix], SOUTH_EAST[1])


def _changes() -> list[dict]:
    """Every kind of change that must shrink what is published."""
    mid = along(*_street("z"), 0.5)
    return [
        athlete("n0", updated=LATER, aggregate_opt_out=True),
        deleted("elm2-r1", "elm2", updated=LATER),
        activity("v1-r1", "v1", line(*_street("v")), visibility="only_me", updated=LATER),
        athlete(
            "z1", updated=LATER, privacy_zones=[{"lat": mid[0], "lng": mid[1], "radius_m": 700}]
        ),
        athlete("h1", updated=LATER, hide_start_end_m=1609.0),
    ]


CACHE = Path("state") / "window_cache"


def _streets() -> list[dict]:
    south = line(SOUTH_WEST, SOUTH_EAST)
    north = line(NORTH_WEST, NORTH_EAST)
    return [
        *street_rides(3, prefix="elm"),  # exactly the 3 athletes a cell needs
        *[activity(f"n{i}-r1", f"n{i}", north) for i in range(3)],
        *[activity(f"s{i}-r1", f"s{i}", south) for i in range(4)],
        *[activity(f"{p}{i}-r1", f"{p}{i}", line(*_street(p))) for p in MORE for i in range(3)],
    ]


def _stderr_line(proc_stderr: str, prefix: str) -> str:
    lines = [ln for ln in proc_stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, proc_stderr
    return lines[0]


def _manifest(cache: Path) -> dict:
    return json.loads((cache / "manifest.json").read_text())


def _rewrite_manifest(cache: Path, **changes: object) -> None:
    (cache / "manifest.json").write_text(json.dumps(_manifest(cache) | changes))


def _array_in(cache: Path, layer: str, field: str) -> np.memmap:
    """The array ``field`` of ``layer``'s threshold state, writable in its file."""
    layers = _manifest(cache)["layers"]
    entry = layers[layers[layer].get("as", layer)]
    offset, count = entry["arrays"][field]
    return np.memmap(cache / entry["file"], STATE_FIELDS[field], "r+", offset, (count,))


def _swap(cache: Path, layer: str, field: str) -> None:
    arr = _array_in(cache, layer, field)
    arr[:2] = arr[1::-1].copy()
    arr.flush()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pack_ids(cache: Path) -> list[str]:
    return _manifest(cache)["packs"][0]["ids"]


def _pack(cache: Path) -> Path:
    return cache / _manifest(cache)["packs"][0]["file"]


def _layer_file(cache: Path, layer: str) -> Path:
    return cache / _manifest(cache)["layers"][layer]["file"]


def _full_build_of(project: Path, dst: Path, run_cli: Run) -> Path:
    """A full build from scratch of ``project``'s store: a copy without any cache."""
    dst.mkdir()
    write_config(dst)
    shutil.copytree(project / "state" / "shards", dst / "state" / "shards")
    proc = snapshot(run_cli, dst, env=SDE_ENV)
    assert "window cache: none yet" in proc.stderr
    return dst / "site"


def test_opt_out_deletion_visibility_zone_and_hide_never_survive_a_rebuild(
    project: Path, run_cli: Run, tmp_path: Path
) -> None:
    ingest(run_cli, project, _streets(), "streets")
    first = snapshot(run_cli, project, env=SDE_ENV)
    assert "window cache: none yet" in first.stderr
    assert (project / CACHE / "manifest.json").is_file()
    site = project / "site"
    elm = along(NORTHAMPTON_WEST, NORTHAMPTON_EAST, 0.5)
    north = along(NORTH_WEST, NORTH_EAST, 0.5)
    south = along(SOUTH_WEST, SOUTH_EAST, 0.5)
    gone = {"deleted": elm, "opted out": north}
    gone.update({f"changed ({p})": along(*_street(p), 0.5) for p in MORE})
    for z in ZOOMS:
        for where in (south, *gone.values()):
            assert alpha_near(site, "all", z, *where) > 0, f"a street not drawn at z{z}"
    edges_before = csv_rows(site / "metro" / "edges.csv")

    # One athlete per street makes a change: each street falls below 3 athletes there.
    ingest(run_cli, project, _changes(), "changes")
    again = snapshot(run_cli, project, env=SDE_ENV)
    for z in ZOOMS:
        for what, where in gone.items():
            assert alpha_near(site, "all", z, *where) == 0, f"{what}: still drawn at z{z}"
        assert alpha_near(site, "all", z, *south) > 0, f"unchanged street lost at z{z}"
    edges_after = csv_rows(site / "metro" / "edges.csv")
    assert 0 < len(edges_after) < len(edges_before), "Metro must drop the two streets' edges"

    # Incremental: only the five changed athletes were read from the store. Five of the
    # eight streets changed: more than half the rows in reach, so ``all`` and ``ride``
    # were thresholded whole; the other layers, without those athletes, were kept as
    # they were, and the line says so (it once counted them as redone near changes).
    assert _stderr_line(again.stderr, "window cache:") == (
        "window cache: 14 athletes kept, 5 read from the store; "
        "threshold redone near the changes in 0 of 10 layers, 8 unchanged, 2 computed whole"
    )
    fresh = _full_build_of(project, tmp_path / "fresh", run_cli)
    a, b = tree(site.resolve()), tree(fresh.resolve())
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert differ == [], f"{len(differ)} files differ from a full build, e.g. {differ[:5]}"


def test_a_damaged_cache_is_one_line_and_a_full_read(
    project: Path, run_cli: Run, tmp_path: Path
) -> None:
    ingest(run_cli, project, _streets(), "streets")
    snapshot(run_cli, project, env=SDE_ENV)
    reference = tree((project / "site").resolve())
    cache = project / CACHE
    good = tmp_path / "good"
    shutil.copytree(cache, good)

    damages = {
        "unreadable window_cache (ValueError: pack-": lambda: _truncate(_pack(cache)),  # torn
        "unreadable window_cache (FileNotFoundError)": lambda: _layer_file(cache, "all").unlink(),
        "has no footer of its own": lambda: _layer_file(cache, "all").write_bytes(
            _layer_file(good, "all").read_bytes()[:-32] + bytes(32)  # its end never written
        ),
        "unreadable window_cache (JSONDecodeError": lambda: _truncate(cache / "manifest.json"),
        f"format 999, not {CACHE_FORMAT}": lambda: _rewrite_manifest(cache, format=999),
        "inconsistent window_cache (athlete order)": lambda: _rewrite_manifest(
            cache, ids=_manifest(cache)["ids"][::-1]
        ),
        "inconsistent window_cache (athletes' packs)": lambda: _rewrite_manifest(
            cache,
            where=[[0, 1, len(_manifest(cache)["ids"])]],  # one past the pack's end
        ),
        # The pack's first athlete under another name (still in order).
        "window cache: inconsistent window_cache (athletes' packs)": lambda: _rewrite_manifest(
            cache, packs=[_manifest(cache)["packs"][0] | {"ids": ["!", *_pack_ids(cache)[1:]]}]
        ),
        # The parts are fine: kept, and only the threshold is computed whole.
        "19 athletes kept, 0 read from the store; threshold state of all (order): threshold"
        " computed whole": lambda: _swap(cache, "all", "cells"),
        # How it was thinned, damaged: the same.
        "threshold state of all (thinning order): threshold computed whole": lambda: _swap(
            cache, "all", "published_cells"
        ),
    }
    for expect, damage in damages.items():
        shutil.rmtree(cache)
        shutil.copytree(good, cache)
        damage()
        proc = snapshot(run_cli, project, env=SDE_ENV)
        assert "Traceback" not in proc.stderr
        line_ = _stderr_line(proc.stderr, "window cache:")
        whole = "read all 19 athletes from the store" in line_ or "threshold state" in expect
        assert expect in line_ and whole, line_
        built = tree((project / "site").resolve())
        assert built == reference, f"{expect}: the site changed"
        # ... and the cache was rewritten whole: the next build keeps everyone.
        proc = snapshot(run_cli, project, env=SDE_ENV)
        assert "window cache: 19 athletes kept, 0 read" in proc.stderr, expect
    # --no-cache reads everything, and still leaves a cache that matches the store.
    _truncate(cache / "manifest.json")
    config = project / "config.toml"
    proc = run_cli("snapshot", "-c", config, "--month", "2021-06", "--no-cache", env=SDE_ENV)
    assert "window cache: not used; read all 19 athletes from the store" in proc.stderr
    assert "window cache: 19 athletes kept, 0 read" in snapshot(run_cli, project).stderr


# A wide avenue: riders spread over lanes metres apart, which thinning draws as one
# line through their middle. Lanes 4 m apart (latitude degrees per metre: 1/111,195).
LANE = 4.0 / 111_195.0
# 4 km long: a stretch of its middle keeps some track after its ends are hidden.
AVENUE_WEST, AVENUE_EAST = (42.3145, -72.6600), (42.3145, -72.6100)


def _lane(k: int, f0: float = 0.0, f1: float = 1.0) -> list[list[float]]:
    a, b = along(AVENUE_WEST, AVENUE_EAST, f0), along(AVENUE_WEST, AVENUE_EAST, f1)
    return line((a[0] + k * LANE, a[1]), (b[0] + k * LANE, b[1]))


def test_a_rebuild_after_lane_changes_draws_the_avenue_as_a_full_build(
    project: Path, run_cli: Run, tmp_path: Path
) -> None:
    """Changes on part of a multi-lane avenue move its middle line there: the rebuild
    redoes the threshold and thinning near them only, and publishes what a build from
    scratch publishes (every file, byte for byte)."""
    lanes = [
        activity(f"l{i}-r1", f"l{i}", _lane(k))
        for i, k in enumerate([-2, -1, 0, 0, 1, 2, 3, -1, 1])
    ]
    # Riders of a stretch in the middle only (the rebuild redoes ~150 m around it).
    stretch = [activity(f"s{i}-r1", f"s{i}", _lane(k, 0.35, 0.65)) for i, k in enumerate([-3, 4])]
    ingest(run_cli, project, lanes + stretch, "lanes")
    snapshot(run_cli, project, env=SDE_ENV)
    changes = [
        athlete("s0", updated=LATER, aggregate_opt_out=True),  # the south lane thins
        deleted("s1-r1", "s1", updated=LATER),
        activity("m0-r1", "m0", _lane(5, 0.38, 0.62), updated=LATER),  # a new rider
        activity("l6-r2", "l6", _lane(-4, 0.36, 0.6), updated=LATER),  # one more ride
    ]
    ingest(run_cli, project, changes, "changes")
    again = snapshot(run_cli, project, env=SDE_ENV)
    assert _stderr_line(again.stderr, "window cache:") == (
        "window cache: 8 athletes kept, 4 read from the store; "
        "threshold redone near the changes in 2 of 10 layers, 8 unchanged"
    )
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_config(fresh)
    shutil.copytree(project / "state" / "shards", fresh / "state" / "shards")
    config = fresh / "config.toml"
    proc = run_cli("snapshot", "-c", config, "--month", "2021-06", "--no-cache", env=SDE_ENV)
    assert "window cache: not used" in proc.stderr
    a, b = tree((project / "site").resolve()), tree((fresh / "site").resolve())
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert differ == [], f"{len(differ)} files differ from a full build, e.g. {differ[:5]}"
    # Tiles quantise heat to colours: the drawn heat itself, as each build kept it for
    # the next, must be the same arrays bit for bit too.
    got, want = (_threshold_arrays(p / CACHE) for p in (project, fresh))
    assert want and sorted(got) == sorted(want)
    for name, arr in want.items():
        assert got[name].tobytes() == arr.tobytes(), name


def _threshold_arrays(cache: Path) -> dict[str, np.ndarray]:
    """Every threshold state's arrays in the cache, by layer and field."""
    out = {}
    for layer, entry in _manifest(cache)["layers"].items():
        entry = _manifest(cache)["layers"][entry.get("as", layer)]
        for field in entry["arrays"]:
            out[f"{layer}/{field}"] = np.array(_array_in(cache, layer, field))
    return out


def test_republishing_a_window_after_a_few_changes_is_warned_of(
    project: Path, run_cli: Run
) -> None:
    """Two builds of one window that differ by one person's opt-out show that person's
    routes to whoever compares them (docs/operations.md, section 4): the snapshot says
    so when it happens, and only then."""
    warning = "heatmetro snapshot: warning: the published site already shows the window"
    ingest(run_cli, project, _streets(), "streets")
    first = snapshot(run_cli, project, env=SDE_ENV)
    assert warning not in first.stderr  # nothing published before
    same = snapshot(run_cli, project, env=SDE_ENV)
    assert warning not in same.stderr  # nothing changed: the same site again
    ingest(run_cli, project, [athlete("n0", updated=LATER, aggregate_opt_out=True)], "opt")
    other_month = snapshot(run_cli, project, "2021-07", env=SDE_ENV)
    assert warning not in other_month.stderr  # another window: the monthly release
    ingest(run_cli, project, [athlete("n1", updated=LATER, aggregate_opt_out=True)], "opt2")
    again = snapshot(run_cli, project, "2021-07", env=SDE_ENV)
    assert _stderr_line(again.stderr, warning).startswith(
        f"{warning} ending 2021-07, and one athlete's records changed since the last snapshot"
    )
