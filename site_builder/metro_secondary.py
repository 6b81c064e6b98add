"""Secondary suppression: no hidden Metro count can be worked out by subtraction.

(The published files now take their partners from ``metro_plan``, which solves every
table and layer at once; these one-relation rules remain for a table published on its
own, without a plan.)

A count is hidden when fewer than ``min_athletes`` people stand behind it (primary
suppression, ``metro_tables.Publication``). But many published counts are sums of
others: an edge's trips are its months' sum, its hours', its time bands', commute +
leisure; an hour over all days is weekday + weekend; a band is its hours' sum. With the
sum and every part but one published, the hidden part is the difference (a planner's
review found a weekend hour's 19 trips by 1-2 people that way). So, per relation
``total = sum of parts``, when a part with people behind it is hidden, the parts hidden
must include one with at least ``min_athletes`` people: the smallest published part is
hidden too (the difference is then the trips of a group of at least that many people).

A part hidden that way must not be a sum worked out from its own parts: a band hidden
as a partner hides one of its hours as well ("forced"), and an hour hidden as a partner
(over all days) hides its smaller day type. True zeros (nobody behind a part) need no
partner: publishing that nobody rode there reveals nobody.

Rules only ever hide more, and each choice is a pure function of the sums (smallest
trips, then first row): the same store gives the same files.
"""

from __future__ import annotations

import numpy as np


def partners(
    group: np.ndarray,
    trips: np.ndarray,
    people: np.ndarray,
    shown: np.ndarray,
    min_athletes: int,
    forced: np.ndarray | None = None,
) -> np.ndarray:
    """Which shown counts to hide too, for the relations ``total = sum of the rows of a
    group`` (one relation per group and column).

    Args:
        group: ``[rows]`` group number 0..G-1 of each row.
        trips, people: ``[rows, cols]`` raw sums (cols: the directions, or 1).
        shown: ``[rows, cols]`` counts published so far.
        forced: ``[G, cols]``: the group's total is hidden as a partner elsewhere, so
            one of its parts must be hidden if none is (it would be their sum).

    Returns:
        ``[rows, cols]`` bool: the partners to hide.
    """
    rows, cols = shown.shape
    if rows == 0:
        return np.zeros_like(shown)
    n_groups = int(group.max()) + 1
    key = (group[:, None] * cols + np.arange(cols)[None, :]).ravel()
    hidden = ~shown.ravel()
    ppl = people.ravel()

    def per_key(flags: np.ndarray) -> np.ndarray:
        return np.bincount(key, weights=flags, minlength=n_groups * cols) > 0

    exposed = per_key(hidden & (ppl > 0)) & ~per_key(hidden & (ppl >= min_athletes))
    if forced is not None:
        # (a hidden part nobody made is no help: the total is then the shown ones' sum)
        exposed |= forced.ravel() & ~per_key(hidden & (ppl > 0))
    cand = np.flatnonzero(shown.ravel() & exposed[key])
    extra = np.zeros(rows * cols, dtype=bool)
    if len(cand):
        order = cand[np.lexsort((cand, trips.ravel()[cand], key[cand]))]
        first = np.ones(len(order), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        extra[order[first]] = True
    return extra.reshape(rows, cols)


def part_partners(
    trips: np.ndarray, people: np.ndarray, shown: np.ndarray, min_athletes: int
) -> np.ndarray:
    """``partners`` for parts laid out along the last axis of ``[rows, 2, n]`` arrays
    (commute / leisure, ride / e-bike, the time bands): each (row, direction) is one
    relation whose total is the direction's published count."""
    rows, d, n = trips.shape
    group = np.repeat(np.arange(rows * d), n)
    flat = partners(
        group,
        trips.reshape(-1, 1),
        people.reshape(-1, 1),
        shown.reshape(-1, 1),
        min_athletes,
    )
    return flat.reshape(rows, d, n)
