"""The window cache on disk: ``state_dir/window_cache/``, a manifest and the files it names.

A rebuild where 1% of the athletes changed should write about that much, not the whole
cache again (hundreds of megabytes: the writing cost more CPU than the rest of the
cache). So the cache is files written once each under a fresh name, and a small
``manifest.json`` saying which of them hold what:

* the athletes' parts in at most two packs (``pack-*.bin``): a base, and a delta holding
  every athlete not in the base (read from the store since it was written, or from an
  older delta). A rebuild keeps the base as it is and writes a new delta; when the delta
  would hold more than ``DELTA_SHARE`` of the parts' bytes, or the base that much of
  athletes gone or changed, everything goes to one new base instead (so at most about
  that share of the files is dead, and a read merges few runs). With 1% of the athletes
  changed per rebuild, that is a delta of 1% to 12.5% of the parts, and a new base every
  ~12 rebuilds. Within a pack the athletes are numbered as in a ``WindowParts`` of their
  own, so a read merges the packs as it merges fresh parts (``window_cache.merge_parts``);
* each layer's threshold state in a file of its own (``layer-*.bin``), kept when the
  rebuild left it unchanged (its arrays read back, or the same bytes): a changed state
  is rewritten whole, as the heat reads it as whole arrays, each a view of its file.

The manifest is written last (a temporary file, then a rename): a reader sees the old
cache or the new one. Files it no longer names are removed after it; one being written
when a crash came is named by no manifest, and goes with the next write. Every file ends
with a footer holding its token and size (``array_files``), so a file torn by a crash
(short, or never finished) or missing means one line and a full read, never wrong parts.
A cache of the single-file format before (``window_cache.npz``) is read as a new start,
and removed by the first write.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heatmetro.core.spliced_rows import SplicedRows
from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.array_files import map_arrays, new_token, write_arrays
from heatmetro.site_builder.load import WindowParts
from heatmetro.site_builder.publish import out_dir_lock
from heatmetro.site_builder.split_rows import athlete_bounds, row_runs
from heatmetro.site_builder.threshold_cache import ThresholdState
from heatmetro.site_builder.window import VOTE_DTYPE, LayerHeat, Thinned, is_open

CACHE_FORMAT = 4
CACHE_DIR = "window_cache"
MANIFEST = "manifest.json"
#: The single file of format 3 and before, in ``state_dir``.
OLD_FILE = "window_cache.npz"
WRITER_LOCK = "writer"  # ``write_cache``'s lock (``publish.lock_path``) beside the cache
OTHER_KEY = "built for another window, configuration or code version"
#: Past this share of the parts' bytes outside the base (or dead in it): one new base.
DELTA_SHARE = 0.125
PER_ID = {"activities": np.dtype(np.int64), "has_rows": np.dtype(bool),
          "has_paths": np.dtype(bool)}  # fmt: skip

_STATE: dict[str, np.dtype] = {"open": np.dtype(np.uint64), "cells": np.dtype(np.uint64),
          "heat": np.dtype(np.float64), "athletes": np.dtype(np.uint32)}  # fmt: skip
# How a layer was thinned (``window.Thinned``), when it was.
_THINNED: dict[str, np.dtype] = {"published_cells": np.dtype(np.uint64), "published_heat": np.dtype(np.float64),
            "published_athletes": np.dtype(np.uint32), "middle": np.dtype(np.uint64),
            "target": np.dtype(np.uint64), "votes": VOTE_DTYPE}  # fmt: skip
#: The arrays of a layer's threshold state file, by name.
STATE_FIELDS = _STATE | _THINNED


@dataclass(frozen=True)
class CachedParts:
    """The parts the cache holds: ``ids`` (sorted), each in a pack (``sources``, with
    its own numbering) at ``pack[i]``, index ``local[i]`` there. A pack may hold athletes
    no longer named (changed since): they are skipped."""

    ids: list[str]
    sources: list[WindowParts]
    pack: np.ndarray
    local: np.ndarray

    @classmethod
    def of(cls, parts: WindowParts) -> CachedParts:
        n = len(parts.ids)
        return cls(parts.ids, [parts], np.zeros(n, np.int64), np.arange(n, dtype=np.int64))


@dataclass(frozen=True)
class Reuse:
    """What a write may keep of the cache read: its manifest's packs and layer files
    (with the arrays read from these), and per athlete of the parts written, the pack
    and index it came from (-1: read from the store)."""

    packs: list[dict]
    layers: list[tuple[dict, dict[str, np.ndarray]]]
    origin_pack: np.ndarray
    origin_local: np.ndarray


@dataclass(frozen=True)
class Cached:
    """What the cache holds: the parts, the stamps they were read under, and the
    threshold states computed from them (None, with why not, when unusable)."""

    parts: CachedParts
    stamps: dict[str, bytes]
    thresholds: dict[str, ThresholdState] | None
    threshold_note: str
    packs: list[dict]
    layers: list[tuple[dict, dict[str, np.ndarray]]]

    def reuse(self, ids: list[str], fresh: set[str]) -> Reuse:
        """``Reuse`` for writing parts of athletes ``ids``: those not in ``fresh`` kept
        from here."""
        at = {a: i for i, a in enumerate(self.parts.ids)}
        index = np.array([-1 if a in fresh else at[a] for a in ids], np.int64)
        kept = index >= 0
        pack = np.where(kept, self.parts.pack[index], -1)
        local = np.where(kept, self.parts.local[index], -1)
        return Reuse(self.packs, self.layers, pack, local)


def remove_cache(state_dir: Path) -> None:
    """Remove the window cache in ``state_dir`` (either format)."""
    (state_dir / CACHE_DIR / MANIFEST).unlink(missing_ok=True)  # first: no cache reads as one
    shutil.rmtree(state_dir / CACHE_DIR, ignore_errors=True)
    (state_dir / OLD_FILE).unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading


def read_cache(directory: Path, key: str, dtypes: dict[str, np.dtype]) -> tuple[Cached | None, str]:
    """What the cache in ``directory`` holds, or (None, why not) when it cannot be used."""
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        if (directory.parent / OLD_FILE).exists():
            return None, f"format 3 ({OLD_FILE}), not {CACHE_FORMAT}"
        return None, "none yet"
    try:
        manifest = json.loads(manifest_path.read_bytes())
        if manifest.get("format") != CACHE_FORMAT:
            return None, f"format {manifest.get('format')!r}, not {CACHE_FORMAT}"
        if manifest.get("key") != key:
            return None, OTHER_KEY
        ids = manifest["ids"]
        stamps = {a: bytes.fromhex(s) for a, s in manifest["stamps"].items()}
        packs = manifest["packs"]
        sources = [_read_pack(directory, entry, dtypes) for entry in packs]
        where = np.array(manifest["where"], np.int64).reshape(-1, 3)
        layers, states, same = _read_layers(directory, manifest.get("layers", {}))
    except Exception as exc:  # noqa: BLE001 - any unreadable cache means: read the store
        return None, f"unreadable {directory.name} ({_why(exc)})"
    problem = _inconsistency(ids, sources, where, dtypes)
    if problem:
        return None, f"inconsistent {directory.name} ({problem})"
    counts = where[:, 2]
    pack = np.repeat(where[:, 0], counts)
    local = np.repeat(where[:, 1] - np.cumsum(counts) + counts, counts) + np.arange(len(ids))
    parts = CachedParts(ids, sources, pack, local)
    thresholds, threshold_note = _threshold_states(states, same)
    return Cached(parts, stamps, thresholds, threshold_note, packs, layers), ""


def _why(exc: Exception) -> str:
    if isinstance(exc, ValueError) and not isinstance(exc, UnicodeDecodeError):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return type(exc).__name__


def _read_pack(directory: Path, entry: dict, dtypes: dict[str, np.dtype]) -> WindowParts:
    aliases = entry["aliases"]
    stored = {f"part/{n}": dt for n, dt in dtypes.items() if n not in aliases}
    arrays = _map(directory, entry, PER_ID | stored)
    parts = {n: arrays[f"part/{aliases.get(n, n)}"] for n in dtypes}
    a = arrays
    return WindowParts(entry["ids"], a["activities"], a["has_rows"], a["has_paths"], parts)


def _map(directory: Path, entry: dict, dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    name = entry["file"]
    token = name.removesuffix(".bin").rpartition("-")[2]
    layout = {k: (int(v[0]), int(v[1])) for k, v in entry["arrays"].items()}
    return map_arrays(directory / name, token, int(entry["size"]), layout, dtypes)


def _read_layers(
    directory: Path, layers: dict[str, dict]
) -> tuple[
    list[tuple[dict, dict[str, np.ndarray]]], dict[str, dict[str, np.ndarray]], dict[str, str]
]:
    """The layer files (each entry with its arrays), the arrays of each layer's state,
    and the layers stored as another's."""
    files: dict[str, tuple[dict, dict[str, np.ndarray]]] = {}
    states: dict[str, dict[str, np.ndarray]] = {}
    same: dict[str, str] = {}
    for layer in sorted(layers):
        entry = layers[layer]
        if "as" in entry:
            same[layer] = entry["as"]
            entry = layers[entry["as"]]
        if entry["file"] not in files:
            fields = _STATE | _THINNED if "votes" in entry["arrays"] else _STATE
            files[entry["file"]] = (entry, _map(directory, entry, fields))
        states[layer] = files[entry["file"]][1]
    return list(files.values()), states, same


