"""Secondary suppression over every Metro edge table and layer at once (linked tables).

``metro_secondary`` hides a partner beside each hidden count, one relation at a time.
That left two ways round it (an outside review, ``bench/metro_audit.py``): relations
*between layers* (``all`` = ride + run + water + winter + unknown sports, per row and
column), and *chains*: a partner hidden in one relation read off another (an edge's
commute minus its published months' commute), then used in the first. Here every count
of the four edge tables (per edge, per month, per hour, per hour and day type) of every
layer is one cell, every ``total = sum of parts`` among them one relation, and partners
are hidden until no relation gives a hidden count away:

* a relation whose total is published must not have exactly one hidden part with people
  behind it, nor hidden parts that may hold fewer than ``min_athletes`` people between
  them (none holds that many, and the total's people less the shown parts' are fewer):
  the smallest published part is hidden too (or, with none left, the total);
* a hidden total with people behind it must not be the sum of published parts: the
  smallest published part is hidden too.

Every hidden count with people behind it is protected so, partners included, so no
chain of single subtractions can start. Each round only hides more, so the rounds end
(in practice within a few dozen); each choice is a pure function of the counts (smallest
trips, then first cell): the same store gives the same files. Trips of sports outside the
group layers (``all`` only) are a part no file publishes, taken as one person's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heatmetro.site_builder.metro_cache import edge_hashes, in_sorted, take_sums
from heatmetro.site_builder.metro_plan_cache import OldPlan, PlanCache
from heatmetro.site_builder.metro_tables import (
    BAND_OF_HOUR,
    BANDS,
    DirectionSums,
    DirectionTable,
    Publication,
    cell_sums,
    dense_index,
    publish_directions,
    rows_of,
)

__all__ = ["TABLE_BY", "CellPlan", "EdgePlan", "LayerSumsOf"]

#: The edge tables: what each is keyed by besides the edge.
TABLE_BY: dict[str, tuple[str, ...]] = {
    "edge": (),
    "month": ("month",),
    "hour": ("hour",),  # the wide file: each hour over all days, trips only
    "hour_day": ("hour", "weekend"),
}
_GROUPS = ("ride", "run", "water", "winter")
# Columns of a cell row: the direction's trips; commute, leisure; ride, e-bike, not a ride
# (never published); the time bands (edge and month tables).
_KINDS, _BIKES, _BANDS = slice(1, 3), slice(3, 6), slice(6, 6 + len(BANDS))
_NOT_A_RIDE = 5

LayerSumsOf = Callable[[str, tuple[str, ...], bool], DirectionSums]  # layer, key, with bands


OTHER = "_other"  # the never-published part of ``all``: sports outside the group layers


def other_records(arrs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The records of ``all`` that no group layer holds (unknown sport types), so that the
    people behind that never-published part are counted, not guessed; None without ``all``."""
    if "all" not in arrs:
        return None
    whole = arrs["all"]
    groups = [arrs[g] for g in _GROUPS if g in arrs and len(arrs[g])]
    if not groups or not len(whole):
        return whole
    # The group layers' records are a part of all's, key by key: equal sums, nothing else.
    if int(whole["trips"].sum()) == sum(int(g["trips"].sum()) for g in groups):
        return whole[:0]
    stacked = np.concatenate([whole, *groups])
    sign = np.concatenate([np.ones(len(whole))] + [-np.ones(len(g)) for g in groups])
    sums = [f for f in ("trips", "speed_sum", "speed_n") if f in (whole.dtype.names or ())]
    fields = [f for f in whole.dtype.names or () if f not in sums]
    row, first = dense_index(*(stacked[f] for f in fields))
    trips = np.bincount(row, weights=sign * stacked["trips"], minlength=len(first))
    out = stacked[first].copy()
    for f in sums:
        out[f] = 0
    out["trips"] = np.maximum(trips, 0).astype(out["trips"].dtype)
    return out[trips > 0]


def _columns(table: str) -> int:
    return {"edge": 6 + len(BANDS), "month": 6 + len(BANDS), "hour": 1, "hour_day": 6}[table]


