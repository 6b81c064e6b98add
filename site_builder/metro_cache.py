"""Incremental Metro counts: keep the edge tables' raw sums in ``state_dir`` between snapshots.

Counting the edge tables (per edge, edge and month, edge and hour) is a few sorts of every
window record per table and layer. A rebuild where 1% of the athletes changed touches
a few percent of the edges, and a group's sums (trips, distinct people, speed) depend
only on the records of its own edge. So the cache keeps, per layer and table, the sums
of every group (``metro_tables.DirectionSums``, before any privacy rule) and, per
athlete, a digest of their records in order. A rebuild finds the athletes whose
digest changed (new, gone or different), takes the edges of their old and new records,
recounts only those edges from all of the window's records on them and keeps the
other groups' sums. The privacy rules (``publish_directions``: threshold, rounding,
seeded noise) then run over the whole table as in a full count, so the files are
byte-identical to a ``--no-cache`` build (tests/test_metro_cache_cli.py,
tests/test_metro_cache_property.py).

Why the result is exact, float sums included: records are ordered by athlete (an
index in athlete-id order) and an unchanged athlete's digest covers their records in
order; the cache is used only when the unchanged athletes come in the same order as
before. A kept group's records are then the same records in the same order, and a
recounted group sums the window's records of its edge in window order, which is what
``np.bincount`` does in a full count.

The file is written atomically (a temporary file, then a rename) and checked on read:
anything unexpected means one line on stderr and a full count. Its key covers what the
sums depend on: the format, the code that derives them and the per-person trip bound
of differential privacy (thresholds, rounding and noise come after the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heatmetro.core.arrays import distinct
from heatmetro.core.environment import describe_os_error
from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.code_digest import code_digest
from heatmetro.site_builder.metro_tables import (
    Cells,
    DirectionSums,
    direction_sums,
    is_no_values,
    no_values,
)
from heatmetro.site_builder.mix64 import GOLDEN, mix64
from heatmetro.site_builder.npz_mapped import load_mapped

CACHE_FORMAT = 1
CACHE_FILE = "metro_cache.npz"
# Past this share of changed athletes, one full count is cheaper than the bookkeeping.
FULL_SHARE = 0.5

_CELLS = ("trips", "people", "speed_sum", "speed_n")
_PARTS = ("total", "kinds", "bikes", "bands")


def _as_u64(values: np.ndarray) -> np.ndarray:
    """A field's values as uint64 bit patterns (floats by their bits, so -0.0 != 0.0)."""
    if values.dtype.kind == "f":
        return values.astype(np.float64).view(np.uint64)
    return values.astype(np.uint64)


