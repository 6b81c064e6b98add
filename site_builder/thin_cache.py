"""``thin_to_lines`` redone near changes only: the work follows the changed cells, not
the window.

``window.thin_with_votes`` keeps how it drew (``Thinned``): each published cell's middle
and target, and every vote (a published cell handing a share of its heat to a cell).
Given the published cells whose presence, heat or athletes changed (``changed``) and
the cells whose threshold decision flipped (``flipped``), what can differ is:

* a middle: only of a published cell within ``THIN_RING`` of a changed cell (it reads
  the published cells and athletes there and nothing else); a target also where the
  middle's decision flipped;
* the joins: a join is made for each pair of targets ``(t(a), t(b))`` of published
  neighbours ``a < b`` (within ``THIN_RING``) by the least such ``a``. Pairs change only
  where a cell is added, removed or retargeted (``moved``), so only the pairs of targets
  of a pair involving one of those (``keys``, before or after) can change voter or
  vanish; each is decided again over every published cell with that first target;
* a vote's share: its voter's heat over its votes on open cells, so the voters whose
  heat changed, who made or lost a join, or who voted on a flipped cell are redone
  (``redo``), all their votes;
* a drawn cell: only one an old or new vote of a redone voter lands on (or whose
  athletes changed); its heat is added up again from every vote on it, in the order of
  ``VOTE_DTYPE``'s groups, which is the full computation's, so the bits are the same.

Everything else is kept. The result is exactly ``thin_with_votes`` of the new input
(tests/test_threshold_cache.py, a Hypothesis property).
"""

from __future__ import annotations

import numpy as np

from heatmetro.core.arrays import concat_rows, distinct, take_rows
from heatmetro.site_builder.window import (
    THIN_RING,
    LayerHeat,
    Thinned,
    count_shares,
    is_open,
    join_votes,
    middle_votes,
    sum_votes,
    thin_middles,
    thin_spacing,
    thin_with_votes,
)
from heatmetro.site_builder.window import _disks as disks_of

_KEY = np.dtype([("k1", "<u8"), ("k2", "<u8")])