def _inconsistency(
    ids: object, sources: list[WindowParts], where: np.ndarray, dtypes: dict[str, np.dtype]
) -> str:
    if not isinstance(ids, list) or not all(isinstance(a, str) for a in ids):
        return "athlete ids"
    if ids != sorted(set(ids)):
        return "athlete order"
    for parts in sources:
        if not isinstance(parts.ids, list) or parts.ids != sorted(set(parts.ids)):
            return "pack athletes"
        for name in PER_ID:
            if getattr(parts, name).shape != (len(parts.ids),):
                return name
        for name, arr in parts.arrays.items():
            if arr.dtype != dtypes[name] or arr.ndim != 1:
                return name
            if len(arr):
                who = arr["athlete"]
                # Sorted (one pass): then the ends are the least and the greatest.
                if np.any(who[1:] < who[:-1]) or who[0] < 0 or who[-1] >= len(parts.ids):
                    return f"{name} athletes"
    # Each named athlete where the manifest says, under that id.
    if int(where[:, 2].sum()) != len(ids) or np.any(where < 0):
        return "athletes' packs"
    named: list[str] = []
    for pack, start, count in where.tolist():
        if pack >= len(sources) or start + count > len(sources[pack].ids):
            return "athletes' packs"
        named += sources[pack].ids[start : start + count]
    return "" if named == ids else "athletes' packs"