def row_hashes(arr: np.ndarray) -> np.ndarray:
    """Per record, 64 bits of every field but ``athlete`` (its snapshot-local index)."""
    h = np.zeros(len(arr), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, name in enumerate(arr.dtype.names or ()):
            if name != "athlete":
                h = mix64(h + mix64(_as_u64(arr[name]) ^ (GOLDEN * np.uint64(i + 1))))
    return h


def edge_hashes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """64 bits of each edge ``(a, b)``: equal edges, equal hashes (a collision only
    recounts an edge that did not need it)."""
    with np.errstate(over="ignore"):
        return mix64(mix64(a) ^ np.asarray(b, dtype=np.uint64))


@dataclass(frozen=True)
class LayerState:
    """Per athlete with records in a layer (in athlete order), a 128-bit digest of their
    records in order; per record, its athlete's position there and its edge hash."""

    digests: np.ndarray  # (athletes, 2) uint64
    owner: np.ndarray  # (records,) int64
    edge: np.ndarray  # (records,) uint64

    @classmethod
    def of(cls, arr: np.ndarray) -> LayerState:
        order = np.argsort(arr["athlete"], kind="stable")
        who = arr["athlete"][order]
        start = np.ones(len(who), dtype=bool)
        start[1:] = who[1:] != who[:-1]
        starts = np.flatnonzero(start)
        owner_sorted = np.cumsum(start) - 1
        position = np.arange(len(who)) - starts[owner_sorted]
        with np.errstate(over="ignore"):
            h = mix64(row_hashes(arr)[order] + position.astype(np.uint64) * GOLDEN)
            if len(starts):
                d1 = np.add.reduceat(h, starts, dtype=np.uint64)
                d2 = np.bitwise_xor.reduceat(mix64(h + GOLDEN), starts)
                rows = np.diff(np.append(starts, len(who))).astype(np.uint64)
                digests = np.stack([mix64(d1 ^ rows), d2], axis=1)
            else:
                digests = np.zeros((0, 2), dtype=np.uint64)
        owner = np.empty(len(arr), dtype=np.int64)
        owner[order] = owner_sorted
        return cls(digests, owner, edge_hashes(arr["a"], arr["b"]))


def touched_edges(old: LayerState, new: LayerState) -> np.ndarray | None:
    """Sorted edge hashes of the records of changed athletes (old and new records), or
    None when a full count is needed: too many changes, or the unchanged athletes not
    in their old order (their kept sums would add the same numbers in another order)."""
    old_d = [tuple(d) for d in old.digests.tolist()]
    new_d = [tuple(d) for d in new.digests.tolist()]
    before, after = Counter(old_d), Counter(new_d)
    changed = {d for d in before.keys() | after.keys() if before[d] != after[d]}
    old_changed = np.array([d in changed for d in old_d], dtype=bool)
    new_changed = np.array([d in changed for d in new_d], dtype=bool)
    if int(new_changed.sum()) > FULL_SHARE * max(len(new_d), 1):
        return None
    if [d for d in old_d if d not in changed] != [d for d in new_d if d not in changed]:
        return None
    edges = [old.edge[old_changed[old.owner]], new.edge[new_changed[new.owner]]]
    return distinct(np.concatenate(edges))


class _Mismatch(Exception):
    """The cached sums cannot be merged with fresh ones (dtypes, fields)."""


def _concat_cells(parts: list[Cells]) -> Cells:
    # An empty table's sums may be ints (np.bincount of nothing): only rows count.
    parts = [c for c in parts if len(c.trips)] or parts[-1:]
    for name in _CELLS:
        if len({getattr(c, name).dtype for c in parts}) != 1:
            raise _Mismatch(name)
    return Cells(*(_concat([getattr(c, n) for c in parts]) for n in _CELLS))


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    if all(is_no_values(a) for a in arrays) and len({a.shape[1] for a in arrays}) == 1:
        return no_values((sum(len(a) for a in arrays), arrays[0].shape[1]))
    return np.concatenate(arrays)


def _take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    # ``np.take`` along the rows: the same array as ``values[rows]``, 2-6x faster on
    # these 2-D tables (fancy indexing goes element by element).
    if is_no_values(values):
        return no_values((len(rows), values.shape[1]))
    return np.take(values, rows, axis=0)


def _take_cells(c: Cells, rows: np.ndarray) -> Cells:
    return Cells(*(_take(getattr(c, n), rows) for n in _CELLS))


def take_sums(sums: DirectionSums, rows: np.ndarray) -> DirectionSums:
    """Some groups (``rows``, in order) of ``sums``."""
    parts = [None if c is None else _take_cells(c, rows) for c in
             (sums.total, sums.kinds, sums.bikes, sums.bands)]  # fmt: skip
    total, kinds, bikes, bands = parts
    assert total is not None and kinds is not None and bikes is not None
    return DirectionSums({k: v[rows] for k, v in sums.keys.items()}, total, kinds, bikes, bands)


def in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_set)`` for a sorted ``sorted_set``: one binary search per
    value (no sort of both, as ``np.isin`` does)."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def merge_sums(
    cached: DirectionSums, touched: np.ndarray, fresh: DirectionSums, key: tuple[str, ...]
) -> tuple[DirectionSums, np.ndarray, np.ndarray]:
    """``cached``'s groups off the ``touched`` edges plus ``fresh`` (the recounted groups
    of those edges), in key order as ``direction_sums`` sorts them; and the rows of
    ``cached`` kept with their rows in the result."""
    if set(cached.keys) != set(key) or (cached.bands is None) != (fresh.bands is None):
        msg = "fields"
        raise _Mismatch(msg)
    keep = np.flatnonzero(~in_sorted(edge_hashes(cached.keys["a"], cached.keys["b"]), touched))
    keys = {}
    for k in key:
        if cached.keys[k].dtype != fresh.keys[k].dtype:
            raise _Mismatch(k)
        keys[k] = np.concatenate([cached.keys[k][keep], fresh.keys[k]])
    order = np.lexsort([keys[k] for k in reversed(key)])  # lexsort sorts by its LAST key first
    parts: dict[str, Cells | None] = {}
    for name in _PARTS:
        old, new = getattr(cached, name), getattr(fresh, name)
        if old is None or new is None:
            parts[name] = None
            continue
        if old.trips.shape[1:] != new.trips.shape[1:]:
            raise _Mismatch(name)
        both = _concat_cells([_take_cells(old, keep), new])
        parts[name] = _take_cells(both, order)
    total, kinds, bikes = parts["total"], parts["kinds"], parts["bikes"]
    assert total is not None and kinds is not None and bikes is not None
    at = np.empty(len(order), dtype=np.int64)
    at[order] = np.arange(len(order))
    merged = DirectionSums({k: v[order] for k, v in keys.items()}, total, kinds, bikes,
                           parts["bands"])  # fmt: skip
    return merged, keep, at[: len(keep)]


