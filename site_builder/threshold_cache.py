"""The incremental privacy threshold: redo ``window.threshold`` only near changed athletes.

A rebuild where few athletes changed keeps, per layer, what the last build decided (the
cells that met the threshold, the published cells, how ``thin_to_lines`` drew them and
the drawn heat) and recomputes only what a change can reach. The result is exactly the
full computation's (same cells, same float bits, same order): the published site is
byte-identical to a ``--no-cache`` build (tests/test_threshold_cache.py,
tests/test_window_cache_cli.py).

Why the reach is enough. Let C be the cells where a changed athlete's rows differ
(gone, new, or another count: only there do per-cell heat and athletes change; any
larger set works too). With ``threshold_ring`` R:

* A cell's threshold decision reads the athletes within R of it: only cells within R of
  C (``near``) can flip, and deciding them reads the ridden cells within 2R of C.
* So a published cell can come, go or change heat or athletes only in ``near``; the
  thinning is then redone from exactly those cells and the flipped decisions
  (``thin_cache``), its work following what actually changed.

Pentagons distort the grid: any change near one means a full computation, as does a
change whose reach holds more than ``FULL_SHARE`` of the rows. The threshold decisions
are exact whatever the geometry, and every drawn cell of the result is checked to be
one that met the threshold (else: a full computation).
"""

from __future__ import annotations

from dataclasses import dataclass

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.arrays import distinct, take_rows
from heatmetro.core.h3_vector import grid_disks, grid_distances_in_plane
from heatmetro.site_builder.split_rows import SplitRows, whole
from heatmetro.site_builder.thin_cache import disk_cells, incremental_thin
from heatmetro.site_builder.window import (
    THIN_RING,
    LayerHeat,
    Thinned,
    is_open,
    nearby_athletes,
    region_index,
    threshold_with_votes,
)

# Redoing the rows in reach costs about their share of a full computation, plus the reach.
FULL_SHARE = 0.5
_PENTAGON_BASES = np.array(
    sorted(h3.get_base_cell_number(p) for p in h3.get_pentagons(0)), np.uint64
)


@dataclass(frozen=True)
class ThresholdState:
    """What a layer's next build reuses: the sorted cells that met the threshold
    (ridden or not), the drawn heat, and how ``thin_to_lines`` drew it (None without a
    threshold ring: then the drawn cells are the published ones)."""

    open_cells: np.ndarray
    drawn: LayerHeat
    thinned: Thinned | None = None


def threshold_state(
    layer: str, per_athlete: np.ndarray, min_athletes: int, max_per_athlete: int, *,
    threshold_ring: int,
) -> ThresholdState:  # fmt: skip
    """``window.threshold`` from scratch, as a state."""
    drawn, open_cells, thinned = threshold_with_votes(
        layer, per_athlete, min_athletes, max_per_athlete, threshold_ring=threshold_ring
    )
    return ThresholdState(open_cells, drawn, thinned)


