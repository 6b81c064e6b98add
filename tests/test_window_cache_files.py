"""The window cache's files (``window_cache_files``): a rebuild writes what changed only.

A rebuild keeps the base pack and the unchanged layers' files as they are (the same
files, never rewritten), writes the changed athletes to a delta and the changed layer
states anew, and reads back exactly the merged parts; past ``DELTA_SHARE`` everything
goes to one new base. A pack torn or missing is one note and no cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heatmetro.site_builder import window_cache_files
from heatmetro.site_builder.load import WindowParts, part_dtypes
from heatmetro.site_builder.publish import lock_path
from heatmetro.site_builder.threshold_cache import ThresholdState
from heatmetro.site_builder.window import LayerHeat
from heatmetro.site_builder.window_cache import merge_parts
from heatmetro.site_builder.window_cache_files import MANIFEST, OLD_FILE, read_cache, write_cache

DTYPES = part_dtypes([])


def parts(rows: dict[str, list[tuple[int, int]]]) -> WindowParts:
    """Parts of the athletes named, each with (cell, n) rows of ``heat/all``."""
    ids = sorted(rows)
    arrays = {name: np.zeros(0, dt) for name, dt in DTYPES.items()}
    heat = [(i, cell, n) for i, a in enumerate(ids) for cell, n in sorted(rows[a])]
    arrays["heat/all"] = np.array(heat, DTYPES["heat/all"])
    k = len(ids)
    return WindowParts(
        ids, np.arange(k, dtype=np.int64), np.ones(k, bool), np.ones(k, bool), arrays
    )


def state(cells: list[int]) -> ThresholdState:
    c = np.array(cells, np.uint64)
    heat = LayerHeat("all", c, np.ones(len(c)), np.full(len(c), 3, np.uint32))
    return ThresholdState(c, heat)


# 40 athletes, a hundred rows each: one changed is 2.5% of the bytes.
ROWS = {f"a{i:02d}": [(1000 * i + c, 1 + c % 3) for c in range(100)] for i in range(40)}


def _files(cache: Path) -> dict[str, int]:
    """Each file of the cache and its inode (the same inode: never rewritten)."""
    return {p.name: p.stat().st_ino for p in cache.iterdir() if p.suffix == ".bin"}


def _rebuild(cache: Path, changed: dict[str, list[tuple[int, int]]], states: dict) -> WindowParts:
    """What a rebuild does: read the cache, merge the changed athletes' fresh parts in,
    save (keeping what it may)."""
    cached, note = read_cache(cache, "key", DTYPES)
    assert cached is not None, note
    old = cached.parts
    keep = np.array([a not in changed for a in old.ids])
    fresh = parts({a: r for a, r in changed.items() if r})
    merged = merge_parts(old, keep, fresh)
    reuse = cached.reuse(merged.ids, set(fresh.ids))
    write_cache(cache, "key", merged, {a: b"s" for a in merged.ids}, states, reuse)
    return merged


def _read_back(cache: Path) -> WindowParts:
    cached, note = read_cache(cache, "key", DTYPES)
    assert cached is not None, note
    return merge_parts(cached.parts, np.ones(len(cached.parts.ids), bool), parts({}))


def test_a_rebuild_keeps_the_base_and_unchanged_layers_and_writes_the_rest(tmp_path: Path) -> None:
    cache = tmp_path / "window_cache"
    stay, moves = state([1, 2, 3]), state([5, 6])
    write_cache(cache, "key", parts(ROWS), {a: b"s" for a in ROWS}, {"all": moves, "run": stay})
    before = _files(cache)
    manifest = json.loads((cache / MANIFEST).read_text())
    base = manifest["packs"][0]["file"]
    layers = {k: v["file"] for k, v in manifest["layers"].items()}
    # a03 changed, a07 left, a40 is new; ``all`` changed, ``run`` read back as it was.
    changed = {"a03": [(7, 1)], "a07": [], "a40": [(9, 2)]}
    cached, _ = read_cache(cache, "key", DTYPES)
    assert cached is not None and cached.thresholds is not None
    merged = _rebuild(cache, changed, {"all": state([5, 6, 7]), "run": cached.thresholds["run"]})
    after = _files(cache)
    manifest = json.loads((cache / MANIFEST).read_text())
    packs = [p["file"] for p in manifest["packs"]]
    assert packs[0] == base and after[base] == before[base]  # the base: the same file
    assert manifest["packs"][1]["ids"] == ["a03", "a40"]  # the delta: what changed
    assert manifest["layers"]["run"]["file"] == layers["run"]
    assert after[layers["run"]] == before[layers["run"]]
    assert manifest["layers"]["all"]["file"] != layers["all"]
    assert layers["all"] not in after  # a file no manifest names is gone
    assert sorted(after) == sorted([*packs, *(v["file"] for v in manifest["layers"].values())])
    got = _read_back(cache)
    assert got.ids == merged.ids == sorted((set(ROWS) | {"a40"}) - {"a07"})
    for name, arr in merged.arrays.items():
        assert got.arrays[name].tobytes() == arr.tobytes(), name
    assert got.activities.tolist() == merged.activities.tolist()
    # A second rebuild: the delta holds every athlete not in the base, old and new.
    again = _rebuild(cache, {"a11": [(3, 3)]}, {})
    manifest = json.loads((cache / MANIFEST).read_text())
    assert manifest["packs"][0]["file"] == base
    assert manifest["packs"][1]["ids"] == ["a03", "a11", "a40"]
    got = _read_back(cache)
    for name, arr in again.arrays.items():
        assert got.arrays[name].tobytes() == arr.tobytes(), name


def test_past_the_delta_share_everything_goes_to_one_new_base(tmp_path: Path) -> None:
    cache = tmp_path / "window_cache"
    write_cache(cache, "key", parts(ROWS), {a: b"s" for a in ROWS})
    base = json.loads((cache / MANIFEST).read_text())["packs"][0]["file"]
    # 4 of 40 athletes (10%, under 12.5%): a delta; 2 more (15%): one new base.
    _rebuild(cache, {f"a{i:02d}": [(i, 1)] for i in range(4)}, {})
    assert [p["file"] for p in json.loads((cache / MANIFEST).read_text())["packs"]][0] == base
    merged = _rebuild(cache, {f"a{i:02d}": [(i, 2)] for i in range(4, 6)}, {})
    packs = json.loads((cache / MANIFEST).read_text())["packs"]
    assert len(packs) == 1 and packs[0]["file"] != base and packs[0]["ids"] == merged.ids
    assert _files(cache).keys() == {packs[0]["file"]}
    got = _read_back(cache)
    assert got.arrays["heat/all"].tobytes() == merged.arrays["heat/all"].tobytes()


@pytest.mark.parametrize("damage", ["torn", "missing", "unfinished"])
def test_a_torn_or_missing_pack_is_a_note_not_a_cache(tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "window_cache"
    write_cache(cache, "key", parts(ROWS), {a: b"s" for a in ROWS})
    _rebuild(cache, {"a05": [(1, 1)]}, {})  # a base and a delta
    delta = cache / json.loads((cache / MANIFEST).read_text())["packs"][1]["file"]
    data = delta.read_bytes()
    if damage == "torn":  # a crash mid-write: the end of the file never reached the disk
        delta.write_bytes(data[: len(data) // 2])
    elif damage == "missing":
        delta.unlink()
    else:  # the size is right, but the last bytes were never written
        delta.write_bytes(data[:-32] + bytes(32))
    cached, note = read_cache(cache, "key", DTYPES)
    assert cached is None
    assert note.startswith("unreadable window_cache (")
    assert {"torn": "bytes, not", "missing": "FileNotFoundError", "unfinished": "footer"}[
        damage
    ] in note


def test_an_old_single_file_cache_is_a_new_start_and_removed(tmp_path: Path) -> None:
    cache = tmp_path / "window_cache"
    old = tmp_path / OLD_FILE
    old.write_bytes(b"PK\x03\x04 a format-3 cache")
    cached, note = read_cache(cache, "key", DTYPES)
    assert (
        cached is None and note == f"format 3 ({OLD_FILE}), not {window_cache_files.CACHE_FORMAT}"
    )
    write_cache(cache, "key", parts(ROWS), {a: b"s" for a in ROWS})
    assert not old.exists()
    cached, note = read_cache(cache, "key", DTYPES)
    assert cached is not None, note


def test_a_save_after_another_snapshots_save_writes_what_that_one_removed(tmp_path: Path) -> None:
    """Two snapshots sharing a ``state_dir`` (a PNG site and a PMTiles one) read the same
    cache; the other saves first, past the delta share (a new base: the old one removed).
    This one's save kept that base by name: it writes its parts anew instead, so the next
    read is a whole cache, not a missing file and a full read from the store."""
    cache = tmp_path / "window_cache"
    write_cache(cache, "key", parts(ROWS), {a: b"s" for a in ROWS}, {"all": state([1, 2])})
    cached, note = read_cache(cache, "key", DTYPES)  # this snapshot's read
    assert cached is not None, note
    # The other snapshot: a third of the athletes changed, so everything to a new base.
    _rebuild(cache, {a: [(7, 1)] for a in list(ROWS)[:14]}, {"all": state([1, 2])})
    keep = np.array([a != "a03" for a in cached.parts.ids])
    fresh = parts({"a03": [(5, 2)]})
    merged = merge_parts(cached.parts, keep, fresh)
    reuse = cached.reuse(merged.ids, set(fresh.ids))
    write_cache(cache, "key", merged, {a: b"s" for a in merged.ids}, {"all": state([3])}, reuse)
    back = _read_back(cache)
    assert back.ids == merged.ids
    assert back.arrays["heat/all"].tobytes() == merged.arrays["heat/all"].tobytes()


def test_a_save_waits_for_another_save_to_finish(tmp_path: Path) -> None:
    """The writer's lock is what orders two saves: while it is held, a save writes nothing."""
    import fcntl
    import os
    import threading

    cache = tmp_path / "window_cache"
    write_cache(cache, "key", parts(ROWS), {a: b"s" for a in ROWS})
    before = (cache / MANIFEST).read_bytes()
    fd = os.open(lock_path(cache, window_cache_files.WRITER_LOCK), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    other = {f"b{i}": [(5, 1)] for i in range(3)}
    save = threading.Thread(target=write_cache, args=(cache, "key", parts(other), {}))
    try:
        save.start()
        save.join(timeout=1.0)
        assert save.is_alive() and (cache / MANIFEST).read_bytes() == before
    finally:
        os.close(fd)
    save.join(timeout=30)
    assert not save.is_alive()
    assert json.loads((cache / MANIFEST).read_text())["ids"] == sorted(other)