def _threshold_states(
    states: dict[str, dict[str, np.ndarray]], stored_as: dict[str, str] | None = None
) -> tuple[dict[str, ThresholdState] | None, str]:
    """The threshold states, checked (sorted distinct cells, matching arrays, every
    drawn cell one that met the threshold), or (None, what is wrong). ``stored_as``: the
    layers whose arrays are another's (``ride`` as ``all``): checked once."""
    out: dict[str, ThresholdState] = {}
    stored_as = stored_as or {}
    for layer, arrays in states.items():
        twin = out.get(stored_as.get(layer, layer))
        if twin is not None:  # the same arrays, already checked: under this layer's name
            out[layer] = _renamed(twin, layer)
            continue
        for name, arr in arrays.items():
            if arr.dtype != (_STATE | _THINNED)[name] or arr.ndim != 1:
                return None, f"threshold state of {layer} ({name})"
        cells, open_cells = arrays["cells"], arrays["open"]
        if not len(cells) == len(arrays["heat"]) == len(arrays["athletes"]):
            return None, f"threshold state of {layer} (lengths)"
        if not (_increasing(cells) and _increasing(open_cells)):
            return None, f"threshold state of {layer} (order)"
        if len(cells) and not is_open(cells, open_cells).all():
            return None, f"threshold state of {layer} (drawn below threshold)"
        drawn = LayerHeat(layer, cells, arrays["heat"], arrays["athletes"])
        thinned = None
        if "votes" in arrays:
            pub = arrays["published_cells"]
            same = len(pub) == len(arrays["published_heat"]) == len(arrays["published_athletes"])
            if not (same and len(pub) == len(arrays["middle"]) == len(arrays["target"])):
                return None, f"threshold state of {layer} (thinning lengths)"
            cells_of_votes = np.ascontiguousarray(arrays["votes"]["cell"])  # compared faster
            if not (_increasing(pub) and np.all(cells_of_votes[1:] >= cells_of_votes[:-1])):
                return None, f"threshold state of {layer} (thinning order)"
            published = LayerHeat(
                layer, pub, arrays["published_heat"], arrays["published_athletes"]
            )
            thinned = Thinned(published, arrays["middle"], arrays["target"], arrays["votes"])
        out[layer] = ThresholdState(open_cells, drawn, thinned)
    return out, ""