def incremental_thin(
    old: Thinned,
    old_drawn: LayerHeat,
    lh: LayerHeat,
    changed: np.ndarray,
    flipped: np.ndarray,
    open_cells: np.ndarray,
    around: np.ndarray | None = None,
) -> tuple[LayerHeat, Thinned]:
    """``thin_with_votes(lh, open_cells)``, given the last build's (``old``, which drew
    ``old_drawn``).

    Args:
        changed: sorted distinct cells where a published cell came, went, or changed
            heat or athletes since ``old.published`` (more cells: still exact).
        flipped: sorted distinct cells whose threshold decision changed (more: exact).
        around: sorted distinct cells holding every cell within ``THIN_RING`` of
            ``changed``, if known.
    """
    n = len(lh.cells)
    prev = old.published
    if n == 0 or len(prev.cells) == 0:
        return thin_with_votes(lh, open_cells)
    at = np.minimum(np.searchsorted(prev.cells, lh.cells), len(prev.cells) - 1)
    was = prev.cells[at] == lh.cells
    middle = np.where(was, old.middle[at], lh.cells)
    target = np.where(was, old.target[at], lh.cells)
    if around is None:
        around = disk_cells(changed)
    stale = ~was
    stale[_positions(lh.cells, around)] = True  # the fewer cells searched for
    redo_middle = np.flatnonzero(stale)
    middle[redo_middle] = thin_middles(lh, redo_middle)[0]
    retarget = np.zeros(n, dtype=bool)
    retarget[redo_middle] = True
    retarget |= is_open(middle, flipped)
    r = np.flatnonzero(retarget)
    target[r] = np.where(is_open(middle[r], open_cells), middle[r], lh.cells[r])
    stays = np.zeros(len(prev.cells), dtype=bool)
    stays[at[was]] = True
    gone = prev.cells[~stays]
    moved = distinct(np.concatenate([gone, lh.cells[~was | (target != old.target[at])]]))
    # The pairs of targets that may have another voter now, or none.
    keys = _distinct_keys(
        np.concatenate(
            [_pair_keys(prev.cells, old.target, moved), _pair_keys(lh.cells, target, moved)]
        )
    )
    votes = old.votes
    # Searched several times: copied out of the records once (numpy copies a field of
    # records for every search).
    cells = np.ascontiguousarray(votes["cell"])
    # The join votes of those pairs (a middle's vote, k2 = 0, is of no pair): looked for
    # among all the votes, columns as they are, rather than in a copy of the joins.
    rejoined = np.flatnonzero(_key_member(votes["k1"], votes["k2"], keys))
    voter, ta, tb = _voters(lh.cells, target, keys)
    touched = _rows_of(cells, flipped)
    redo = distinct(
        np.concatenate([moved, changed, votes["voter"][rejoined], voter, votes["voter"][touched]])
    )
    redo = redo[is_open(redo, lh.cells)]  # voters now; a gone one votes no more
    out = is_open(votes["voter"], distinct(np.concatenate([redo, gone])))
    # The joins of the voters redone, but those of the pairs looked for again.
    mine = np.flatnonzero(out)
    mine = mine[votes["group"][mine] > 0]
    mine = mine[~is_open(votes["voter"][mine], gone)]
    kept_joins = take_rows(votes, np.setdiff1d(mine, rejoined, assume_unique=True))
    new = concat_rows(
        [
            middle_votes(redo, target[np.searchsorted(lh.cells, redo)]),
            kept_joins,
            join_votes(voter, ta, tb, thin_spacing(voter)),
        ]
    )
    count_shares(new, lh, open_cells)
    # The cells with a new vote: all their votes in one block, put in the votes' order.
    mixed = np.zeros(len(cells), dtype=bool)
    mixed[_rows_of(cells, distinct(new["cell"]))] = True
    block = concat_rows([take_rows(votes, mixed & ~out), new])
    block = take_rows(
        block, np.lexsort((block["idx"], block["k2"], block["k1"], block["group"], block["cell"]))
    )
    drop = out | mixed
    # The drawn cells whose votes or athletes may differ: added up again, from the votes
    # kept on them and the block (a cell's votes are all in one or the other).
    again = distinct(np.concatenate([cells[out], new["cell"], changed, flipped]))
    rows = _rows_of(cells, again)
    on = concat_rows(
        [
            take_rows(votes, rows[~drop[rows]]),
            take_rows(block, _rows_of(np.ascontiguousarray(block["cell"]), again)),
        ]
    )
    part = sum_votes(take_rows(on, np.argsort(on["cell"], kind="stable")), lh, open_cells)
    stay = ~is_open(old_drawn.cells, again)
    drawn = _merge(old_drawn, stay, part)
    # Where the block goes among the rows kept: before the first kept row of a later cell.
    kept_before = np.cumsum(~drop)
    first = np.searchsorted(cells, block["cell"])
    at = np.where(first > 0, kept_before[np.maximum(first - 1, 0)], 0)
    return drawn, Thinned(lh, middle, target, votes, (drop, at, block))


def _merge(old: LayerHeat, stay: np.ndarray, part: LayerHeat) -> LayerHeat:
    """``old``'s cells where ``stay``, and ``part``'s (none of them stays): sorted."""
    cells = old.cells[stay]
    at = np.searchsorted(cells, part.cells)
    return LayerHeat(
        old.layer,
        np.insert(cells, at, part.cells),
        np.insert(old.heat[stay], at, part.heat),
        np.insert(old.athletes[stay], at, part.athletes),
    )


def disk_cells(cells: np.ndarray) -> np.ndarray:
    """The distinct cells within ``THIN_RING`` of ``cells`` (sorted, distinct)."""
    if not len(cells):
        return cells
    return distinct(disks_of(cells, THIN_RING).reshape(-1))


