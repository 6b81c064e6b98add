"""The incremental window: keep the per-athlete parts of the last snapshot in ``state_dir``.

A monthly rebuild where 1% of the athletes changed should not re-read and re-derive the
other 99% from the store. The parts of each athlete (``load.WindowParts``) depend only on
their own rows, and every write to those rows redraws the athlete's random stamp
(``athlete_stamps``, kept by triggers in the store). So the cache holds the parts with
the stamps they were read under; a snapshot reads the stamps, keeps the parts of the
athletes whose stamp is unchanged and reads only the others from the store. An opt-out,
a deleted activity, a hide-more setting or a new zone writes the athlete's rows, so
their old parts are dropped before anything is published: the result is the same as
reading everything, byte for byte (tests/test_window_cache_cli.py).

The file is written atomically (a temporary file, then a rename) and checked on read:
anything unexpected (unreadable, another format, another key, inconsistent arrays) means
one line on stderr and a full read. The key covers what the parts depend on (window
months, extra layers, resolutions, thresholds, salt, the code that derives them);
thresholds are applied after the cache, but a change of them rebuilds anyway.

The same file keeps each layer's threshold state (``threshold_cache``: the cells that met
the threshold, the drawn heat, and how ``thin_to_lines`` drew it: the published cells,
their middles and every vote, ``window.Thinned``), written with the parts they were
computed from: a rebuild redoes the threshold and the thinning only from the cells where
a changed athlete's rows differ. A state that fails its checks costs one line on stderr
and a full threshold.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heatmetro import __version__
from heatmetro.core.arrays import distinct
from heatmetro.core.config import Config
from heatmetro.core.environment import describe_os_error
from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.activity_layers import layer_names
from heatmetro.site_builder.code_digest import code_digest
from heatmetro.site_builder.load import (
    WindowParts,
    assemble,
    metro_window,
    part_dtypes,
    read_parts,
)
from heatmetro.site_builder.npz_mapped import load_mapped
from heatmetro.site_builder.threshold_cache import LayerThresholds, ThresholdState
from heatmetro.site_builder.window import (
    VOTE_DTYPE,
    LayerHeat,
    Thinned,
    WindowData,
    is_open,
)
from heatmetro.state.view import ReadView

CACHE_FORMAT = 3
CACHE_FILE = "window_cache.npz"
_PER_ID = ("activities", "has_rows", "has_paths")
# Reading a changed athlete costs a lookup: past this share, one pass over everything.
FULL_READ_SHARE = 0.5
OTHER_KEY = "built for another window, configuration or code version"


@dataclass(frozen=True)
class CacheReport:
    """What the window cache did, for the snapshot's summary."""

    kept: int  # athletes whose parts came from the cache
    read: int  # athletes read from the store (all with a row in the window without a cache)
    note: str  # why the cache was not used, or ""
    threshold_note: str = ""  # why the kept parts' threshold states were not, or ""
    thresholds: str = ""  # how the threshold went, when the cache was used

    @property
    def problem(self) -> bool:
        """The cache was there but unusable, or could not be saved (worth a line even
        when quiet)."""
        expected = self.note in ("", "none yet", "not used", OTHER_KEY) or self.note.startswith(
            "format "
        )  # a new month, setting or version: the usual reasons to start over
        return not expected or bool(self.threshold_note)

    def line(self) -> str:
        if self.note.startswith("not saved"):
            return f"window cache: {self.note}"
        if self.note:
            return f"window cache: {self.note}; read all {self.read:,} athletes from the store"
        line = f"window cache: {self.kept:,} athletes kept, {self.read:,} read from the store"
        if self.threshold_note:
            return f"{line}; {self.threshold_note}: threshold computed whole"
        return f"{line}; {self.thresholds}" if self.thresholds else line