def _table_name(layer: str, key: tuple[str, ...], with_bands: bool) -> str:
    return f"{layer}|{','.join(key)}|{'bands' if with_bands else 'plain'}"


@dataclass
class MetroCache:
    """The sums of the last build (read at creation) and those of this build (saved).

    Args:
        path: the cache file (``state_dir/metro_cache.npz``).
        reuse: read the old file (False: count everything, then rewrite it).

    ``open(max_trips)`` (the per-person trip bound of differential privacy, or None)
    reads the file; ``write_metro`` calls it once it knows the bound.
    """

    path: Path
    reuse: bool = True
    max_trips: int | None = None
    note: str = ""
    recounted: int = 0  # edges recounted, summed over layers
    _old_tables: dict[str, DirectionSums] = field(default_factory=dict)
    _old_layers: dict[str, LayerState] = field(default_factory=dict)
    _tables: dict[str, DirectionSums] = field(default_factory=dict)
    _layers: dict[str, tuple[np.ndarray, LayerState, np.ndarray | None]] = field(
        default_factory=dict
    )
    # A layer with the very records of an earlier one (a sport layer holding every
    # activity repeats ``all``) shares its sums: counted, kept and saved once.
    _twins: dict[str, str] = field(default_factory=dict)
    _old_twins: dict[str, str] = field(default_factory=dict)
    _rows: dict[str, np.ndarray] = field(default_factory=dict)  # per layer: touched records
    # Layers counted whole although the file was read (too much of them changed): the
    # line must not say their counts were kept.
    _whole: dict[str, None] = field(default_factory=dict)
    _unchanged: bool = False  # so far, every table is the file's: no need to save
    #: Identifies the file as read (None: none read) and as this build saves it: the
    #: plan cache (``metro_plan_cache``) records the sums it was solved with by it.
    token: str | None = None
    _next_token: str = ""
    #: The Metro writer kept the published build's files (``metro_reuse``): the cache
    #: was not even read.
    files_kept: bool = False
    #: The GeoPackage's rows taken from the last build's, and all its rows (None: not
    #: written with this cache).
    gpkg_taken: tuple[int, int] | None = None
    #: Per table name, the rows of the file's table kept and where they are in this
    #: build's (every table so far from the file's sums, or None).
    _kept: dict[str, tuple[np.ndarray, np.ndarray]] | None = field(default_factory=dict)

    def open(self, max_trips: int | None) -> None:
        self.max_trips = max_trips
        self.note = self._read() if self.reuse else "not used"
        self._unchanged = not self.note
        self._next_token = os.urandom(16).hex()
        if self.note:
            self.token, self._kept = None, None

    @property
    def problem(self) -> bool:
        """The file was there but unusable, or could not be saved."""
        return self.note not in ("", "none yet", "not used")

    def line(self) -> str:
        if self.files_kept:
            return "metro cache: the window's records are the published build's: its files kept"
        if self.note.startswith("not saved"):
            return f"metro cache: {self.note}"
        if self.note:
            return f"metro cache: {self.note}; counted every edge"
        kept = [n for n, (arr, _, _) in self._layers.items() if n not in self._whole and len(arr)]
        if self._whole and not kept:
            return "metro cache: counted every edge (too much of every layer changed)"
        if self._whole:
            return (
                f"metro cache: {', '.join(self._whole)} counted whole (too much changed); "
                f"{self.recounted:,} edges recounted in the others, their other counts kept"
            )
        return f"metro cache: {self.recounted:,} edges recounted, the others' counts kept"

    def gpkg_line(self) -> str:
        """How much of the GeoPackage came from the last build's (``metro_gpkg_reuse``)."""
        if self.gpkg_taken is None:
            return ""
        taken, total = self.gpkg_taken
        if not taken:
            return f"metro.gpkg: {total:,} rows written whole"
        return (
            f"metro.gpkg: {taken:,} of {total:,} rows taken from the last build's, "
            f"{total - taken:,} written"
        )

    def key(self) -> str:
        fields = {"format": CACHE_FORMAT, "code": _code_digest(), "max_trips": self.max_trips}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def sums(
        self, layer: str, arr: np.ndarray, key: tuple[str, ...], *, with_bands: bool
    ) -> DirectionSums:
        """``direction_sums(arr, key, max_trips)``, recounting only the changed edges
        when the last build's sums of this layer and table are at hand."""
        touched = self._touched(layer, arr)
        name = _table_name(layer, key, with_bands)
        twin = self._twins.get(layer)
        if twin is not None and _table_name(twin, key, with_bands) in self._tables:
            return self._twin_sums(name, _table_name(twin, key, with_bands), layer, twin)
        cached = self._old_tables.get(name)
        out, kept = None, None
        if touched is not None and cached is not None:
            if len(touched) == 0:
                out = cached
                every = np.arange(len(cached))
                kept = (every, every)
            else:
                if layer not in self._rows:
                    self._rows[layer] = arr[in_sorted(self._layers[layer][1].edge, touched)]
                fresh = direction_sums(
                    self._rows[layer], key, self.max_trips, with_bands=with_bands
                )
                try:
                    out, old_rows, new_rows = merge_sums(cached, touched, fresh, key)
                    kept = (old_rows, new_rows)
                except _Mismatch as exc:
                    self.note = f"unusable {self.path.name} (table {name}: {exc})"
        if out is None or kept is None:
            out = direction_sums(arr, key, self.max_trips, with_bands=with_bands)
            self._kept = None
        elif self._kept is not None:
            self._kept[name] = kept
        self._unchanged &= out is cached
        self._tables[name] = out
        return out

    def _twin_sums(self, name: str, twin_name: str, layer: str, twin: str) -> DirectionSums:
        """``twin``'s table for ``layer`` (the same records: the same sums)."""
        out = self._tables[name] = self._tables[twin_name]
        self._unchanged &= self._old_twins.get(layer) == twin
        if self._kept is not None:
            # Its rows are the file's rows of ``layer`` only if the file shared them too.
            kept = self._kept.get(twin_name)
            if self._old_twins.get(layer) != twin or kept is None:
                self._kept = None
            else:
                self._kept[name] = kept
        return out

    def kept(
        self, layer: str, key: tuple[str, ...], *, with_bands: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The rows of the file's table that this build's ``sums`` kept, and their rows in
        it (the others are the touched edges'); None unless every table so far came
        from the file's sums this way."""
        if self._kept is None:
            return None
        return self._kept.get(_table_name(layer, key, with_bands))

    def touched(self) -> np.ndarray | None:
        """Sorted edge hashes recounted in any layer (None: some layer was counted whole)."""
        if self._kept is None or any(t is None for _, _, t in self._layers.values()):
            return None
        parts = [t for _, _, t in self._layers.values() if t is not None]
        return distinct(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)

    def _touched(self, layer: str, arr: np.ndarray) -> np.ndarray | None:
        known = self._layers.get(layer)
        if known is not None and known[0] is arr:
            return known[2]
        self._rows.pop(layer, None)
        self._twins.pop(layer, None)
        twin = next((other for other, (seen, _, _) in self._layers.items()
                     if other != layer and other not in self._twins and _same(seen, arr)),
                    None)  # fmt: skip
        old = self._old_layers.get(layer)
        if twin is not None:
            self._twins[layer] = twin
            state = self._layers[twin][1]
        else:
            state = LayerState.of(arr)
        if twin is not None and self._old_twins.get(layer) == twin:
            touched = self._layers[twin][2]  # the same records then and now
        else:
            touched = None if old is None or self.note else touched_edges(old, state)
        self.recounted += 0 if touched is None else len(touched)
        if touched is None and not self.note:
            self._whole[layer] = None
        else:
            self._whole.pop(layer, None)
        self._unchanged &= touched is not None and len(touched) == 0
        self._layers[layer] = (arr, state, touched)
        return touched

    def _read(self) -> str:
        if not self.path.exists():
            return "none yet"
        try:
            npz = load_mapped(self.path)  # read-only views of one memory map
            meta = json.loads(npz["meta"].tobytes())
            if meta.get("format") != CACHE_FORMAT:
                return f"format {meta.get('format')!r}, not {CACHE_FORMAT}"
            if meta.get("key") != self.key():
                return "built for another configuration or code version"
            twins = {str(k): str(v) for k, v in meta.get("twins", {}).items()}
            layers = {
                layer: LayerState(
                    npz[f"layer/{layer}/digests"],
                    npz[f"layer/{layer}/owner"],
                    npz[f"layer/{layer}/edge"],
                )
                for layer in meta["layers"]
                if layer not in twins
            }
            layers |= {layer: layers[twin] for layer, twin in twins.items()}
            tables = {}
            for name, key in meta["tables"].items():
                layer, rest = name.split("|", 1)
                if layer in twins:
                    continue
                keys = {k: npz[f"table/{name}/key/{k}"] for k in key}
                parts = {
                    p: _load_cells(npz, f"table/{name}/{p}", sub=p != "total")
                    if f"table/{name}/{p}/trips" in npz
                    else None
                    for p in _PARTS
                }
                total, kinds, bikes = parts["total"], parts["kinds"], parts["bikes"]
                if total is None or kinds is None or bikes is None:
                    return f"inconsistent {self.path.name} (table {name})"
                tables[name] = DirectionSums(keys, total, kinds, bikes, parts["bands"])
            for name in meta["tables"]:
                layer, rest = name.split("|", 1)
                if layer in twins:
                    tables[name] = tables[f"{twins[layer]}|{rest}"]
        except Exception as exc:  # noqa: BLE001 - any unreadable cache means: count all
            return f"unreadable {self.path.name} ({type(exc).__name__})"
        problem = _inconsistency(layers, tables)
        if problem:
            return f"inconsistent {self.path.name} ({problem})"
        self._old_layers, self._old_tables, self._old_twins = layers, tables, twins
        token = meta.get("token")
        self.token = token if isinstance(token, str) else None
        return ""

    def save(self) -> None:
        """Write this build's sums (atomically), unless they are the file's already.

        A failed write (a full disk) removes the old file, so nothing stale stays.
        """
        same_set = set(self._tables) == set(self._old_tables)
        same_set &= self._twins == self._old_twins
        if self._unchanged and same_set and set(self._layers) == set(self._old_layers):
            return  # the file as read: its token stays
        self.token = None  # the old file is gone whatever happens next
        meta = {
            "format": CACHE_FORMAT,
            "key": self.key(),
            "token": self._next_token,
            "layers": sorted(self._layers),
            "tables": {name: list(t.keys) for name, t in self._tables.items()},
            "twins": self._twins,
        }
        arrays: dict[str, np.ndarray] = {}
        for layer, (_, state, _) in self._layers.items():
            if layer in self._twins:
                continue
            arrays[f"layer/{layer}/digests"] = state.digests
            arrays[f"layer/{layer}/owner"] = state.owner
            arrays[f"layer/{layer}/edge"] = state.edge
        for name, t in self._tables.items():
            if name.split("|", 1)[0] in self._twins:
                continue
            for k, v in t.keys.items():
                arrays[f"table/{name}/key/{k}"] = v
            for p in _PARTS:
                cells = getattr(t, p)
                # Sub-counts carry no speeds (zeros): trips and people only.
                for c in _CELLS if p == "total" else _CELLS[:2]:
                    if cells is not None:
                        values = getattr(cells, c)
                        arrays[f"table/{name}/{p}/{c}"] = (
                            values if c == "speed_sum" else _narrow(values)
                        )
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_for(self.path)
        try:
            with tmp.open("wb") as fh:
                np.savez(fh, allow_pickle=False, **arrays)
            tmp.replace(self.path)
            self.token = self._next_token
        except OSError as exc:  # this build still publishes; the next counts everything
            tmp.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
            self.note = f"not saved ({describe_os_error(exc)})"
        except BaseException:  # Ctrl-C: no half-written file left behind either
            tmp.unlink(missing_ok=True)
            raise


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two record arrays hold the very same records (byte for byte)."""
    if a is b:
        return True
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(np.ascontiguousarray(a).view(np.uint8),
                               np.ascontiguousarray(b).view(np.uint8)))  # fmt: skip


def _narrow(values: np.ndarray) -> np.ndarray:
    """Counts as int32 when they fit (a third of the file is counts; most are small)."""
    if values.dtype == np.int64 and (not values.size or int(np.abs(values).max()) < 2**31):
        return values.astype(np.int32)
    return values


def _load_cells(npz: Any, prefix: str, *, sub: bool) -> Cells:
    """Counts back as int64; a sub-count's speeds as the zeros ``direction_sums`` gives."""

    def counts(name: str) -> np.ndarray:
        values = npz[f"{prefix}/{name}"]
        if values.dtype not in (np.int32, np.int64):
            raise ValueError(f"{prefix}/{name} dtype {values.dtype}")  # noqa: EM102, TRY003
        return values.astype(np.int64)

    trips, people = counts("trips"), counts("people")
    if sub:
        zeros = no_values(trips.shape)
        return Cells(trips, people, zeros, zeros)
    speed_n = npz[f"{prefix}/speed_n"]
    if speed_n.dtype == np.int32:
        speed_n = speed_n.astype(np.int64)
    return Cells(trips, people, npz[f"{prefix}/speed_sum"], speed_n)


def _inconsistency(layers: dict[str, LayerState], tables: dict[str, DirectionSums]) -> str:
    for layer, s in layers.items():
        if s.digests.dtype != np.uint64 or s.digests.ndim != 2 or s.digests.shape[1] != 2:
            return f"layer {layer} digests"
        if s.owner.dtype != np.int64 or s.edge.dtype != np.uint64 or s.owner.shape != s.edge.shape:
            return f"layer {layer} records"
        if len(s.owner) and (s.owner.min() < 0 or s.owner.max() >= len(s.digests)):
            return f"layer {layer} owners"
    for name, t in tables.items():
        n = len(t.total.trips)
        if any(v.shape != (n,) for v in t.keys.values()) or "a" not in t.keys or "b" not in t.keys:
            return f"table {name} keys"
        for p in _PARTS:
            cells = getattr(t, p)
            if cells is not None and any(
                getattr(cells, c).ndim != 2 or len(getattr(cells, c)) != n for c in _CELLS
            ):
                return f"table {name} {p}"
        if name.split("|")[0] not in layers:
            return f"table {name} without its layer"
    return ""


def _code_digest() -> str:
    """The modules that derive the sums: any edit to them invalidates the cache."""
    here = Path(__file__).resolve().parent
    files = [
        here / "metro_tables.py",
        here / "metro_cache.py",
        here.parent / "state" / "records.py",
    ]
    return code_digest(files)
