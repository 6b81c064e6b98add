"""What one snapshot reads from the store: the 12-month window, already privacy-filtered.

The writers (tiles, pages, Metro files) take a ``WindowData`` and never touch the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.arrays import concat_rows, distinct, take_rows
from heatmetro.core.h3_vector import (
    cells_to_latlng,
    grid_disks,
    grid_path_interiors,
    latlng_to_cells,
)
from heatmetro.core.spliced_rows import SplicedRows
from heatmetro.state.aggregates import cells_to_parent


@dataclass(frozen=True)
class LayerHeat:
    """Published heat of one layer at the heat resolution.

    Attributes:
        layer: ``all``, ``ride``, ``run``, ``water`` or ``winter``.
        cells: H3 cells (uint64), sorted, each with ``min_athletes`` distinct athletes in
            the cell or within ``threshold_ring`` rings of it: ridden ones, or with
            ``thin_to_lines`` the middles of the ridden ones' heat.
        heat: per cell, the sum over athletes of ``min(activities, max_per_athlete)``
            (after ``thin_to_lines``: the heat of the cells that handed theirs to it).
        athletes: per cell, how many distinct athletes rode it (0 for a cell drawn
            between the lanes of a street by ``thin_to_lines``).
    """

    layer: str
    cells: np.ndarray
    heat: np.ndarray
    athletes: np.ndarray
    # Partial results only (``publishable_heat(partial=True)``): distinct athletes near
    # each cell of ``nearby_cells``, for the cluster snapshot to add up before thresholds.
    nearby_cells: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    nearby: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))


@dataclass(frozen=True)
class WindowData:
    """Everything a snapshot publishes from, for the window ``first_month..month``.

    ``edges``, ``hexagons`` and ``od`` hold, per layer, the records of
    ``heatmetro.state.records`` (``EDGE_DTYPE``, ``HEX_DTYPE``, ``OD_DTYPE``) with a leading
    ``athlete`` int32 field (an index local to this snapshot, never an identifier),
    one row per athlete, local month and key: a ``month`` field (months since year 0,
    see ``heatmetro.core.months.month_index``) and, on edges, ``ride`` (the record is of the ride layer,
    so planners can tell rides from e-bike rides). They are NOT thresholded yet: the Metro writer counts
    distinct athletes, suppresses below ``min_athletes`` and rounds.
    """

    month: str
    first_month: str
    heat: dict[str, LayerHeat]
    edges: dict[str, np.ndarray]
    hexagons: dict[str, np.ndarray]
    od: dict[str, np.ndarray]
    athletes: int
    activities: int
    counts: dict[str, int] = field(default_factory=dict)
    # ``month`` was not over when the snapshot ran (``--partial``): its counts are partial.
    month_in_progress: bool = False


def publishable_heat(
    layer: str,
    per_athlete: np.ndarray,
    min_athletes: int,
    max_per_athlete: int,
    *,
    threshold_ring: int,
    partial: bool = False,
) -> LayerHeat:
    """Cap each athlete's weight per cell, then keep the ridden cells with enough distinct
    athletes in their neighbourhood: the cell and the cells within ``threshold_ring`` rings.

    ``per_athlete`` has one row per (athlete, cell) with the athlete's activity count.
    Ring 0 is the plain per-cell rule. Ring 1 (7 cells, the area of one cell a resolution
    coarser but centred on the cell) lets a street ridden by ``min_athletes`` people whose
    tracks are metres apart read as one line, where few single cells hold all of them.

    ``partial``: no threshold; ``nearby_cells``/``nearby`` then hold this input's distinct
    athletes around every cell of the neighbourhoods (exact below ``min_athletes``, at
    least ``min_athletes`` otherwise), so that partial results over disjoint sets of
    athletes add up to the right decision (the cluster snapshot, ``publish_partials``).
    """
    if not partial:
        return threshold(
            layer, per_athlete, min_athletes, max_per_athlete, threshold_ring=threshold_ring
        )[0]
    if len(per_athlete) == 0:
        return _empty(layer)
    cells, inv, heat, athletes = cell_totals(per_athlete, max_per_athlete)
    near_cells, near = nearby_athletes(
        per_athlete["athlete"], cells, inv, threshold_ring, max(min_athletes, 1)
    )
    return LayerHeat(layer, cells, heat, athletes, near_cells, near)


def threshold(
    layer: str,
    per_athlete: np.ndarray,
    min_athletes: int,
    max_per_athlete: int,
    *,
    threshold_ring: int,
) -> tuple[LayerHeat, np.ndarray]:
    """``publishable_heat`` (not partial), and the sorted cells that met the threshold,
    ridden or not (``thin_to_lines``'s ``open_cells``)."""
    return threshold_with_votes(
        layer, per_athlete, min_athletes, max_per_athlete, threshold_ring=threshold_ring
    )[:2]


def threshold_with_votes(
    layer: str,
    per_athlete: np.ndarray,
    min_athletes: int,
    max_per_athlete: int,
    *,
    threshold_ring: int,
) -> tuple[LayerHeat, np.ndarray, Thinned | None]:
    """``threshold``, and how ``thin_to_lines`` drew (None without a ring): what an
    incremental rebuild keeps of it (``threshold_cache``)."""
    if len(per_athlete) == 0:
        nothing = np.zeros(0, np.uint64)
        return (
            _empty(layer),
            nothing,
            thin_with_votes(_empty(layer), nothing)[1] if threshold_ring else None,
        )
    cells, inv, heat, athletes = cell_totals(per_athlete, max_per_athlete)
    near_cells, near = nearby_athletes(
        per_athlete["athlete"], cells, inv, threshold_ring, max(min_athletes, 1)
    )
    open_cells = near_cells[near >= min_athletes]
    keep = near[np.searchsorted(near_cells, cells)] >= min_athletes
    published = LayerHeat(layer, cells[keep], heat[keep], athletes[keep])
    if not threshold_ring:
        return published, open_cells, None
    drawn, thinned = thin_with_votes(published, open_cells)
    return drawn, open_cells, thinned


def cell_totals(
    per_athlete: np.ndarray, max_per_athlete: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ridden cells (sorted), each row's index among them, and per cell the capped
    heat and the distinct athletes. Heat sums small integers: exact in float64, so the
    same bits whatever the order of the rows."""
    capped = np.minimum(per_athlete["n"], max_per_athlete).astype(np.float64)
    cells, inv = np.unique(per_athlete["cell"], return_inverse=True)
    inv = inv.reshape(-1)
    heat = np.bincount(inv, weights=capped, minlength=len(cells))
    athletes = np.bincount(inv, minlength=len(cells)).astype(np.uint32)
    return cells, inv, heat, athletes


def _empty(layer: str) -> LayerHeat:
    return LayerHeat(layer, np.zeros(0, np.uint64), np.zeros(0), np.zeros(0, np.uint32))


def publish_partials(
    layer: str,
    cells: np.ndarray,
    heat: np.ndarray,
    athletes: np.ndarray,
    near_cells: np.ndarray,
    near: np.ndarray,
    min_athletes: int,
) -> LayerHeat:
    """The threshold of ``publishable_heat`` over partial results of disjoint athletes,
    before ``thin_to_lines`` (which needs every region's cells).

    Each argument array may repeat a cell (one row per part); counts of distinct athletes
    add up because no athlete is in two parts. ``nearby_cells`` of the result: the cells
    that met the threshold, ridden or not (``thin_to_lines``'s ``open_cells``).
    """
    uniq, inv = np.unique(cells, return_inverse=True)
    # Heat sums are sums of small integers: exact in float64 whatever the order.
    h = np.bincount(inv, weights=heat, minlength=len(uniq))
    a = np.bincount(inv, weights=athletes, minlength=len(uniq)).astype(np.uint32)
    nu, ninv = np.unique(near_cells, return_inverse=True)
    n = np.bincount(ninv, weights=near, minlength=len(nu))
    keep = n[np.searchsorted(nu, uniq)] >= min_athletes
    met = n >= min_athletes
    return LayerHeat(layer, uniq[keep], h[keep], a[keep], nu[met], n[met].astype(np.uint32))


def neighbourhood_across_m(heat_resolution: int, threshold_ring: int) -> int:
    """How far across, in metres, the cells a threshold counts over are (on average)."""
    spacing = np.sqrt(3.0) * h3.average_hexagon_edge_length(heat_resolution, "m")
    return round(float((2 * threshold_ring + 1) * spacing))


_CHUNK_ROWS = 1 << 20  # rows expanded at once (x7 or x19 neighbours): bounds peak memory


def nearby_athletes(
    athlete: np.ndarray,
    cells: np.ndarray,
    inv: np.ndarray,
    ring: int,
    at_least: int,
    only: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct athletes within ``ring`` rings of each cell near a ridden one.

    Args:
        athlete: per row, the athlete (rows are distinct (athlete, cell) pairs).
        cells: the distinct ridden cells, sorted; ``inv`` maps each row to one.
        ring: 0 (the cell alone), 1 or 2.
        at_least: counts below this are exact; a count of this or more may be a lower
            bound (still at least this). Sums over disjoint athletes then decide
            ``>= at_least`` exactly.
        only: sorted distinct cells: the counts wanted (those of other cells may then
            be too low; an incremental rebuild decides only the cells near a change).

    Returns:
        The cells within ``ring`` of a ridden cell (sorted) and, per cell, the number of
        distinct athletes who rode it or a cell within ``ring`` rings of it.
    """
    own = np.bincount(inv, minlength=len(cells)).astype(np.uint32)
    if ring == 0:
        return cells, own
    disks = _disks(cells, ring)
    # The distinct cells of the disks and where each disk's cells are among them: one
    # argsort serves both that and the maxima below (np.unique + np.maximum.at: ~1.7x).
    flat_disks = disks.reshape(-1)
    by_cell = np.argsort(flat_disks)
    sorted_cells = flat_disks[by_cell]
    first = np.ones(len(sorted_cells), dtype=bool)
    np.not_equal(sorted_cells[1:], sorted_cells[:-1], out=first[1:])
    near_cells = sorted_cells[first]
    flat = np.empty(len(flat_disks), np.int64)
    flat[by_cell] = np.cumsum(first) - 1
    disk_idx = flat.reshape(disks.shape)
    # A cell with a neighbour ridden by at_least athletes has at least that many near it:
    # only the others (the sparse fringe, few rows) need distinct athletes counted.
    ridden_near = np.repeat(own, disks.shape[1])[by_cell]
    counts = np.maximum.reduceat(ridden_near, np.flatnonzero(first)).astype(np.int64)
    unsure = counts < at_least
    if only is not None:  # the fringe of a region: its counts are not read
        unsure &= is_open(near_cells, only)
    expand = np.asarray(unsure[disk_idx].any(axis=1))[inv]
    order = np.flatnonzero(expand)[np.argsort(athlete[expand], kind="stable")]
    ath = athlete[order].astype(np.int64)
    row_cell = inv.reshape(-1)[order]
    exact = np.zeros(len(near_cells), np.int64)
    # Chunks end at an athlete's last row, so no athlete is counted twice in a cell.
    step = max(1, _CHUNK_ROWS // disks.shape[1])
    lo = 0
    while lo < len(ath):
        hi = min(lo + step, len(ath))
        hi = int(np.searchsorted(ath, ath[hi - 1], side="right"))
        near = disk_idx[row_cell[lo:hi]]
        keys = (ath[lo:hi, None] * len(near_cells) + near)[unsure[near]]
        exact += np.bincount(distinct(keys) % len(near_cells), minlength=len(near_cells))
        lo = hi
    counts[unsure] = exact[unsure]
    return near_cells, counts.astype(np.uint32)


def _disks(cells: np.ndarray, ring: int) -> np.ndarray:
    """Per cell (sorted, distinct), the cells within ``ring`` rings (pentagons' shorter
    disks padded with the cell itself; repeats do not change a distinct count).

    A snapshot's layers share most cells (each is a subset of ``all``): the disks of the
    last calls are kept.
    """
    width = 1 + 3 * ring * (ring + 1)
    known, table = _DISK_CACHE.get(ring, (np.zeros(0, np.uint64), np.zeros((0, width), np.uint64)))
    at = np.minimum(np.searchsorted(known, cells), max(len(known) - 1, 0))
    hit = known[at] == cells if len(known) else np.zeros(len(cells), dtype=bool)
    missing = np.flatnonzero(~hit)
    if len(missing) == len(cells):  # none known (the first call): no copies
        out = grid_disks(cells, ring)
    else:
        out = np.empty((len(cells), width), np.uint64)
        out[hit] = table[at[hit]]
        out[missing] = grid_disks(cells[missing], ring)
    if len(missing):
        if not len(known) or len(known) + len(missing) > _DISK_CACHE_CELLS:
            known, table = cells, out  # the first, or start over: bounded memory
        else:
            at = np.searchsorted(known, cells[missing])  # both sorted: a merge, no sort
            known, table = (
                np.insert(known, at, cells[missing]),
                np.insert(table, at, out[missing], axis=0),
            )
        _DISK_CACHE[ring] = (known, table)
    return out


_DISK_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_DISK_CACHE_CELLS = 4_000_000  # per ring: ~220 MB of ring-1 disks at most


THIN_RING = 2  # each cell looks this many rings around it for the middle of the heat

# One vote of ``thin_to_lines``: a published cell (``voter``) handing a share of its heat
# to ``cell``. ``group``, ``k1``, ``k2``, ``idx``: the order in which a drawn cell adds
# its votes up (0: a voter's middle, k1 the voter; 1: the cell between two middles two
# apart; 2: a grid path's cell ``idx`` between middles farther apart; k1, k2 the two
# middles). ``share``: the voter's heat over its votes that landed on open cells (any
# value where ``cell`` is not one). The fields up to ``idx`` tell votes apart; in their
# order, they are the votes' one order (a structured compare follows it).
VOTE_DTYPE = np.dtype(
    [("cell", "<u8"), ("group", "u1"), ("k1", "<u8"), ("k2", "<u8"), ("idx", "<u4"),
     ("voter", "<u8"), ("share", "<f8")]
)  # fmt: skip


class Thinned:
    """How ``thin_to_lines`` drew a layer, for an incremental rebuild to redo it near
    changes only (``thin_cache``).

    Attributes:
        published: its input (the published cells, before thinning).
        middle: per published cell, the cell holding the middle of its neighbourhood
            (itself when the middle is well inside it), whether it met the threshold or not.
        target: per published cell, where its heat went: ``middle`` if that met the
            threshold, else itself.
        votes: every vote (``VOTE_DTYPE``), those on cells below the threshold too, in
            their order. A rebuild gives them as the last build's with some rows left
            out and a block put in (``splice``): put together when first read, since
            that copies them all; the cache writer writes the splice a piece at a time
            (``votes_to_write``) and never reads them whole.
    """

    def __init__(
        self,
        published: LayerHeat,
        middle: np.ndarray,
        target: np.ndarray,
        votes: np.ndarray,
        splice: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.published, self.middle, self.target = published, middle, target
        self._votes = votes
        self._splice = SplicedRows(votes, *splice) if splice is not None else None

    @property
    def votes(self) -> np.ndarray:
        if self._splice is not None:  # votes without the rows of ``drop``, ``block`` at ``at``
            self._votes, self._splice = self._splice.whole(), None
        return self._votes

    @property
    def votes_to_write(self) -> np.ndarray | SplicedRows:
        """``votes``, or while they are still a splice of the last build's, the splice:
        written a piece at a time (``SplicedRows.pieces``), never put together whole."""
        return self._splice if self._splice is not None else self._votes


def thin_to_lines(lh: LayerHeat, open_cells: np.ndarray) -> LayerHeat:
    """Draw each street as a line through the middle of its heat, not as the band of
    every lane and GPS error beside it.

    Each published cell gives its heat to the cell holding the middle of its
    neighbourhood: the centre of the published cells within ``THIN_RING`` rings of it,
    weighted by their distinct athletes. Across a street those middles fall on one line;
    along it they move smoothly from cell to cell, so the line is unbroken. Inside an
    area ridden all over, the middle is the cell itself: nothing moves. Heat is moved,
    never made, so a coarser zoom (parents, heat summed) sees the same heat.

    Args:
        lh: the published cells (ridden, threshold met).
        open_cells: sorted cells that met the threshold whether ridden or not (a middle
            may fall between two lanes); a cell whose middle is not one keeps its heat.

    Returns:
        The drawn cells: each met the threshold and lies within the published cells'
        neighbourhoods. A pure function of its inputs, so a cluster snapshot gets the
        same once it has gathered them.
    """
    return thin_with_votes(lh, open_cells)[0]


def thin_with_votes(lh: LayerHeat, open_cells: np.ndarray) -> tuple[LayerHeat, Thinned]:
    """``thin_to_lines``, and how it drew (``Thinned``)."""
    n = len(lh.cells)
    if n == 0:
        nothing = np.zeros(0, np.uint64)
        return lh, Thinned(lh, nothing, nothing, np.zeros(0, VOTE_DTYPE))
    middle, pos, known = thin_middles(lh, np.arange(n))
    at = np.minimum(np.searchsorted(open_cells, middle), len(open_cells) - 1)
    target = np.where(open_cells[at] == middle, middle, lh.cells)  # no middle: stay
    # Cells near each other whose middles are not neighbours: join the middles along the
    # grid, so that a street drawn unbroken stays so (the cells between must meet the
    # threshold too).
    a, b = np.nonzero(known & (pos > np.arange(n)[:, None]))
    b = pos[a, b]
    targets, tinv = np.unique(target, return_inverse=True)
    tinv = tinv.reshape(-1).astype(np.int64)
    # One join per pair of middles (many neighbours share both): the first pair's.
    _, first = np.unique(tinv[a] * len(targets) + tinv[b], return_index=True)
    a, b = a[first], b[first]
    moved = target[a] != target[b]
    a, b = a[moved], b[moved]
    joins = join_votes(lh.cells[a], target[a], target[b], thin_spacing(lh.cells[a]))
    votes = concat_rows([middle_votes(lh.cells, target), joins])
    count_shares(votes, lh, open_cells)
    # Made in the order of groups and middles: a stable sort by cell is the votes' order.
    votes = take_rows(votes, np.argsort(votes["cell"], kind="stable"))
    drawn = sum_votes(votes, lh, open_cells)
    return drawn, Thinned(lh, middle, target, votes)


def thin_middles(lh: LayerHeat, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per published cell ``lh.cells[rows]``, the cell holding the middle of its
    neighbourhood; and its disk's cells' positions in ``lh.cells`` with whether each is
    a published cell. A function of the published cells and athletes within
    ``THIN_RING`` of it alone."""
    n = len(lh.cells)
    cells = lh.cells[rows]
    disks = _disks(cells, THIN_RING)
    pos = np.searchsorted(lh.cells, disks)  # rows sorted, in order: few cache misses
    pos[pos == n] = 0
    known = lh.cells[pos] == disks  # the published cells of each disk (the centre is one)
    if 4 * len(rows) >= n:  # most cells: the centres of all
        near, where = np.arange(n), pos
    else:  # the centres of the disks' published cells only (ranks by a mark: no sort)
        mark = np.zeros(n, dtype=bool)
        mark[pos[known]] = True
        near = np.flatnonzero(mark)
        where = (np.cumsum(mark) - 1)[pos]
    xyz = _unit_vectors(lh.cells[near])
    # Column by column (no (cells, disk, 3) array), each column and coordinate
    # contiguous, in one buffer: the same products added in the same order.
    w = np.where(known, lh.athletes[pos], 0).T.astype(np.float64)
    where = np.ascontiguousarray(where.T)
    coords = [np.ascontiguousarray(xyz[:, c]) for c in range(3)]
    sums, term = np.zeros((3, len(cells))), np.empty(len(cells))
    for j in range(disks.shape[1]):
        for c in range(3):
            np.take(coords[c], where[j], out=term)
            term *= w[j]
            sums[c] += term
    middle = np.ascontiguousarray(sums.T)
    if not len(cells):
        return cells.copy(), pos, known
    res = h3.get_resolution(int(cells[0]))
    step = thin_spacing(cells)
    own = xyz[np.searchsorted(near, rows)]
    # A middle well inside its own cell (half the spacing is the inradius) stays there.
    out = cells.copy()
    away = np.flatnonzero(_norm(middle / _norm(middle)[:, None] - own) > 0.45 * step)
    out[away] = _cells_at(middle[away], res)
    return out, pos, known


def thin_spacing(cells: np.ndarray) -> np.ndarray:
    """``_spacing`` of each cell at its resolution."""
    if not len(cells):
        return np.zeros(0)
    return _spacing(cells, h3.get_resolution(int(cells[0])))


def middle_votes(voters: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each published cell's vote for where its heat goes (group 0)."""
    votes = np.zeros(len(voters), VOTE_DTYPE)
    votes["cell"], votes["voter"], votes["k1"] = target, voters, voters
    return votes


def join_votes(voter: np.ndarray, ta: np.ndarray, tb: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The votes of the joins between middles ``ta`` and ``tb`` (distinct), each pair made
    by ``voter`` (a published cell) with its spacing ``step``, in the order given (each
    pair's order: ``(ta, tb)`` ascending)."""
    if not len(voter):
        return np.zeros(0, VOTE_DTYPE)
    res = h3.get_resolution(int(voter[0]))
    targets, tinv = np.unique(np.concatenate([ta, tb]), return_inverse=True)
    txyz = _unit_vectors(targets)
    xa, xb = txyz[tinv[: len(ta)]], txyz[tinv[len(ta) :]]
    gap = _norm(xa - xb) / step
    # Middles two cells apart (the usual gap): the cell between holds their midpoint.
    two = (gap > 1.5) & (gap < 2.5)
    mid = np.zeros(int(two.sum()), VOTE_DTYPE)
    mid["cell"] = _cells_at(xa[two] + xb[two], res)
    mid["voter"], mid["k1"], mid["k2"], mid["group"] = voter[two], ta[two], tb[two], 1
    far = gap >= 2.5
    # H3's grid paths, all at once (none across a pentagon's distortion: no join there).
    between, per_pair = grid_path_interiors(ta[far], tb[far])
    path = np.zeros(len(between), VOTE_DTYPE)
    path["cell"] = between
    for name, arr in (("voter", voter), ("k1", ta), ("k2", tb)):
        path[name] = np.repeat(arr[far], per_pair)
    path["idx"] = np.arange(len(between)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    path["group"] = 2
    return concat_rows([mid, path])


def count_shares(votes: np.ndarray, lh: LayerHeat, open_cells: np.ndarray) -> None:
    """Fill in each vote's share: its voter's heat over the voter's votes on open cells
    (``votes`` holds every vote of its voters)."""
    ok = is_open(votes["cell"], open_cells)
    voter = np.searchsorted(lh.cells, votes["voter"])
    count = np.bincount(voter[ok], minlength=len(lh.cells))
    with np.errstate(divide="ignore", invalid="ignore"):
        votes["share"] = lh.heat[voter] / count[voter]


def sum_votes(votes: np.ndarray, lh: LayerHeat, open_cells: np.ndarray) -> LayerHeat:
    """The drawn cells of ``votes`` (in their order: ``VOTE_DTYPE``), each vote on an
    open cell, their heat added up in that order (one order however the votes are
    split, so the same bits), and their athletes (published cells' own, else 0)."""
    votes = take_rows(votes, is_open(votes["cell"], open_cells))
    cells = votes["cell"]
    first = np.ones(len(cells), dtype=bool)
    np.not_equal(cells[1:], cells[:-1], out=first[1:])
    drawn = cells[first]
    heat = np.bincount(np.cumsum(first) - 1, weights=votes["share"], minlength=len(drawn))
    n = len(lh.cells)
    own = np.minimum(np.searchsorted(lh.cells, drawn), max(n - 1, 0))
    mine = lh.cells[own] == drawn if n else np.zeros(len(drawn), dtype=bool)
    athletes = np.where(mine, lh.athletes[own] if n else 0, 0).astype(np.uint32)
    return LayerHeat(lh.layer, drawn, heat, athletes)


def is_open(cells: np.ndarray, open_cells: np.ndarray) -> np.ndarray:
    """Per cell, whether it is in ``open_cells`` (sorted, distinct).

    Many cells against a set several times smaller: a bitmap of the set's hashes rules
    most cells out first (a binary search each is ~10x slower, in cache misses).
    """
    if not len(open_cells):
        return np.zeros(len(cells), dtype=bool)
    if len(cells) < max(1 << 16, 4 * len(open_cells)):
        at = np.minimum(np.searchsorted(open_cells, cells), len(open_cells) - 1)
        return np.asarray(open_cells[at] == cells)
    bits = max(16, int(len(open_cells)).bit_length() + 4)  # ~1/16 false positives
    seen = np.zeros(1 << bits, dtype=bool)
    seen[_hash(open_cells, bits)] = True
    cells = np.ascontiguousarray(cells)  # a field of records: hashed ~2x faster copied out
    maybe = np.flatnonzero(seen[_hash(cells, bits)])
    out = np.zeros(len(cells), dtype=bool)
    at = np.minimum(np.searchsorted(open_cells, cells[maybe]), len(open_cells) - 1)
    out[maybe] = open_cells[at] == cells[maybe]
    return out


def region_index(cells: np.ndarray, region: np.ndarray, *, spare_bits: int = 3) -> np.ndarray:
    """Per cell, its index in ``region`` (sorted, distinct), or -1 where it is not one.

    Many cells against a set several times smaller: a table indexed by the set's hashes
    holds each value's index (a binary search each is ~5x slower, in cache misses), so a
    lookup is one read and one compare. Slots two values share hold -2 and send their
    cells to a binary search (with ``2**spare_bits`` slots per value, a few percent).
    """
    n = len(region)
    if not n:
        return np.full(len(cells), -1, np.int64)
    if len(cells) < max(1 << 16, 4 * n):
        at = np.minimum(np.searchsorted(region, cells), n - 1)
        return np.where(region[at] == cells, at, -1)
    bits = max(16, n.bit_length() + spare_bits)
    slots = _hash(region, bits)
    table = np.full(1 << bits, -1, np.int32)
    own = np.arange(n, dtype=np.int32)
    table[slots] = own
    table[slots[table[slots] != own]] = -2  # a slot written twice kept one: mark it shared
    found = table[_hash(cells, bits)]
    out = found.astype(np.int64)
    hit = np.flatnonzero(found >= 0)
    out[hit[region[found[hit]] != cells[hit]]] = -1
    shared = np.flatnonzero(found == -2)
    if len(shared):
        at = np.minimum(np.searchsorted(region, cells[shared]), n - 1)
        out[shared] = np.where(region[at] == cells[shared], at, -1)
    return out


def _hash(cells: np.ndarray, bits: int) -> np.ndarray:
    """Multiplicative (Fibonacci) hashing of 64-bit values to ``bits`` bits."""
    mixed = np.multiply(cells.astype(np.uint64, copy=False), np.uint64(0x9E3779B97F4A7C15))
    mixed >>= np.uint64(64 - bits)
    return mixed.view(np.intp)  # below 2**bits: the same values


def _spacing(cells: np.ndarray, res: int) -> np.ndarray:
    """Centre spacing (radians) of hexagons of each cell's mean area around it: the area
    of its res-5 ancestor over its 7**(res-5) descendants (H3 cell sizes vary ~2x over the
    globe, but little within a few km)."""
    coarse = min(res, 5)
    parents, inv = np.unique(cells_to_parent(cells, coarse), return_inverse=True)
    area = np.array([h3.cell_area(int(p), "rads^2") for p in parents.tolist()]).reshape(-1)
    mean = area[inv.reshape(-1)] / 7.0 ** (res - coarse)
    return np.sqrt(2.0 * mean / np.sqrt(3.0))


def _cells_at(points: np.ndarray, res: int) -> np.ndarray:
    """The res-``res`` cell holding each point (vectors, any length, from the centre)."""
    lat = np.degrees(np.arcsin(points[:, 2] / _norm(points)))
    lng = np.degrees(np.arctan2(points[:, 1], points[:, 0]))
    return latlng_to_cells(lat, lng, res)


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt((v * v).sum(axis=-1))


def _unit_vectors(cells: np.ndarray) -> np.ndarray:
    """Cell centres as unit vectors (distances compare the same anywhere on the globe)."""
    lat, lng = (np.radians(v) for v in cells_to_latlng(cells))
    return np.stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)], axis=1)
