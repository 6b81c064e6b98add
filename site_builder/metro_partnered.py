"""Edge tables with the partners of ``metro_secondary`` hidden across rows: the months of
an edge, the hours of an edge's time band, the day types of an hour.

One rule set for both kinds of edge: the H3 edges (keyed ``a, b``) and the OSM street
edges (keyed ``a``). ``sums_of(key, with_bands)`` gives the raw sums of one layer's
records grouped on ``key`` (from the Metro cache for H3 edges, counted afresh for
streets).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from heatmetro.site_builder.metro_secondary import partners
from heatmetro.site_builder.metro_tables import (
    BAND_OF_HOUR,
    BANDS,
    DirectionSums,
    DirectionTable,
    Publication,
    dense_index,
    publish_directions,
    rows_of,
    sub_partners,
)

SumsOf = Callable[[tuple[str, ...], bool], DirectionSums]

#: What each table is keyed by besides its edge, and whether it counts time bands.
BY_EDGE: tuple[str, ...] = ()
BY_MONTH = ("month",)
BY_HOUR = ("hour",)  # the wide file: each hour over all days
BY_HOUR_AND_DAY = ("hour", "weekend")


def partnered_table(
    sums_of: SumsOf, edge: tuple[str, ...], by: tuple[str, ...], pub: Publication
) -> DirectionTable:
    """The published table of one layer keyed ``edge + by``, partners hidden."""
    sums = sums_of((*edge, *by), by in (BY_EDGE, BY_MONTH))
    hide = None
    if by == BY_MONTH:
        group, _ = dense_index(*(sums.keys[k] for k in edge))
        hide = _partners(group, sums, pub)
    elif by == BY_HOUR:
        hide = _hour_partners(sums_of, edge, sums, pub)
    elif by == BY_HOUR_AND_DAY:
        hour_key = (*edge, "hour")
        wide = sums_of(hour_key, False)
        hidden_hours = _hour_partners(sums_of, edge, wide, pub)
        group, first = dense_index(*(sums.keys[k] for k in hour_key))
        at = rows_of(tuple(wide.keys[k] for k in hour_key),
                     tuple(sums.keys[k][first] for k in hour_key))  # fmt: skip
        hide = _partners(group, sums, pub, forced=hidden_hours[at])
    return publish_directions(sums, pub, hide=hide)


def _partners(
    group: np.ndarray, sums: DirectionSums, pub: Publication, forced: np.ndarray | None = None
) -> np.ndarray:
    total = sums.total
    shown = total.people >= pub.min_athletes
    return partners(group, total.trips, total.people, shown, pub.min_athletes, forced)


def _hour_partners(
    sums_of: SumsOf, edge: tuple[str, ...], wide: DirectionSums, pub: Publication
) -> np.ndarray:
    """``[rows of wide, 2]``: the hours (over all days) hidden as partners in their
    edge's time band, and where the edge's band itself is hidden as a partner."""
    whole = sums_of(edge, True)
    assert whole.bands is not None
    shown = whole.total.people >= pub.min_athletes
    band_hidden = sub_partners(whole.bands, len(BANDS), len(BANDS), shown, pub.min_athletes)
    band = BAND_OF_HOUR[wide.keys["hour"].astype(np.int64)]
    group, first = dense_index(*(wide.keys[k] for k in edge), band)
    at = rows_of(tuple(whole.keys[k] for k in edge), tuple(wide.keys[k][first] for k in edge))
    forced = band_hidden[at, :, band[first]]
    return _partners(group, wide, pub, forced)