def _neighbours(cells: np.ndarray, who: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs ``(x, y)``: x of ``who`` (sorted, distinct), y of ``cells`` (sorted)
    within ``THIN_RING`` of x, y != x; as positions in ``who`` and in ``cells``."""
    if not len(who) or not len(cells):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    disks = disks_of(who, THIN_RING)
    pos = np.minimum(np.searchsorted(cells, disks), len(cells) - 1)
    hit = (cells[pos] == disks) & (disks != who[:, None])
    x, j = np.nonzero(hit)
    return x, pos[x, j]


def _pair_keys(cells: np.ndarray, target: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """The pairs of distinct targets ``(t(a), t(b))`` of the published neighbours
    ``a < b`` (``cells``, with ``target``) of which one is of ``moved`` (``_KEY``)."""
    who = moved[is_open(moved, cells)]
    x, y = _neighbours(cells, who)
    xi = np.searchsorted(cells, who)[x]
    a, b = np.minimum(xi, y), np.maximum(xi, y)
    keys = np.zeros(len(a), _KEY)
    keys["k1"], keys["k2"] = target[a], target[b]
    return keys[keys["k1"] != keys["k2"]]


def _distinct_keys(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)`` (``_KEY``), by a sort on integers rather than on rows."""
    keys = keys[np.lexsort((keys["k2"], keys["k1"]))]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = (keys["k1"][1:] != keys["k1"][:-1]) | (keys["k2"][1:] != keys["k2"][:-1])
    return keys[first]


def _key_member(k1: np.ndarray, k2: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per pair ``(k1, k2)``, whether it is in ``keys`` (sorted, distinct ``_KEY``).

    By the ranks of each half among the keys' halves, one integer per pair: a search
    among integers, not a field by field compare of structured rows (~10x slower).
    """
    if not len(keys):
        return np.zeros(len(k1), dtype=bool)
    u1, u2 = distinct(keys["k1"]), distinct(keys["k2"])
    # ``keys`` sorted by (k1, k2): their codes are sorted too.
    codes = np.searchsorted(u1, keys["k1"]) * len(u2) + np.searchsorted(u2, keys["k2"])
    maybe = np.flatnonzero(is_open(k1, u1))
    maybe = maybe[is_open(k2[maybe], u2)]
    q = np.searchsorted(u1, k1[maybe]) * len(u2) + np.searchsorted(u2, k2[maybe])
    out = np.zeros(len(k1), dtype=bool)
    out[maybe] = is_open(q, codes)
    return out


def _voters(
    cells: np.ndarray, target: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair of targets of ``keys`` that has a pair of neighbours now: its voter (the
    least ``a``), and the two targets; ordered by pair of targets."""
    if not len(keys):
        nothing = np.zeros(0, np.uint64)
        return nothing, nothing, nothing
    # Every a of such a pair has the first target: the candidates.
    cand = np.flatnonzero(is_open(target, distinct(keys["k1"])))
    x, y = _neighbours(cells, cells[cand])
    a = cand[x]
    later = y > a
    a, y = a[later], y[later]
    mine = _key_member(target[a], target[y], keys)
    a, y = a[mine], y[mine]
    found = np.zeros(len(a), _KEY)
    found["k1"], found["k2"] = target[a], target[y]
    order = np.lexsort((a, found["k2"], found["k1"]))
    found, a = found[order], a[order]
    first = np.ones(len(found), dtype=bool)
    first[1:] = found[1:] != found[:-1]
    return cells[a[first]], found["k1"][first], found["k2"][first]


def _positions(sorted_cells: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The positions in ``sorted_cells`` (sorted, distinct) of those of ``cells`` there."""
    if not len(sorted_cells):
        return np.zeros(0, np.int64)
    at = np.minimum(np.searchsorted(sorted_cells, cells), len(sorted_cells) - 1)
    return at[sorted_cells[at] == cells]


def _rows_of(sorted_col: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The positions of the rows of ``sorted_col`` (sorted) holding one of ``values``
    (sorted, distinct)."""
    lo = np.searchsorted(sorted_col, values, side="left")
    hi = np.searchsorted(sorted_col, values, side="right")
    size = hi - lo
    if not size.sum():
        return np.zeros(0, np.int64)
    return np.repeat(lo - np.cumsum(size) + size, size) + np.arange(int(size.sum()))
