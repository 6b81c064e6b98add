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

The cache (``state_dir/window_cache/``, ``window_cache_files``) is written atomically (its
files, then a manifest naming them renamed into place; a rebuild writes only what changed:
the changed athletes' parts and the changed layers' states) and checked on read:
anything unexpected (unreadable, torn or missing files, another format, another key,
inconsistent arrays) means one line on stderr and a full read. The key covers what the parts depend on (window
months, extra layers, resolutions, thresholds, salt, the code that derives them);
thresholds are applied after the cache, but a change of them rebuilds anyway.

The same cache keeps each layer's threshold state (``threshold_cache``: the cells that met
the threshold, the drawn heat, and how ``thin_to_lines`` drew it: the published cells,
their middles and every vote, ``window.Thinned``), written with the parts they were
computed from: a rebuild redoes the threshold and the thinning only from the cells where
a changed athlete's rows differ. A state that fails its checks costs one line on stderr
and a full threshold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heatmetro import __version__
from heatmetro.core.arrays import distinct
from heatmetro.core.config import Config
from heatmetro.core.environment import describe_os_error
from heatmetro.site_builder.activity_layers import layer_names
from heatmetro.site_builder.code_digest import code_digest
from heatmetro.site_builder.load import (
    WindowParts,
    assemble,
    metro_window,
    part_dtypes,
    read_parts,
)
from heatmetro.site_builder.split_rows import Run, SplitRows, athlete_starts, row_runs
from heatmetro.site_builder.threshold_cache import LayerThresholds
from heatmetro.site_builder.window import WindowData
from heatmetro.site_builder.window_cache_files import (
    CACHE_DIR,
    CACHE_FORMAT,
    OTHER_KEY,
    PER_ID,
    CachedParts,
    Reuse,
    read_cache,
    remove_cache,
    write_cache,
)
from heatmetro.state.view import ReadView

__all__ = [
    "CACHE_DIR", "CACHE_FORMAT", "CacheReport", "WindowRead", "athlete_starts",
    "cache_key", "changed_cells", "load_window_cached", "merge_parts", "read_cache",
    "read_window_cached", "remove_cache", "write_cache",
]  # fmt: skip

# Reading a changed athlete costs a lookup: past this share, one pass over everything.
FULL_READ_SHARE = 0.5


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
            "window_cache_files",
            "array_files",
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
    reusable: Reuse | None = None
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
        parts = merge_parts(old, keep, fresh, lazy=True)
        kept, read = int(keep.sum()), len(changed)
        reusable = cached.reuse(parts.ids, set(fresh.ids))
        threshold_note = cached.threshold_note
        if cached.thresholds is not None:
            thresholds = LayerThresholds(cached.thresholds, changed_cells(old, keep, fresh))
            used = bool(changed)
    note = note if changed is None else ""
    return WindowRead(
        parts, first, last, config, cache_path, key, stamps, thresholds,
        CacheReport(kept, read, note, threshold_note),
        rewrite=changed != [] or bool(threshold_note), used=used, reusable=reusable,
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
        reusable: Reuse | None = None,
    ) -> None:
        self.parts, self.first, self.last, self.config = parts, first, last, config
        self.cache_path, self.key, self.stamps = cache_path, key, stamps
        self.thresholds, self.report = thresholds, report
        self.rewrite, self.used, self.reusable = rewrite, used, reusable
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
            # Nothing changed and the states were read: the cache already holds all this.
            if self.rewrite:
                write_cache(
                    self.cache_path, self.key, self.parts, self.stamps, self.thresholds.states,
                    self.reusable,
                )  # fmt: skip
        except OSError as exc:  # a full disk: this build still publishes; the next reads all
            note = self.unsaved(describe_os_error(exc))
        return self.outcome(note)

    def unsaved(self, why: str) -> str:
        """The note of a cache that could not be saved: the old one goes too, so nothing
        stale stays behind."""
        remove_cache(self.cache_path.parent)
        return f"not saved ({why})"

    def outcome(self, note: str) -> CacheReport:
        """What the cache did, ``note`` being how the save went."""
        report = self.report
        summary = self.thresholds.summary() if self.used and not note else ""
        threshold_note = report.threshold_note if not note else ""
        return CacheReport(report.kept, report.read, note, threshold_note, summary)


