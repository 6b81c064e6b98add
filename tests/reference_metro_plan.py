"""Reference (tests only): ``metro_plan._solve_live`` as it was written first, each
round's new cells made distinct with ``np.unique``/``np.union1d`` and the directions
under them found with ``np.isin``. The solver's rounds must hide exactly what this hides.
"""

from __future__ import annotations

import numpy as np


def solve_live(
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
        new = np.unique(np.concatenate(changed))
        hidden[new] = partner[new] = True
        known[new] = False
        # A direction hidden (or made a partner) takes its sub-counts with it.
        under = np.isin(head, new)
        hidden[sub[under]] = partner[sub[under]] = True
        new = np.union1d(new, sub[under])
        touched = np.zeros(len(hidden), dtype=bool)
        touched[new] = True
        rel_active = np.zeros(n_rel, dtype=bool)
        rel_active[part_rel[touched[part_cell]]] = True
        rel_active |= touched[rel_total]
        act = np.flatnonzero(rel_active)
        idx = np.flatnonzero(rel_active[part_rel])