@dataclass(frozen=True)
class _Block:
    """One table of one layer: its cells are ``start + [rows, 2, columns]``."""

    sums: DirectionSums
    start: int
    columns: int

    @property
    def ids(self) -> np.ndarray:
        rows = len(self.sums)
        return self.start + np.arange(rows * 2 * self.columns).reshape(rows, 2, self.columns)

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """``[rows, 2, columns]`` trips and people."""
        s, rows = self.sums, len(self.sums)
        trips = np.zeros((rows, 2, self.columns), dtype=np.int64)
        people = np.zeros_like(trips)
        parts = [(slice(0, 1), s.total, 1)]
        if self.columns > 1:
            parts += [(_KINDS, s.kinds, 2), (_BIKES, s.bikes, 3)]
        if self.columns > 6 and s.bands is not None:
            parts.append((_BANDS, s.bands, len(BANDS)))
        for where, cells, n in parts:
            trips[:, :, where] = cells.trips.reshape(rows, 2, n)
            people[:, :, where] = cells.people.reshape(rows, 2, n)
        return trips, people


class _Relations:
    """``total = sum of parts`` relations as flat arrays (one row per part). A relation
    is a family (a kind of sum) and a total cell: one cell heads several (an edge's
    months, its hours, its layers), each kept apart."""

    def __init__(self) -> None:
        self.families: dict[str, int] = {}
        self.keys: list[np.ndarray] = []
        self.parts: list[np.ndarray] = []

    def add(self, family: str, total_of_part: np.ndarray, part: np.ndarray) -> None:
        """Parts with the total each one adds up to (any shapes, equal sizes)."""
        fam = self.families.setdefault(family, len(self.families))
        assert fam < 64, "relation families are packed into 6 bits of a key"
        self.keys.append(total_of_part.ravel().astype(np.int64) * 64 + fam)
        self.parts.append(part.ravel().astype(np.int64))

    def arrays(self, has: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rel_total, part_rel, part_cell)``: each relation's total cell; per part, its
        relation and its cell. Parts nobody is behind (``~has``) are left out: a known 0
        changes no relation (most cells of the dense tables are such zeros)."""
        keys = np.concatenate(self.keys) if self.keys else np.zeros(0, np.int64)
        part = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int64)
        keep = has[part]
        keys, part = keys[keep], part[keep]
        rel_key, part_rel = np.unique(keys, return_inverse=True)
        return rel_key // 64, part_rel.reshape(-1), part


class EdgePlan:
    """Which counts of the edge tables to hide, for every layer at once.

    Args:
        sums_of: ``(layer, key, with_bands) -> DirectionSums`` of one layer's records.
        layers: the layers published.
        edge: the edge key (``("a", "b")`` for H3 edges, ``("a",)`` for street edges).
        min_athletes: the publication threshold.
        cache: the last build's flags (``metro_plan_cache``), for edges no layer recounted.

    ``reused``: whether the last build's flags were taken (for edges no layer recounted).
    """

    def __init__(
        self,
        sums_of: LayerSumsOf,
        layers: list[str],
        edge: tuple[str, ...],
        min_athletes: int,
        cache: PlanCache | None = None,
    ) -> None:
        self.edge, self.k, self.cache = edge, min_athletes, cache
        self.blocks: dict[tuple[str, str], _Block] = {}
        start = 0
        for layer in layers:
            for table, by in TABLE_BY.items():
                sums = sums_of(layer, (*edge, *by), table in ("edge", "month"))
                block = _Block(sums, start, _columns(table))
                self.blocks[(table, layer)] = block
                start += len(sums) * 2 * block.columns
        self.n_cells = start
        self._hidden: np.ndarray | None = None
        self.reused = False
        #: The row writers' answers to "the same records?" per pair of layers
        #: (``metro_rows.same_records``), kept with the plan the four tables share.
        self.memo: dict[tuple[str, str], bool] = {}

    def sums(self, table: str, layer: str) -> DirectionSums:
        return self.blocks[(table, layer)].sums

    def publish(self, table: str, layer: str, pub: Publication) -> DirectionTable:
        """Table ``table`` (``TABLE_BY``) of ``layer``, published with the plan's hides."""
        hide, sub = self.hides(table, layer)
        return publish_directions(self.sums(table, layer), pub, hide=hide, sub_hide=sub or None)

    def alike(self, table: str, a: str, b: str) -> bool:
        """Whether layers ``a`` and ``b`` (with the very same records) hide alike."""
        ha, sa = self.hides(table, a)
        hb, sb = self.hides(table, b)
        return np.array_equal(ha, hb) and all(np.array_equal(sa[k], sb[k]) for k in sa)

    def hides(self, table: str, layer: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(directions [rows, 2], sub-counts by kind [rows, 2, n])`` to hide."""
        if self._hidden is None:
            self._hidden = self._solve()
        block = self.blocks[(table, layer)]
        rows = len(block.sums)
        hidden = self._hidden[block.start : block.start + rows * 2 * block.columns]
        hidden = hidden.reshape(rows, 2, block.columns)
        sub: dict[str, np.ndarray] = {}
        if block.columns > 1:
            sub = {"kinds": hidden[:, :, _KINDS], "bikes": hidden[:, :, _BIKES]}
        if block.columns > 6:
            sub["bands"] = hidden[:, :, _BANDS]
        return hidden[:, :, 0], sub

    # ------------------------------------------------------------------ the solve

    def _solve(self) -> np.ndarray:
        old = self.cache.load() if self.cache is not None else None
        hidden = self._solve_changed(old) if old is not None else None
        return self._solve_all() if hidden is None else hidden

    def save_cache(self) -> None:
        """Keep this plan's flags for the next build (``metro_plan_cache``), once solved."""
        if self.cache is None or self._hidden is None:
            return
        blocks = [(t, layer, len(b.sums), b.columns) for (t, layer), b in self.blocks.items()]
        self.cache.save(blocks, self._hidden)

    def _solve_changed(self, old: OldPlan) -> np.ndarray | None:
        """The last build's flags for edges no layer recounted; a plan over the rows of the
        others solves them (None: the cache does not fit, solve everything)."""
        assert self.cache is not None
        touched = self.cache.source.touched()
        if touched is None or self.edge != ("a", "b"):
            return None
        hidden = np.zeros(self.n_cells, dtype=bool)
        redo: dict[tuple[str, str], np.ndarray] = {}
        for (table, layer), block in self.blocks.items():
            before = old.block((table, layer))
            kept = self.cache.source.kept(layer, (*self.edge, *TABLE_BY[table]),
                                          with_bands=table in ("edge", "month"))  # fmt: skip
            if before is None or kept is None or before.shape[2] != block.columns:
                return None
            old_rows, new_rows = kept
            rows = len(block.sums)
            if len(old_rows) and int(old_rows.max()) >= len(before):
                return None
            keys = block.sums.keys
            again = in_sorted(edge_hashes(keys["a"], keys["b"]), touched)
            old_of = np.full(rows, -1, dtype=np.int64)
            old_of[new_rows] = old_rows
            same = np.flatnonzero(~again)
            if (old_of[same] < 0).any():  # a row neither kept nor recounted: not ours
                return None
            cells = hidden[block.start : block.start + rows * 2 * block.columns]
            cells.reshape(rows, 2, block.columns)[same] = np.take(before, old_of[same], axis=0)
            redo[(table, layer)] = np.flatnonzero(again)
        layers = list(dict.fromkeys(layer for _, layer in self.blocks))
        by_key = {(layer, (*self.edge, *by)): table for table, by in TABLE_BY.items()
                  for layer in layers}  # fmt: skip

        def sums_of(layer: str, key: tuple[str, ...], _bands: bool) -> DirectionSums:
            table = by_key[(layer, key)]
            return take_sums(self.blocks[(table, layer)].sums, redo[(table, layer)])

        part = EdgePlan(sums_of, layers, self.edge, self.k)
        solved = part._solve_all()
        self.reused = True
        for name, block in self.blocks.items():
            rows, sub = len(block.sums), part.blocks[name]
            cells = hidden[block.start : block.start + rows * 2 * block.columns]
            n = len(sub.sums) * 2 * block.columns
            cells.reshape(rows, 2, block.columns)[redo[name]] = solved[
                sub.start : sub.start + n
            ].reshape(-1, 2, block.columns)
        return hidden

    def _solve_all(self) -> np.ndarray:
        twin = self._twin()
        if twin is None:
            return self._solve_blocks(self.blocks, self.n_cells)
        # The twin's cells mirror ``all``'s round for round: solve without it, copy.
        blocks: dict[tuple[str, str], _Block] = {}
        start = 0
        for name, block in self.blocks.items():
            if name[1] != twin:
                blocks[name] = _Block(block.sums, start, block.columns)
                start += len(block.sums) * 2 * block.columns
        solved = self._solve_blocks(blocks, start)
        hidden = np.zeros(self.n_cells, dtype=bool)
        for (table, layer), block in self.blocks.items():
            source = blocks[(table, "all" if layer == twin else layer)]
            n = len(block.sums) * 2 * block.columns
            hidden[block.start : block.start + n] = solved[source.start : source.start + n]
        return hidden

    def _twin(self) -> str | None:
        """A layer whose every table has exactly ``all``'s rows and counts while the other
        layers (besides ``all``) have none: ``all``'s only part, a sport layer holding every
        activity (a bike-share's ``ride``). Each relation of one then has its copy in the
        other, and ``all`` = twin relates copies alone: the rounds hide alike in both, so
        one is solved and the other takes its flags (a third of a rebuild's Metro plan).

        Not with a never-published count of ``min_athletes`` people or more ("not a
        ride"): one taken as known and hidden with its direction is a partner that
        ``all`` = twin gives away, and the copies would part for a round."""
        layers = list(dict.fromkeys(layer for _, layer in self.blocks))
        if "all" not in layers:
            return None
        full = [layer for layer in layers
                if layer != "all" and any(len(self.blocks[(t, layer)].sums) for t in TABLE_BY)]  # fmt: skip
        if len(full) != 1 or full[0] == OTHER:
            return None
        twin = full[0]
        for table in TABLE_BY:
            whole = self.blocks[(table, "all")]
            if not _same_sums(whole.sums, self.blocks[(table, twin)].sums):
                return None
            if whole.columns > _NOT_A_RIDE and len(whole.sums):
                people = whole.sums.bikes.people.reshape(len(whole.sums), 2, -1)
                if int(people[:, :, _NOT_A_RIDE - _BIKES.start].max()) >= self.k:
                    return None
        return twin

    def _solve_blocks(self, blocks: dict[tuple[str, str], _Block], n_cells: int) -> np.ndarray:
        trips = np.zeros(n_cells, dtype=np.int64)
        people = np.zeros(n_cells, dtype=np.int64)
        shown = np.zeros(n_cells, dtype=bool)
        for block in blocks.values():
            t, p = block.counts()
            ids = block.ids
            trips[ids], people[ids] = t, p
            ok = p >= self.k
            ok[:, :, 1:] &= ok[:, :, :1]  # a sub-count only within a published direction
            if block.columns > _NOT_A_RIDE:
                ok[:, :, _NOT_A_RIDE] = False
            shown[ids] = ok
        never = np.zeros(n_cells, dtype=bool)  # counts no file publishes
        for (_, layer), block in blocks.items():
            if layer == OTHER:
                never[block.ids] = True
            elif block.columns > _NOT_A_RIDE:
                never[block.ids[:, :, _NOT_A_RIDE]] = True
        shown &= ~never
        rel = _Relations()
        self._relations(rel, blocks)
        rel_total, part_rel, part_cell = rel.arrays(people > 0)
        hidden = _fixed_point(trips, people, ~shown, never, rel_total, part_rel, part_cell,
                              self.k, _directions(blocks))  # fmt: skip
        return hidden[:n_cells]

    def _relations(self, rel: _Relations, blocks: dict[tuple[str, str], _Block]) -> None:
        """Every relation: within each layer, and ``all`` = the group layers + the rest."""
        layers = sorted({layer for _, layer in blocks})
        for layer in layers:  # the never-published part's too: its sums may give it away
            self._within_layer(rel, layer, blocks)
        if "all" not in layers:
            return
        for table, by in TABLE_BY.items():
            whole = blocks[(table, "all")]
            keys = tuple(whole.sums.keys[k] for k in (*self.edge, *by))
            for group in [g for g in (*_GROUPS, OTHER) if (table, g) in blocks]:
                part = blocks[(table, group)]
                at = rows_of(keys, tuple(part.sums.keys[k] for k in (*self.edge, *by)))
                rel.add(f"layers {table}", whole.ids[at], part.ids)

    def _within_layer(
        self, rel: _Relations, layer: str, blocks: dict[tuple[str, str], _Block]
    ) -> None:
        edge, month = blocks[("edge", layer)], blocks[("month", layer)]
        hour, day = blocks[("hour", layer)], blocks[("hour_day", layer)]
        # Within a row: trips = commute + leisure = rides + e-bike rides + the rest = bands.
        for block in (edge, month, day):
            ids = block.ids
            for cols in (_KINDS, _BIKES) + ((_BANDS,) if block.columns > 6 else ()):
                n = cols.stop - cols.start
                rel.add(f"row {cols.start}", np.repeat(ids[:, :, :1], n, axis=2), ids[:, :, cols])

        def edge_rows(block: _Block, of: _Block) -> np.ndarray:
            return rows_of(tuple(of.sums.keys[k] for k in self.edge),
                           tuple(block.sums.keys[k] for k in self.edge))  # fmt: skip

        # An edge's every count is the sum of its months'.
        rel.add("months", edge.ids[edge_rows(month, edge)], month.ids)
        # ... and of its hours' by day type (the columns both tables have).
        rel.add("hours", edge.ids[edge_rows(day, edge)][:, :, : day.columns], day.ids)
        # A band of an edge is the sum of its hours (all days).
        band = BAND_OF_HOUR[hour.sums.keys["hour"].astype(np.int64)]
        at = edge_rows(hour, edge)
        heads = edge.ids[at[:, None], np.arange(2)[None, :], (6 + band)[:, None]]
        rel.add("band hours", heads, hour.ids)
        # An hour (all days) is its weekday plus its weekend.
        hkey = (*self.edge, "hour")
        at = rows_of(tuple(hour.sums.keys[k] for k in hkey), tuple(day.sums.keys[k] for k in hkey))
        rel.add("day types", hour.ids[at], day.ids[:, :, :1])


def _directions(blocks: dict[tuple[str, str], _Block]) -> tuple[np.ndarray, np.ndarray]:
    """Per sub-count cell, its direction's cell: hiding a direction hides them all."""
    subs, heads = [], []
    for block in blocks.values():
        if block.columns > 1:
            ids = block.ids
            subs.append(ids[:, :, 1:].ravel())
            heads.append(np.repeat(ids[:, :, 0].ravel(), block.columns - 1))
    if not subs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(subs), np.concatenate(heads)


def _same_sums(x: DirectionSums, y: DirectionSums) -> bool:
    """Whether two tables have the very same rows (keys) and counts (trips, people):
    all that the plan reads of them."""
    if x is y:
        return True
    if len(x) != len(y) or x.keys.keys() != y.keys.keys():
        return False
    if not all(np.array_equal(x.keys[k], y.keys[k]) for k in x.keys):
        return False
    for a, b in ((x.total, y.total), (x.kinds, y.kinds), (x.bikes, y.bikes), (x.bands, y.bands)):
        if a is None or b is None or a is b:
            if (a is None) != (b is None):
                return False
            continue
        if not (np.array_equal(a.trips, b.trips) and np.array_equal(a.people, b.people)):
            return False
    return True


class CellPlan:
    """``EdgePlan`` for hexagons or OD pairs: per layer, the table over the window
    (keyed ``key``) and the monthly one, their totals the sums of their months, and
    ``all`` the sum of the group layers' (and other sports')."""

    def __init__(
        self, arrs: dict[str, np.ndarray], key: tuple[str, ...], max_trips: int | None, k: int
    ) -> None:
        self.k = k
        self.blocks: dict[
            tuple[str, str], tuple[int, dict[str, np.ndarray], np.ndarray, np.ndarray]
        ] = {}
        other = other_records(arrs)
        if other is not None:
            arrs = {**arrs, OTHER: other}
        start = 0
        for layer, arr in arrs.items():
            for table, tkey in (("total", key), ("month", (*key, "month"))):
                recs, first, cells = cell_sums(arr, tkey, max_trips)
                keys = {f: recs[f][first] for f in tkey}
                self.blocks[(table, layer)] = (start, keys, cells.trips[:, 0], cells.people[:, 0])
                start += len(first)
        self.key, self.n_cells = key, start
        self._hidden: np.ndarray | None = None

    def hide(self, table: str, layer: str) -> np.ndarray:
        if self._hidden is None:
            self._hidden = self._solve()
        start, _, trips, _ = self.blocks[(table, layer)]
        return self._hidden[start : start + len(trips)]

    def _ids(self, table: str, layer: str) -> np.ndarray:
        start, _, trips, _ = self.blocks[(table, layer)]
        return start + np.arange(len(trips))

    def _solve(self) -> np.ndarray:
        trips = np.zeros(self.n_cells, dtype=np.int64)
        people = np.zeros(self.n_cells, dtype=np.int64)
        for start, _, t, p in self.blocks.values():
            trips[start : start + len(t)], people[start : start + len(t)] = t, p
        rel = _Relations()
        layers = sorted({layer for _, layer in self.blocks})
        for layer in layers:
            _, tk, _, _ = self.blocks[("total", layer)]
            _, mk, _, _ = self.blocks[("month", layer)]
            at = rows_of(tuple(tk[f] for f in self.key), tuple(mk[f] for f in self.key))
            rel.add("months", self._ids("total", layer)[at], self._ids("month", layer))
        if "all" in layers:
            for table in ("total", "month"):
                _, wk, _, _ = self.blocks[(table, "all")]
                fields = tuple(wk)
                whole = self._ids(table, "all")
                for group in [g for g in (*_GROUPS, OTHER) if (table, g) in self.blocks]:
                    _, gk, _, _ = self.blocks[(table, group)]
                    at = rows_of(tuple(wk[f] for f in fields), tuple(gk[f] for f in fields))
                    rel.add(f"layers {table}", whole[at], self._ids(table, group))
        never = np.zeros(self.n_cells, dtype=bool)
        for (_, layer), (start, _, t, _) in self.blocks.items():
            if layer == OTHER:
                never[start : start + len(t)] = True
        shown = (people >= self.k) & ~never
        rel_total, part_rel, part_cell = rel.arrays(people > 0)
        none = np.zeros(0, np.int64)
        hidden = _fixed_point(trips, people, ~shown, never, rel_total, part_rel, part_cell,
                              self.k, (none, none))  # fmt: skip
        return hidden[: self.n_cells]


def _fixed_point(
    trips: np.ndarray,
    people: np.ndarray,
    hidden: np.ndarray,
    never: np.ndarray,
    rel_total: np.ndarray,
    part_rel: np.ndarray,
    part_cell: np.ndarray,
    k: int,
    directions: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Hide partners until no relation gives a protected count away. Protected: a hidden
    count of 1..k-1 people, or one hidden as a partner (or under a partner direction); a
    count never published for its own sake (trips not by bike, other sports) is not, by
    itself; with ``min_athletes`` people or more it is taken as known, not as an unknown
    that hides its neighbours (its own relations may give it away)."""
    # Cells nobody is behind are known zeros (and hidden already): work on the others.
    live = np.flatnonzero(people > 0)
    at = np.full(len(people), -1, dtype=np.int64)
    at[live] = np.arange(len(live))
    sub, head = directions
    keep = at[sub] >= 0
    out = hidden.copy()
    out[live] = _solve_live(
        trips[live], people[live], hidden[live], never[live],
        at[rel_total], part_rel, at[part_cell], k, (at[sub[keep]], at[head[keep]]),
    )  # fmt: skip
    return out


def _solve_live(
    trips: np.ndarray,
    people: np.ndarray,
    hidden: np.ndarray,
    never: np.ndarray,
    rel_total: np.ndarray,
    part_rel: np.ndarray,
    part_cell: np.ndarray,
    k: int,
    directions: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """``_fixed_point`` over cells with people (every part and total has some)."""
    n_rel = len(rel_total)
    sub, head = directions
    hidden = hidden.copy()
    partner = np.zeros(len(hidden), dtype=bool)
    part_people = people[part_cell]
    # A never-published count of k people or more is taken as known until it turns out
    # to be what a relation of its own gives a group of fewer away by: then, as nothing
    # can hide it, it becomes a partner, and the published counts it is derived from go.
    known = never & (people >= k)
    small = people < k
    # Costly partners: a direction (its every sub-count goes with it), and whatever equals
    # one through sums of a single part with people (hiding one would give the other away,
    # so both would go: a sub-count that is all of its direction, the one hour of a band
    # that is all of the direction's trips).
    costly = np.zeros(len(hidden), dtype=bool)
    costly[head] = True
    sole = np.bincount(part_rel, minlength=n_rel)[part_rel] == 1
    same_a, same_b = part_cell[sole], rel_total[part_rel[sole]]
    while True:
        before = int(costly.sum())
        costly[same_a] |= costly[same_b]
        costly[same_b] |= costly[same_a]
        if int(costly.sum()) == before:
            break
    hidden[sub] |= hidden[head]
    # Only relations with a cell changed in the last round can have changed: each round
    # looks at those alone (the first at all of them).
    act = np.arange(n_rel)
    idx = np.arange(len(part_cell))
    while True:
        pr = part_rel[idx] if len(act) == n_rel else np.searchsorted(act, part_rel[idx])
        pc, pp = part_cell[idx], part_people[idx]
        m, tot = len(act), rel_total[act]
        unknown = hidden[pc] & ~known[pc]
        protect = hidden[pc] & (small[pc] | partner[pc])
        n_hidden = np.bincount(pr, weights=unknown, minlength=m)
        n_protect = np.bincount(pr, weights=protect, minlength=m)
        # The difference is a group's if a hidden part holds k people or more, or if the
        # hidden parts do between them: at least the total's people less the shown ones'.
        n_group = np.bincount(pr, weights=unknown & (pp >= k), minlength=m)
        shown_ppl = np.bincount(pr, weights=np.where(unknown, 0, pp), minlength=m)
        group = (n_group > 0) | (people[tot] - shown_ppl >= k)
        total_shown = ~hidden[tot] | known[tot]
        total_protect = hidden[tot] & (small[tot] | partner[tot])
        exposed = total_shown & (n_protect > 0) & ((n_hidden == 1) | ~group)
        need = exposed | (~total_shown & total_protect & (n_hidden == 0))
        if not need.any():
            return hidden
        changed: list[np.ndarray] = []
        cand = np.flatnonzero(need[pr] & (~hidden[pc] | known[pc]))
        chosen = np.zeros(m, dtype=bool)
        if len(cand):
            c, r = pc[cand], pr[cand]
            order = np.lexsort((c, trips[c], costly[c], r))
            first = np.ones(len(order), dtype=bool)
            first[1:] = r[order][1:] != r[order][:-1]
            best, rels = c[order[first]], r[order[first]]
            # Where the cheapest part is costly and the total is not, the total goes.
            instead = costly[best] & exposed[rels] & ~costly[tot[rels]]
            picked = np.where(instead, tot[rels], best)
            changed.append(picked)
            chosen[rels] = True
        # No published part left to hide beside it: the total itself goes.
        changed.append(tot[need & ~chosen & total_shown])
        # Cells are only flagged from here on: a cell twice in ``new`` does no harm, so
        # no ``np.unique`` (hash-based since numpy 2.3: a fifth of the solve).
        new = np.concatenate(changed)
        hidden[new] = partner[new] = True
        known[new] = False
        touched = np.zeros(len(hidden), dtype=bool)
        touched[new] = True
        # A direction hidden (or made a partner) takes its sub-counts with it.
        under = sub[touched[head]]
        hidden[under] = partner[under] = True
        touched[under] = True
        rel_active = np.zeros(n_rel, dtype=bool)
        rel_active[part_rel[touched[part_cell]]] = True
        rel_active |= touched[rel_total]
        act = np.flatnonzero(rel_active)
        idx = np.flatnonzero(rel_active[part_rel])