class LayerThresholds:
    """The threshold of each layer of one build, from scratch or from ``previous``.

    Args:
        previous: per layer, the last build's state (None: compute everything).
        changed: per layer, the cells where a changed athlete's rows differ between the
            last build and this one (a layer without an entry: computed from scratch).
            A layer with changes is redone near all layers' changes: more cells than
            its own, which is still exact, and the rings around them are found once.
    """

    def __init__(
        self,
        previous: dict[str, ThresholdState] | None = None,
        changed: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.previous = previous or {}
        self.changed = changed or {}
        every = [c for c in self.changed.values() if len(c)]
        self._union = distinct(np.concatenate(every)) if every else np.zeros(0, np.uint64)
        self._rings: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.states: dict[str, ThresholdState] = {}
        # How each layer was decided: computed from scratch, redone near the changes, or
        # kept as it was (none of its athletes' cells changed).
        self.how: dict[str, str] = {}
        # Layers often repeat one another (every activity a ride: ``ride`` is ``all``).
        self._done: list[tuple[np.ndarray | SplitRows, ThresholdState, str]] = []

    def __call__(
        self,
        layer: str,
        per_athlete: np.ndarray | SplitRows,
        min_athletes: int,
        max_per_athlete: int,
        *,
        threshold_ring: int,
    ) -> LayerHeat:
        """``window.publishable_heat`` of the layer (not partial), exactly."""
        for rows, state, how in self._done:  # the threshold is a function of the rows
            if rows is per_athlete or (
                # Rows still in runs are not put together to be compared: a layer equal
                # to another is then computed again, to the same result.
                isinstance(rows, np.ndarray)
                and isinstance(per_athlete, np.ndarray)
                and rows.dtype == per_athlete.dtype
                and np.array_equal(rows, per_athlete)
            ):
                return self._keep(layer, state, how)
        previous, changed = self.previous.get(layer), self.changed.get(layer)
        result, how = None, _WHOLE
        if previous is not None and changed is not None:
            how = _NEAR if len(changed) else _KEPT
            if len(changed):
                changed = self._union
            reach = _reach(threshold_ring)
            if len(changed) and reach not in self._rings:
                self._rings[reach] = grid_distances(changed, reach)
            result = incremental_threshold(
                layer, per_athlete, min_athletes, max_per_athlete,
                threshold_ring=threshold_ring, previous=previous, changed=changed,
                rings=self._rings.get(reach),
            )  # fmt: skip
        if result is None:
            how = _WHOLE
        state = result or threshold_state(
            layer, whole(per_athlete), min_athletes, max_per_athlete, threshold_ring=threshold_ring
        )
        self._done.append((per_athlete, state, how))
        return self._keep(layer, state, how)

    def _keep(self, layer: str, state: ThresholdState, how: str) -> LayerHeat:
        drawn = state.drawn
        drawn = LayerHeat(layer, drawn.cells, drawn.heat, drawn.athletes)
        self.states[layer] = ThresholdState(state.open_cells, drawn, state.thinned)
        self.how[layer] = how
        return drawn

    def summary(self) -> str:
        """How the layers were decided, for the snapshot's cache line: a layer none of
        whose athletes changed is kept, not counted as redone."""
        n = {h: sum(1 for v in self.how.values() if v == h) for h in (_NEAR, _KEPT, _WHOLE)}
        parts = [f"threshold redone near the changes in {n[_NEAR]} of {len(self.how)} layers"]
        if n[_KEPT]:
            parts.append(f"{n[_KEPT]} unchanged")
        if n[_WHOLE]:
            parts.append(f"{n[_WHOLE]} computed whole")
        return ", ".join(parts)


_WHOLE, _NEAR, _KEPT = "whole", "near", "kept"


def incremental_threshold(
    layer: str,
    per_athlete: np.ndarray | SplitRows,
    min_athletes: int,
    max_per_athlete: int,
    *,
    threshold_ring: int,
    previous: ThresholdState,
    changed: np.ndarray,
    full_share: float = FULL_SHARE,
    rings: tuple[np.ndarray, np.ndarray] | None = None,
) -> ThresholdState | None:
    """``threshold_state`` of ``per_athlete``, given the state of the last build and
    the cells where athletes changed since; None when a full computation is the way
    (the rows within reach of the change are more than ``full_share`` of all, a
    pentagon is near, or the last state lacks how it thinned). ``rings``:
    ``grid_distances(changed, _reach(threshold_ring))``, if known."""
    ring = threshold_ring
    changed = distinct(changed)
    if len(changed) == 0:
        return previous
    if len(per_athlete) == 0:
        empty = not len(previous.drawn.cells) and not len(previous.open_cells)
        return previous if empty else None
    if ring and previous.thinned is None:
        return None
    region, dist = rings if rings is not None else grid_distances(changed, _reach(ring))
    if touches_pentagon(region):
        return None
    # Only the rows in reach are read: per-cell totals are the athletes' rows there,
    # added up by their cells' places in the region (sorted: no sort of the rows).
    if isinstance(per_athlete, SplitRows):  # taken from its runs, not put together
        rows, at = per_athlete.in_region(region)
        if len(rows) > full_share * len(per_athlete):
            return None
    else:
        at = region_index(per_athlete["cell"], region)
        inside = at >= 0
        if inside.sum() > full_share * len(per_athlete):
            return None
        rows, at = take_rows(per_athlete, inside), at[inside]
    capped = np.minimum(rows["n"], max_per_athlete).astype(np.float64)
    ridden = np.bincount(at, minlength=len(region)) > 0
    cells, inv = region[ridden], (np.cumsum(ridden) - 1)[at]
    # Heat sums small integers: exact in float64, the same bits as ``cell_totals``.
    heat = np.bincount(inv, weights=capped, minlength=len(cells))
    athletes = np.bincount(inv, minlength=len(cells)).astype(np.uint32)
    # Decisions that may flip: the cells within ring of a change; they read ring
    # further (the whole region).
    near = region[dist <= ring]
    near_cells, counts = nearby_athletes(
        rows["athlete"], cells, inv, ring, max(min_athletes, 1), only=near
    )
    met = near_cells[(counts >= min_athletes) & _member(near_cells, near)]
    old_open = previous.open_cells
    was = _member(near, old_open)
    kept = np.delete(old_open, np.searchsorted(old_open, near[was]))
    open_cells = np.insert(kept, np.searchsorted(kept, met), met)  # disjoint, sorted
    flipped = np.setxor1d(near[was], met, assume_unique=True)
    # The published cells near the changes now, spliced into the last build's.
    pub = _member(cells, met)
    now = LayerHeat(layer, cells[pub], heat[pub], athletes[pub])
    before = previous.drawn if previous.thinned is None else previous.thinned.published
    published, moved = _splice(before, _member(before.cells, near), now)
    if not ring:
        return ThresholdState(open_cells, published)
    assert previous.thinned is not None
    # The rings around the changes already hold those around the changed published
    # cells, but for the ones that changed by a flip alone.
    around = None
    if _reach(ring) >= THIN_RING:
        alone = moved[~_member(moved, changed)]
        around = region[dist <= THIN_RING]
        if len(alone):
            around = distinct(np.concatenate([around, disk_cells(alone)]))
    drawn, thinned = incremental_thin(
        previous.thinned, previous.drawn, published, moved, flipped, open_cells, around
    )
    # Never draw a cell below threshold: the last build drew none, the cells added up
    # again are open ones (``sum_votes``), so only a drawn cell that closed could be.
    closed = near[was][~_member(near[was], met)]
    if _member(closed, drawn.cells).any():
        return None
    return ThresholdState(open_cells, drawn, thinned)


def _splice(before: LayerHeat, inside: np.ndarray, now: LayerHeat) -> tuple[LayerHeat, np.ndarray]:
    """``before``'s cells not ``inside``, with ``now``'s (all of them inside); and the
    cells where the two differ (came, went, other heat bits or athletes)."""
    out = ~inside
    cells = before.cells[out]
    at = np.searchsorted(cells, now.cells)
    spliced = LayerHeat(
        before.layer,
        np.insert(cells, at, now.cells),
        np.insert(before.heat[out], at, now.heat),
        np.insert(before.athletes[out], at, now.athletes),
    )
    # Both sides sorted: each cell's row before and now side by side (absent: no row).
    was = before.cells[inside]
    cells = distinct(np.concatenate([was, now.cells]))
    rows = []
    for side in (LayerHeat("", was, before.heat[inside], before.athletes[inside]), now):
        if not len(side.cells):
            nothing = np.zeros(len(cells), np.uint64)
            rows.append((nothing.astype(bool), nothing, nothing))
            continue
        at = np.minimum(np.searchsorted(side.cells, cells), len(side.cells) - 1)
        there = side.cells[at] == cells
        rows.append((there, side.heat.view(np.uint64)[at], side.athletes[at].astype(np.uint64)))
    (t0, h0, a0), (t1, h1, a1) = rows
    differ = (t0 != t1) | (t0 & t1 & ((h0 != h1) | (a0 != a1)))
    return spliced, cells[differ]


def _reach(ring: int) -> int:
    """How many rings around the changes ``incremental_threshold`` reads: a decision
    within ``ring`` of a change counts athletes ``ring`` further."""
    return 2 * ring


def grid_distances(cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The cells within ``k`` rings of ``cells`` (sorted) and each one's grid distance
    to the nearest of them. Breadth first: a neighbour of a cell at distance d is at d - 1,
    d or d + 1, so each ring is found from the last two (work in the area, not k**2 per
    cell). Within one base cell, on a plane of local IJ coordinates (twice as fast); with
    H3's disks elsewhere."""
    planar = grid_distances_in_plane(cells, k)
    return planar if planar is not None else grid_distances_by_disks(cells, k)


def grid_distances_by_disks(cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``grid_distances`` anywhere on the globe: each ring from H3's disks of the last."""
    rings, before = [distinct(cells)], np.zeros(0, np.uint64)
    for _ in range(k):
        around = grid_disks(rings[-1], 1).reshape(-1)
        around.sort()  # then drop repeats: cheaper than np.unique's hashing here
        around = around[np.concatenate(([True], around[1:] != around[:-1]))]
        out = around[~(_member(around, rings[-1]) | _member(around, before))]
        if len(out) == 0:
            break
        before = rings[-1]
        rings.append(out)
    region = np.concatenate(rings)
    dist = np.repeat(np.arange(len(rings)), [len(r) for r in rings])
    order = np.argsort(region, kind="stable")
    return region[order], dist[order]


def touches_pentagon(cells: np.ndarray) -> bool:
    """Whether any cell lies in one of the 12 base cells holding a pentagon."""
    base = (cells >> np.uint64(45)) & np.uint64(0x7F)
    return bool(np.isin(base, _PENTAGON_BASES).any())


def _member(cells: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Per cell, whether it is in ``sorted_set`` (sorted, distinct)."""
    return is_open(cells, sorted_set)