def changed_cells(
    old: WindowParts | CachedParts, keep: np.ndarray, fresh: WindowParts
) -> dict[str, np.ndarray]:
    """Per heat layer, the cells where an athlete not kept from ``old`` (changed or gone)
    has another row (or none) in ``fresh``: where the threshold may decide differently.
    A cell the athlete rode as often before as now changes no total, so one more ride
    is a change along that ride only."""
    old = old if isinstance(old, CachedParts) else CachedParts.of(old)
    dropped = np.flatnonzero(~keep)
    gone = [old.ids[i] for i in dropped.tolist()]
    code = {a: i for i, a in enumerate(sorted(set(gone) | set(fresh.ids)))}
    gone_code = np.array([code[a] for a in gone], np.int64)
    fresh_code = np.array([code[a] for a in fresh.ids], np.int64)
    out = {}
    for name, now in fresh.arrays.items():
        kind, _, layer = name.partition("/")
        if kind not in ("heat", "extra"):
            continue
        # The rows of the athletes not kept, pack by pack: runs of the rows (sorted by
        # athlete), coded as the fresh ones.
        a, cell, n = [fresh_code[now["athlete"]]], [now["cell"]], [now["n"]]
        for s, source in enumerate(old.sources):
            mine = old.pack[dropped] == s
            if not mine.any():
                continue
            arr, local = source.arrays[name], old.local[dropped[mine]]
            starts = athlete_starts(arr["athlete"], len(source.ids))
            before = arr[row_runs(starts[local], starts[local + 1])]
            codes = np.full(len(source.ids), -1, np.int64)
            codes[local] = gone_code[mine]
            a.append(codes[before["athlete"]])
            cell.append(before["cell"])
            n.append(before["n"])
        rows = np.zeros(sum(map(len, a)), [("a", "<i8"), ("cell", "<u8"), ("n", "<u4")])
        rows["a"], rows["cell"], rows["n"] = map(np.concatenate, (a, cell, n))
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


def _same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.dtype == b.dtype and np.array_equal(a, b))


def merge_parts(
    old: WindowParts | CachedParts, keep: np.ndarray, fresh: WindowParts, *, lazy: bool = False
) -> WindowParts:
    """The parts of ``old``'s athletes where ``keep``, plus all of ``fresh`` (disjoint).

    Each source (the cache's packs, the fresh parts) is sorted by athlete, so the result
    is slices of them in id order: with few changed athletes, a few long runs of the
    cache's base with others between them. With ``lazy``, each array is put together
    when first read (``MergedArrays``): a rebuild's threshold reads the heat by region.
    """
    old = old if isinstance(old, CachedParts) else CachedParts.of(old)
    kept = np.flatnonzero(keep).tolist()
    ids = sorted([old.ids[i] for i in kept] + fresh.ids)
    pack, local = old.pack.tolist(), old.local.tolist()
    source = {old.ids[i]: (pack[i], local[i]) for i in kept}
    fresh_source = len(old.sources)
    source.update({a: (fresh_source, i) for i, a in enumerate(fresh.ids)})
    order = [source[a] for a in ids]  # (which source, index there) of each new athlete
    # Runs of consecutive athletes of one source: (source, first index, last index + 1).
    runs: list[list[int]] = []
    for src, i in order:
        if runs and runs[-1][0] == src and runs[-1][2] == i:
            runs[-1][2] = i + 1
        else:
            runs.append([src, i, i + 1])
    sources = [*old.sources, fresh]
    per_id = {}
    for name in PER_ID:
        each = [getattr(s, name) for s in sources]
        per_id[name] = np.concatenate([each[src][a:b] for src, a, b in runs] or [each[-1][:0]])
    arrays = MergedArrays(sources, [(src, a, b) for src, a, b in runs])
    return WindowParts(
        ids, per_id["activities"], per_id["has_rows"], per_id["has_paths"],
        arrays if lazy else dict(arrays.items()),
    )  # fmt: skip


class MergedArrays(Mapping[str, np.ndarray]):
    """``merge_parts``' arrays, each put together from its sources' runs when first read
    (and kept); ``split`` hands a layer's rows over as runs (``SplitRows``) instead."""

    def __init__(self, sources: list[WindowParts], runs: list[tuple[int, int, int]]) -> None:
        self._sources, self._runs = sources, runs
        fresh = sources[-1]
        # A layer that repeats another in every pack and in the fresh rows (``ride`` is
        # ``all``): the same merge, shared, so later steps see one array (and compare it
        # to itself for free).
        self._twin: dict[str, str] = {}
        for name, f in fresh.arrays.items():
            twin = next(
                (t for t in self._twin if t == self._twin[t]
                 and _same_rows(fresh.arrays[t], f)
                 and all(s.arrays[t] is s.arrays[name] for s in sources[:-1])),
                None,
            )  # fmt: skip
            self._twin[name] = twin if twin is not None else name
        self._split: dict[str, SplitRows] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.split(name).whole()

    def __iter__(self) -> Iterator[str]:
        return iter(self._twin)

    def __len__(self) -> int:
        return len(self._twin)

    def split(self, name: str) -> SplitRows:
        """Array ``name`` as runs of its sources' rows (one object for twins)."""
        name = self._twin[name]
        if name not in self._split:
            each = [s.arrays[name] for s in self._sources]
            self._split[name] = SplitRows(each, self._row_runs(name))
        return self._split[name]

    def _row_runs(self, name: str) -> list[Run]:
        """The runs of athletes as runs of rows: each run's athletes keep their order,
        their indices move by one step each."""
        each = [s.arrays[name] for s in self._sources]
        bounds = {
            src: athlete_starts(each[src]["athlete"], len(self._sources[src].ids))
            for src in {r[0] for r in self._runs}
        }
        out, first = [], 0
        for src, a, b in self._runs:
            out.append(Run(src, int(bounds[src][a]), int(bounds[src][b]), first - a, a, b - a))
            first += b - a
        return out