def _renamed(state: ThresholdState, layer: str) -> ThresholdState:
    """``state`` (its arrays shared) as the state of ``layer``."""
    d, t = state.drawn, state.thinned
    drawn = LayerHeat(layer, d.cells, d.heat, d.athletes)
    if t is not None:
        p = t.published
        t = Thinned(LayerHeat(layer, p.cells, p.heat, p.athletes), t.middle, t.target, t.votes)
    return ThresholdState(state.open_cells, drawn, t)


def _increasing(cells: np.ndarray) -> bool:
    return bool(np.all(cells[1:] > cells[:-1]))  # not np.diff: unsigned, it wraps around


# --------------------------------------------------------------------------- writing


def write_cache(
    directory: Path,
    key: str,
    parts: WindowParts,
    stamps: dict[str, bytes],
    thresholds: dict[str, ThresholdState] | None = None,
    reuse: Reuse | None = None,
) -> None:
    """Save ``parts`` (and the threshold states computed from them) in ``directory``,
    keeping what ``reuse`` allows of the cache there: readers see the old cache or the
    new one, never a mix.

    Not synced to disk: a file torn by a crash fails the checks on read (a full read).
    """
    directory.mkdir(parents=True, exist_ok=True)
    # Two snapshots sharing a ``state_dir`` (a PNG site and a PMTiles one) save one after
    # the other, so neither removes the files the other has just written for its manifest.
    with out_dir_lock(directory, WRITER_LOCK):
        if reuse is not None and not all((directory / name).exists() for name in _names(reuse)):
            reuse = None  # another snapshot's save has removed a file read: all written anew
        _write_locked(directory, key, parts, stamps, thresholds, reuse)


def _names(reuse: Reuse) -> set[str]:
    """The files of the cache read that a write keeping ``reuse`` names again."""
    layers = {entry["file"] for entry, _ in reuse.layers if "file" in entry}
    return {entry["file"] for entry in reuse.packs} | layers


