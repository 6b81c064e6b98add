"""The incremental privacy threshold: redo ``window.threshold`` only near changed athletes.

A rebuild where few athletes changed keeps, per layer, what the last build decided (the
cells that met the threshold, and the drawn heat after ``thin_to_lines``) and recomputes
only where a decision can change. The result is exactly the full computation's (same
cells, same float bits, same order): the published site is byte-identical to a
``--no-cache`` build (tests/test_threshold_cache.py, tests/test_window_cache_cli.py).

Why the reach is enough. Let C be the cells where a changed athlete's rows differ
(gone, new, or another count: only there do per-cell heat and athletes change; any
larger set works too). With ``threshold_ring`` R:

* A cell's threshold decision reads the athletes within R of it: only cells within R of
  C (``near``) can flip, and deciding them reads the ridden cells within 2R of C.
* ``thin_to_lines`` is local. A published cell v moves its heat to the middle of the
  published cells within ``THIN_RING`` (2) of v, which lies within 2 of v; it joins
  that middle to the middles of published cells within 2 of it (grid paths or
  midpoints: all within 4 of v); the pair's join is made by the first pair in grid
  order with the same two middles, found among cells within 4 of v whose partners lie
  within 6, whose middles read cells within 8. So what v hands out (cells and shares)
  lands within ``_LANDS`` (4) of v and depends on the inputs within ``_READS`` (8) of v,
  and a drawn cell's heat is the sum of what the cells within 4 of it hand out, in an
  order (voter, then pair of middles, by cell id) that any subset of cells keeps.
* So drawn cells farther than 12 from ``near`` are unchanged, and those within 12 are
  exactly what thinning the published cells within 24 of ``near`` gives them.

Pentagons distort the grid (the geometry above assumes hexagons): any change near one
means a full computation, as does a change whose reach holds more than ``FULL_SHARE``
of the rows (the work of redoing it is about that share of a full computation).
The threshold decisions are exact whatever the geometry, and every drawn cell of the
result is checked to be one that met the threshold (else: a full computation).
"""

from __future__ import annotations

from dataclasses import dataclass

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.arrays import distinct
from heatmetro.core.h3_vector import grid_disks, grid_distances_in_plane
from heatmetro.site_builder.window import (
    THIN_RING,
    LayerHeat,
    cell_totals,
    nearby_athletes,
    thin_to_lines,
    threshold,
)

_LANDS = 2 * THIN_RING  # how far from a published cell its heat and joins land
_READS = 4 * THIN_RING  # how far from it the inputs its share depends on lie
_REACH = _LANDS + _READS  # drawn cells changed: within this of a changed decision
# Redoing the rows in reach costs about their share of a full computation, plus the reach.
FULL_SHARE = 0.5
_PENTAGON_BASES = np.array(
    sorted(h3.get_base_cell_number(p) for p in h3.get_pentagons(0)), np.uint64
)


@dataclass(frozen=True)
class ThresholdState:
    """What a layer's next build reuses: the sorted cells that met the threshold
    (ridden or not) and the drawn heat."""

    open_cells: np.ndarray
    drawn: LayerHeat


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
        self.whole: list[str] = []  # layers computed from scratch (the others: near changes)
        # Layers often repeat one another (every activity a ride: ``ride`` is ``all``).
        self._done: list[tuple[np.ndarray, ThresholdState, bool]] = []

    def __call__(
        self,
        layer: str,
        per_athlete: np.ndarray,
        min_athletes: int,
        max_per_athlete: int,
        *,
        threshold_ring: int,
    ) -> LayerHeat:
        """``window.publishable_heat`` of the layer (not partial), exactly."""
        for rows, state, whole in self._done:  # the threshold is a function of the rows
            if rows is per_athlete or (
                rows.dtype == per_athlete.dtype and np.array_equal(rows, per_athlete)
            ):
                return self._keep(layer, state.open_cells, state.drawn, whole)
        previous, changed = self.previous.get(layer), self.changed.get(layer)
        result = None
        if previous is not None and changed is not None:
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
            drawn, open_cells = threshold(
                layer, per_athlete, min_athletes, max_per_athlete, threshold_ring=threshold_ring
            )
        else:
            drawn, open_cells = result
        self._done.append((per_athlete, ThresholdState(open_cells, drawn), result is None))
        return self._keep(layer, open_cells, drawn, result is None)

    def _keep(self, layer: str, open_cells: np.ndarray, drawn: LayerHeat, whole: bool) -> LayerHeat:
        drawn = LayerHeat(layer, drawn.cells, drawn.heat, drawn.athletes)
        self.states[layer] = ThresholdState(open_cells, drawn)
        if whole:
            self.whole.append(layer)
        return drawn

    def summary(self) -> str:
        """How the layers were decided, for the snapshot's cache line."""
        near = len(self.states) - len(self.whole)
        return f"threshold redone near the changes in {near} of {len(self.states)} layers"