def cache_key(config: Config, first: str, last: str) -> str:
    """Digest of everything the cached parts depend on (never the salt itself)."""
    fields = {
        "format": CACHE_FORMAT,
        "version": __version__,
        "code": _code_digest(),
        "numpy": np.__version__,
        "window": [first, last],
        "sport_layers": list(config.sport_layers),
        "night": config.night_layer,
        "resolutions": [config.heat_resolution, config.metro_resolution, config.od_resolution],
        "thresholds": [
            config.min_athletes,
            config.max_per_athlete,
            config.round_to,
            config.threshold_ring,
        ],
        "salt": hashlib.sha256(config.salt.encode()).hexdigest(),
        "shards": config.shards,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _code_digest() -> str:
    """The source of the store layer and of the modules that derive the parts: any edit
    to them (a new rule in how rows become parts) invalidates the cache."""
    here = Path(__file__).resolve().parent
    state = here.parent / "state"
    files = sorted(state.glob("*.py")) + [
        here / f"{m}.py"
        for m in (
            "load",
            "activity_layers",
            "window",
            "window_cache",
            "threshold_cache",
            "thin_cache",
        )
    ]
    return code_digest(files)


def load_window_cached(
    view: ReadView,
    month_window: tuple[str, str],
    config: Config,
    cache_path: Path,
    *,
    reuse: bool = True,
) -> tuple[WindowData, CacheReport]:
    """``load.load_window`` of the window ``(first, last)``, reusing the parts cached at
    ``cache_path`` for athletes whose stamp is unchanged (unless not ``reuse``), and
    saving the new parts there (so the file never keeps what the store no longer has)."""
    return read_window_cached(view, month_window, config, cache_path, reuse=reuse).finish()


def read_window_cached(
    view: ReadView,
    month_window: tuple[str, str],
    config: Config,
    cache_path: Path,
    *,
    reuse: bool = True,
) -> WindowRead:
    """The first half of ``load_window_cached``: everything read from the store and the
    cache (nothing thresholded yet), so the Metro records are ready before the heat."""
    first, last = month_window
    extra = (config.sport_layers, config.night_layer)
    names = layer_names(
        group_layers=False, sport_layers=config.sport_layers, night=config.night_layer
    )
    key = cache_key(config, first, last)
    stamps = view.stamps()  # in the view's read transaction: consistent with its rows
    cached, note = read_cache(cache_path, key, part_dtypes(names)) if reuse else (None, "not used")
    changed: list[str] | None = None
    thresholds, threshold_note, used = LayerThresholds(), "", False
    if cached is not None:
        changed = sorted(a for a, s in stamps.items() if cached.stamps.get(a) != s)
        if len(changed) > FULL_READ_SHARE * max(len(stamps), 1):
            changed = None
    if cached is None or changed is None:
        parts = read_parts(view, first, last, extra_layers=extra)
        kept, read = 0, len(parts.ids)
    else:
        old = cached.parts
        keep = np.array([stamps.get(a) == cached.stamps.get(a) for a in old.ids], dtype=bool)
        fresh = read_parts(view, first, last, extra_layers=extra, athletes=changed)
        parts = merge_parts(old, keep, fresh)
        kept, read = int(keep.sum()), len(changed)
        threshold_note = cached.threshold_note
        if cached.thresholds is not None:
            thresholds = LayerThresholds(cached.thresholds, changed_cells(old, keep, fresh))
            used = bool(changed)
    note = note if changed is None else ""
    return WindowRead(
        parts, first, last, config, cache_path, key, stamps, thresholds,
        CacheReport(kept, read, note, threshold_note),
        rewrite=changed != [] or bool(threshold_note), used=used,
    )  # fmt: skip


class WindowRead:
    """A window read from the store and the cache: its Metro records at once
    (``metro_window``), its heat thresholded by ``assemble``, the cache saved by ``save``
    (both: ``finish``)."""

    def __init__(
        self,
        parts: WindowParts,
        first: str,
        last: str,
        config: Config,
        cache_path: Path,
        key: str,
        stamps: dict[str, bytes],
        thresholds: LayerThresholds,
        report: CacheReport,
        *,
        rewrite: bool,
        used: bool,
    ) -> None:
        self.parts, self.first, self.last, self.config = parts, first, last, config
        self.cache_path, self.key, self.stamps = cache_path, key, stamps
        self.thresholds, self.report = thresholds, report
        self.rewrite, self.used = rewrite, used
        self._metro: WindowData | None = None

    @property
    def changed_athletes(self) -> int | None:
        """How many athletes' records changed since the last snapshot (the cache's),
        or None when that is unknown (no usable cache: everyone was read)."""
        return self.report.read if self.report.kept else None

    def metro_window(self) -> WindowData:
        """The window without heat: what the Metro writer reads."""
        if self._metro is None:
            self._metro = metro_window(self.parts, self.first, self.last)
        return self._metro

    def finish(self) -> tuple[WindowData, CacheReport]:
        """The whole window (heat thresholded) and what the cache did; the cache saved."""
        window = self.assemble()
        return window, self.save()

    def assemble(self) -> WindowData:
        """The whole window: the heat of every layer thresholded."""
        config = self.config
        return assemble(
            self.parts, self.first, self.last, min_athletes=config.min_athletes,
            max_per_athlete=config.max_per_athlete, threshold_ring=config.threshold_ring,
            thresholds=self.thresholds, metro=self._metro,
        )  # fmt: skip

    def save(self) -> CacheReport:
        """Save the cache (after ``assemble``: it holds the thresholds); what it did."""
        note = self.report.note
        try:
            # Nothing changed and the states were read: the file already holds all this.
            if self.rewrite:
                write_cache(
                    self.cache_path, self.key, self.parts, self.stamps, self.thresholds.states
                )
        except OSError as exc:  # a full disk: this build still publishes; the next reads all
            note = self.unsaved(describe_os_error(exc))
        return self.outcome(note)

    def unsaved(self, why: str) -> str:
        """The note of a cache that could not be saved: the old file goes too, so nothing
        stale stays behind."""
        self.cache_path.unlink(missing_ok=True)
        return f"not saved ({why})"

    def outcome(self, note: str) -> CacheReport:
        """What the cache did, ``note`` being how the save went."""
        report = self.report
        summary = self.thresholds.summary() if self.used and not note else ""
        threshold_note = report.threshold_note if not note else ""
        return CacheReport(report.kept, report.read, note, threshold_note, summary)


def changed_cells(old: WindowParts, keep: np.ndarray, fresh: WindowParts) -> dict[str, np.ndarray]:
    """Per heat layer, the cells where an athlete not kept from ``old`` (changed or gone)
    has another row (or none) in ``fresh``: where the threshold may decide differently.
    A cell the athlete rode as often before as now changes no total, so one more ride
    is a change along that ride only."""
    gone = {a for a, k in zip(old.ids, keep.tolist(), strict=True) if not k}
    code = {a: i for i, a in enumerate(sorted(gone | set(fresh.ids)))}
    old_code = np.array([code.get(a, -1) for a in old.ids], np.int64)
    fresh_code = np.array([code[a] for a in fresh.ids], np.int64)
    out = {}
    dropped = np.flatnonzero(~keep)
    for name, arr in old.arrays.items():
        kind, _, layer = name.partition("/")
        if kind not in ("heat", "extra"):
            continue
        # The rows of the athletes not kept: runs of the rows (sorted by athlete).
        starts = athlete_starts(arr["athlete"], len(old.ids))
        before, now = arr[_runs(starts[dropped], starts[dropped + 1])], fresh.arrays[name]
        rows = np.zeros(len(before) + len(now), [("a", "<i8"), ("cell", "<u8"), ("n", "<u4")])
        rows["a"] = np.concatenate([old_code[before["athlete"]], fresh_code[now["athlete"]]])
        rows["cell"] = np.concatenate([before["cell"], now["cell"]])
        rows["n"] = np.concatenate([before["n"], now["n"]])
        # Each side has one row per (athlete, cell): a row found twice is the same on both.
        rows = rows[np.lexsort((rows["n"], rows["cell"], rows["a"]))]
        same = np.ones(max(len(rows) - 1, 0), dtype=bool)
        for field in ("a", "cell", "n"):
            same &= rows[field][1:] == rows[field][:-1]
        twice = np.zeros(len(rows), dtype=bool)
        twice[1:] |= same
        twice[:-1] |= same
        out[layer] = distinct(rows["cell"][~twice])
    return out


def merge_parts(old: WindowParts, keep: np.ndarray, fresh: WindowParts) -> WindowParts:
    """The parts of ``old``'s athletes where ``keep``, plus all of ``fresh`` (disjoint).

    Both are sorted by athlete, so the result is slices of each in id order: with few
    changed athletes, a few long runs of ``old`` with ``fresh`` rows between them.
    """
    kept_ids = [a for a, k in zip(old.ids, keep.tolist(), strict=True) if k]
    ids = sorted(kept_ids + fresh.ids)
    source = {a: (0, i) for i, a in enumerate(old.ids) if keep[i]}
    source.update({a: (1, i) for i, a in enumerate(fresh.ids)})
    order = [source[a] for a in ids]  # (which parts, index there) of each new athlete
    # Runs of consecutive athletes of one source: (source, first index, last index + 1).
    runs: list[list[int]] = []
    for src, i in order:
        if runs and runs[-1][0] == src and runs[-1][2] == i:
            runs[-1][2] = i + 1
        else:
            runs.append([src, i, i + 1])
    per_id = {}
    for name in _PER_ID:
        both = (getattr(old, name), getattr(fresh, name))
        per_id[name] = np.concatenate([both[src][a:b] for src, a, b in runs] or [both[0][:0]])
    arrays: dict[str, np.ndarray] = {}
    for name, o in old.arrays.items():
        both = (o, fresh.arrays[name])
        # A layer that repeats another in both (``ride`` is ``all``): the same merge,
        # shared, so later steps see one array (and compare it to itself for free).
        twin = next(
            (n for n in arrays if old.arrays[n] is o and _same_rows(fresh.arrays[n], both[1])), None
        )
        if twin is not None:
            arrays[name] = arrays[twin]
            continue
        bounds = [athlete_starts(arr["athlete"], n) for arr, n in
                  zip(both, (len(old.ids), len(fresh.ids)), strict=True)]  # fmt: skip
        # Whole rows as opaque bytes: numpy copies a record dtype field by field (~3x).
        raw = np.dtype((np.void, o.dtype.itemsize))
        pieces = [both[src][bounds[src][a] : bounds[src][b]].view(raw) for src, a, b in runs]
        out = np.concatenate(pieces).view(o.dtype) if pieces else o[:0].copy()
        # Each run's athletes keep their order: their indices move by one step each.
        who, at, first = out["athlete"], 0, 0
        for src, a, b in runs:
            size = int(bounds[src][b] - bounds[src][a])
            who[at : at + size] += np.int32(first - a)
            at, first = at + size, first + b - a
        arrays[name] = out
    return WindowParts(ids, per_id["activities"], per_id["has_rows"], per_id["has_paths"], arrays)


def _runs(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The positions ``lo[k]..hi[k] - 1`` of every run k, in order."""
    size = hi - lo
    return np.repeat(lo - np.cumsum(size) + size, size) + np.arange(int(size.sum()))


def athlete_starts(athlete: np.ndarray, n: int) -> np.ndarray:
    """``np.searchsorted(athlete, np.arange(n + 1))`` of a sorted column: where each
    athlete's rows start. A binary search of all at once, step by step: numpy's would
    first copy the column out of its records (the rows of millions, for ~n probes)."""
    want = np.arange(n + 1)
    lo, hi = np.zeros(n + 1, np.int64), np.full(n + 1, len(athlete), np.int64)
    last = max(len(athlete) - 1, 0)
    for _ in range(int(len(athlete)).bit_length()):
        mid = (lo + hi) >> 1
        searching = lo < hi
        right = searching & (athlete[np.minimum(mid, last)] < want)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(searching & ~right, mid, hi)
    return lo


@dataclass(frozen=True)
class Cached:
    """What the cache file holds: the parts, the stamps they were read under, and the
    threshold states computed from them (None, with why not, when unusable)."""

    parts: WindowParts
    stamps: dict[str, bytes]
    thresholds: dict[str, ThresholdState] | None
    threshold_note: str


_STATE = {"open": np.dtype(np.uint64), "cells": np.dtype(np.uint64),
          "heat": np.dtype(np.float64), "athletes": np.dtype(np.uint32)}  # fmt: skip
# How a layer was thinned (``window.Thinned``), when it was.
_THINNED = {"published_cells": np.dtype(np.uint64), "published_heat": np.dtype(np.float64),
            "published_athletes": np.dtype(np.uint32), "middle": np.dtype(np.uint64),
            "target": np.dtype(np.uint64), "votes": VOTE_DTYPE}  # fmt: skip


def read_cache(path: Path, key: str, dtypes: dict[str, np.dtype]) -> tuple[Cached | None, str]:
    """What the cache file holds, or (None, why not) when it cannot be used."""
    if not path.exists():
        return None, "none yet"
    try:
        npz = load_mapped(path)  # read-only views: a merge copies what it keeps
        meta = json.loads(npz["meta"].tobytes())
        if meta.get("format") != CACHE_FORMAT:
            return None, f"format {meta.get('format')!r}, not {CACHE_FORMAT}"
        if meta.get("key") != key:
            return None, OTHER_KEY
        ids = meta["ids"]
        stamps = {a: bytes.fromhex(s) for a, s in meta["stamps"].items()}
        per_id = {name: npz[name] for name in _PER_ID}
        aliases = meta.get("aliases", {})
        stored = {name: npz[f"part/{name}"] for name in dtypes if name not in aliases}
        arrays = {name: stored[aliases.get(name, name)] for name in dtypes}
        layers = meta.get("thresholds", [])
        same = meta.get("threshold_aliases", {})
        thinned = set(meta.get("thinned", []))
        states = {
            layer: {
                f: npz[f"threshold/{same.get(layer, layer)}/{f}"]
                for f in (_STATE | _THINNED if layer in thinned else _STATE)
            }
            for layer in (layers if isinstance(layers, list) else [])
        }
    except Exception as exc:  # noqa: BLE001 - any unreadable cache means: read the store
        return None, f"unreadable {path.name} ({type(exc).__name__})"
    problem = _inconsistency(ids, per_id, arrays, dtypes)
    if problem:
        return None, f"inconsistent {path.name} ({problem})"
    parts = WindowParts(ids, per_id["activities"], per_id["has_rows"], per_id["has_paths"], arrays)
    thresholds, threshold_note = _threshold_states(states, same)
    return Cached(parts, stamps, thresholds, threshold_note), ""


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


def _inconsistency(
    ids: object,
    per_id: dict[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    dtypes: dict[str, np.dtype],
) -> str:
    if not isinstance(ids, list) or not all(isinstance(a, str) for a in ids):
        return "athlete ids"
    if ids != sorted(set(ids)):
        return "athlete order"
    expected = {
        "activities": np.dtype(np.int64),
        "has_rows": np.dtype(bool),
        "has_paths": np.dtype(bool),
    }
    for name, arr in per_id.items():
        if arr.dtype != expected[name] or arr.shape != (len(ids),):
            return name
    for name, arr in arrays.items():
        if arr.dtype != dtypes[name] or arr.ndim != 1:
            return name
        if len(arr):
            who = arr["athlete"]
            # Sorted (one pass): then the ends are the least and the greatest.
            if np.any(who[1:] < who[:-1]) or who[0] < 0 or who[-1] >= len(ids):
                return f"{name} athletes"
    return ""


def _same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.dtype == b.dtype and np.array_equal(a, b))


def _same_arrays(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return len(a) == len(b) and all(
        x is y or (x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes())
        for x, y in zip(a, b, strict=True)
    )


def _increasing(cells: np.ndarray) -> bool:
    return bool(np.all(cells[1:] > cells[:-1]))  # not np.diff: unsigned, it wraps around


def write_cache(
    path: Path,
    key: str,
    parts: WindowParts,
    stamps: dict[str, bytes],
    thresholds: dict[str, ThresholdState] | None = None,
) -> None:
    """Save ``parts`` (and the threshold states computed from them) atomically: readers
    see the old file or the new one, never a mix.

    Not synced to disk: a file torn by a crash fails the checks on read (a full read).
    """
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "ids": parts.ids,
        "stamps": {a: s.hex() for a, s in stamps.items()},
    }
    # A layer that holds every activity (all rides) repeats ``all``: stored once.
    aliases: dict[str, str] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, arr in parts.arrays.items():
        same = f"{name.split('/')[0]}/all"
        if name != same and same in parts.arrays and _same_rows(arr, parts.arrays[same]):
            aliases[name] = same
        else:
            arrays[f"part/{name}"] = arr
    meta["aliases"] = aliases
    meta["thresholds"] = sorted(thresholds or {})
    copies: dict[str, str] = {}
    meta["threshold_aliases"] = copies
    written: dict[str, tuple[np.ndarray, ...]] = {}
    meta["thinned"] = sorted(k for k, v in (thresholds or {}).items() if v.thinned is not None)
    for layer, state in (thresholds or {}).items():
        named = dict(
            zip(_STATE, (state.open_cells, state.drawn.cells, state.drawn.heat,
                         state.drawn.athletes), strict=True)
        )  # fmt: skip
        t = state.thinned
        if t is not None:
            p = t.published
            more = (p.cells, p.heat, p.athletes, t.middle, t.target, t.votes)
            named.update(zip(_THINNED, more, strict=True))
        every = tuple(named.values())
        alias = next((w for w, v in written.items() if _same_arrays(v, every)), None)
        if alias is not None:  # ``ride`` when it is ``all``: stored once
            copies[layer] = alias
            continue
        written[layer] = every
        for name, arr in named.items():
            arrays[f"threshold/{layer}/{name}"] = arr
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    arrays.update({name: getattr(parts, name) for name in _PER_ID})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_for(path)
    try:
        with tmp.open("wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