def _write_locked(
    directory: Path,
    key: str,
    parts: WindowParts,
    stamps: dict[str, bytes],
    thresholds: dict[str, ThresholdState] | None,
    reuse: Reuse | None,
) -> None:
    written: list[Path] = []
    tmp = temporary_for(directory / MANIFEST)
    try:
        packs, where = _write_parts(directory, parts, reuse, written)
        layers = _write_layers(directory, thresholds, reuse, written)
        manifest = {
            "format": CACHE_FORMAT,
            "key": key,
            "ids": parts.ids,
            "stamps": {a: s.hex() for a, s in stamps.items()},
            "packs": packs,
            "where": where,
            "layers": layers,
        }
        tmp.write_bytes(json.dumps(manifest).encode())
        tmp.replace(directory / MANIFEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for path in written:
            path.unlink(missing_ok=True)
        raise
    named = {e["file"] for e in packs} | {e["file"] for e in layers.values() if "file" in e}
    for path in directory.glob("*.bin"):  # what no manifest names any more
        if path.name not in named:
            path.unlink(missing_ok=True)
    (directory.parent / OLD_FILE).unlink(missing_ok=True)


def _write_parts(
    directory: Path, parts: WindowParts, reuse: Reuse | None, written: list[Path]
) -> tuple[list[dict], list[list[int]]]:
    """The packs of ``parts`` (a kept base and a new delta, or one new base) and where
    each athlete is: runs of (pack, first index there, count) in id order.

    The base kept is the old pack holding most of the athletes, unless more than
    ``DELTA_SHARE`` of the parts' bytes would be outside it, or of its bytes (or
    athletes) dead: changed or gone."""
    n = len(parts.ids)
    delta = None
    if reuse is not None and reuse.packs and n:
        base = int(np.argmax(np.bincount(reuse.origin_pack + 1, minlength=2)[1:]))
        in_base = reuse.origin_pack == base
        rest = np.flatnonzero(~in_base)
        delta = take_athletes(parts, rest) if len(rest) else None
        if not _worth_keeping(parts, in_base, delta, reuse.packs[base]):
            delta = None
        elif delta is None:
            delta = parts  # no delta to write (nothing outside the base)
    if reuse is None or delta is None:
        return [_write_pack(directory, parts, written)], [[0, 0, n]] if n else []
    packs = [reuse.packs[base]]
    if delta is not parts:
        packs.append(_write_pack(directory, delta, written))
    pack = np.where(in_base, 0, 1)
    local = np.where(in_base, reuse.origin_local, np.cumsum(~in_base) - 1)
    # A new run where the pack changes or the index there does not go on by one.
    breaks = np.flatnonzero((pack[1:] != pack[:-1]) | (local[1:] != local[:-1] + 1)) + 1
    starts = np.concatenate(([0], breaks))
    counts = np.diff(np.append(starts, n))
    where = np.stack([pack[starts], local[starts], counts], axis=1)
    return packs, where.tolist()


def _worth_keeping(
    parts: WindowParts, in_base: np.ndarray, delta: WindowParts | None, base: dict
) -> bool:
    total = _stored_bytes(parts)
    outside = _stored_bytes(delta) if delta is not None else 0
    dead = base["bytes"] - (total - outside)
    dead_athletes = len(base["ids"]) - int(np.count_nonzero(in_base))
    return (
        outside <= DELTA_SHARE * total
        and dead <= DELTA_SHARE * base["bytes"]
        and dead_athletes <= DELTA_SHARE * len(base["ids"])
    )


def _stored_bytes(parts: WindowParts) -> int:
    """The bytes of the parts' rows (a layer repeating another counted once)."""
    split = getattr(parts.arrays, "split", None)
    each = (split(n) for n in parts.arrays) if split is not None else parts.arrays.values()
    return sum({id(a): a.nbytes for a in each}.values())


def _write_pack(directory: Path, parts: WindowParts, written: list[Path]) -> dict:
    token = new_token()
    path = directory / f"pack-{token}.bin"
    # A layer that holds every activity (all rides) repeats ``all``: stored once.
    aliases: dict[str, str] = {}
    arrays = {name: getattr(parts, name) for name in PER_ID}
    for name, arr in parts.arrays.items():
        same = f"{name.split('/')[0]}/all"
        if name != same and same in parts.arrays and _same_rows(arr, parts.arrays[same]):
            aliases[name] = same
        else:
            arrays[f"part/{name}"] = arr
    written.append(path)
    size, layout = write_arrays(path, token, arrays)
    stored = sum(a.nbytes for n, a in arrays.items() if n.startswith("part/"))
    return {"file": path.name, "size": size, "ids": parts.ids, "aliases": aliases,
            "arrays": layout, "bytes": stored}  # fmt: skip


def _write_layers(
    directory: Path,
    thresholds: dict[str, ThresholdState] | None,
    reuse: Reuse | None,
    written: list[Path],
) -> dict[str, dict]:
    """Per layer, its file (kept when it holds these very bytes) or the layer it repeats."""
    out: dict[str, dict] = {}
    done: list[tuple[str, dict[str, np.ndarray | SplicedRows]]] = []
    old = reuse.layers if reuse is not None else []
    for layer, state in (thresholds or {}).items():
        named: dict[str, np.ndarray | SplicedRows] = dict(
            zip(_STATE, (state.open_cells, state.drawn.cells, state.drawn.heat,
                         state.drawn.athletes), strict=True)
        )  # fmt: skip
        t = state.thinned
        if t is not None:
            p = t.published
            more = (p.cells, p.heat, p.athletes, t.middle, t.target, t.votes_to_write)
            named.update(zip(_THINNED, more, strict=True))
        twin = next((w for w, v in done if _same_arrays(v, named)), None)
        if twin is not None:  # ``ride`` when it is ``all``: stored once
            out[layer] = {"as": twin}
            continue
        done.append((layer, named))
        kept = next((entry for entry, arrays in old if _same_arrays(arrays, named)), None)
        if kept is None:
            token = new_token()
            path = directory / f"layer-{token}.bin"
            written.append(path)
            size, layout = write_arrays(path, token, named)
            kept = {"file": path.name, "size": size, "arrays": layout}
        out[layer] = kept
    return out


def _same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.dtype == b.dtype and np.array_equal(a, b))