def incremental_threshold(
    layer: str,
    per_athlete: np.ndarray,
    min_athletes: int,
    max_per_athlete: int,
    *,
    threshold_ring: int,
    previous: ThresholdState,
    changed: np.ndarray,
    full_share: float = FULL_SHARE,
    rings: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[LayerHeat, np.ndarray] | None:
    """``window.threshold`` of ``per_athlete``, given the state of the last build and the
    cells where athletes changed since; None when a full computation is the way (the
    rows within reach of the change are more than ``full_share`` of all, or a pentagon
    is near). ``rings``: ``grid_distances(changed, _reach(threshold_ring))``, if known."""
    ring = threshold_ring
    changed = distinct(changed)
    if len(changed) == 0:
        return previous.drawn, previous.open_cells
    if len(per_athlete) == 0:
        empty = not len(previous.drawn.cells) and not len(previous.open_cells)
        return (previous.drawn, previous.open_cells) if empty else None
    thin = ring > 0
    inner = ring + (_REACH if thin else 0)  # drawn cells that may change
    reads = ring + (2 * _REACH if thin else 0)  # ... and the published cells they read
    region, dist = rings if rings is not None else grid_distances(changed, _reach(ring))
    if touches_pentagon(region):
        return None
    # Only the rows in reach are read: per-cell totals are the athletes' rows there.
    rows = per_athlete[_member(per_athlete["cell"], region)]
    if len(rows) > full_share * len(per_athlete):
        return None
    cells, inv, heat, athletes = cell_totals(rows, max_per_athlete)
    # Decisions that may flip: the cells within ring of a change; they read 2 rings out.
    near = region[dist <= ring]
    decide = _member(cells, region[dist <= 2 * ring])
    at = np.flatnonzero(decide[inv])
    near_cells, counts = nearby_athletes(
        rows["athlete"][at], cells[decide], (np.cumsum(decide) - 1)[inv[at]], ring,
        max(min_athletes, 1),
    )  # fmt: skip
    met = near_cells[(counts >= min_athletes) & _member(near_cells, near)]
    kept = previous.open_cells[~_member(previous.open_cells, near)]
    open_cells = np.insert(kept, np.searchsorted(kept, met), met)  # disjoint, sorted
    pub = _member(cells, open_cells) & _member(cells, region[dist <= reads])
    part = LayerHeat(layer, cells[pub], heat[pub], athletes[pub])
    if thin:
        part = thin_to_lines(part, open_cells)
    redo = region[dist <= inner]
    new = _member(part.cells, redo)
    old = previous.drawn
    same = ~_member(old.cells, redo)
    cells_out = np.concatenate([old.cells[same], part.cells[new]])
    order = np.argsort(cells_out, kind="stable")
    drawn = LayerHeat(
        layer,
        cells_out[order],
        np.concatenate([old.heat[same], part.heat[new]])[order],
        np.concatenate([old.athletes[same], part.athletes[new]])[order],
    )
    if not _member(drawn.cells, open_cells).all():  # never draw a cell below threshold
        return None
    return drawn, open_cells


def _reach(ring: int) -> int:
    """How many rings around the changes ``incremental_threshold`` looks."""
    return max(2 * ring, ring + 2 * _REACH) if ring else 0


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
    if len(sorted_set) == 0:
        return np.zeros(len(cells), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, cells), len(sorted_set) - 1)
    return np.asarray(sorted_set[at] == cells)