def _same_arrays(
    a: Mapping[str, np.ndarray | SplicedRows], b: Mapping[str, np.ndarray | SplicedRows]
) -> bool:
    """The same arrays by name, byte for byte (the very arrays read back: at once)."""
    return a.keys() == b.keys() and all(_same_bytes(a[k], b[k]) for k in a)


def _same_bytes(x: np.ndarray | SplicedRows, y: np.ndarray | SplicedRows) -> bool:
    if x is y:
        return True
    # A splice differs in its first arrays when it differs at all: read whole if not.
    x, y = (v.whole() if isinstance(v, SplicedRows) else v for v in (x, y))
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    flat = [np.ascontiguousarray(v).reshape(-1).view(np.uint8) for v in (x, y)]
    return bool(np.array_equal(flat[0], flat[1]))


# --------------------------------------------------------------------------- rows


def take_athletes(parts: WindowParts, index: np.ndarray) -> WindowParts:
    """The parts of the athletes at ``index`` (increasing), numbered 0.. among them."""
    k = len(index)
    taken: dict[int, np.ndarray] = {}  # arrays shared (``ride`` is ``all``) stay shared
    arrays = {}
    split = getattr(parts.arrays, "split", None)
    for name in parts.arrays:
        if split is not None:  # merged lazily: taken from the runs, none put together
            runs = split(name)
            if id(runs) not in taken:
                taken[id(runs)] = runs.of_athletes(index)
            arrays[name] = taken[id(runs)]
            continue
        arr = parts.arrays[name]
        if id(arr) not in taken:
            # Only the taken athletes' bounds: a search of 2k probes, not of every athlete.
            bounds = athlete_bounds(arr["athlete"], np.concatenate([index, index + 1]))
            lo, hi = bounds[:k], bounds[k:]
            rows = arr[row_runs(lo, hi)]
            rows["athlete"] = np.repeat(np.arange(k, dtype=np.int32), hi - lo)
            taken[id(arr)] = rows
        arrays[name] = taken[id(arr)]
    return WindowParts(
        [parts.ids[i] for i in index.tolist()], parts.activities[index],
        parts.has_rows[index], parts.has_paths[index], arrays,
    )  # fmt: skip
