"""Metro counts as numpy tables: grouping, distinct people, suppression and rounding.

This module turns the per-athlete records of a ``WindowData`` layer into published
counts; ``heatmetro.site_builder.metro`` only formats and writes them. Every function here is
vectorised: the window can hold millions of (athlete, edge, hour, ...) rows, so nothing
loops in Python per input row.

Conventions of the returned tables:

* a count that is suppressed (fewer than ``min_athletes`` distinct people behind it) is
  ``-1``; a suppressed speed is ``nan``. The writer turns both into empty cells / null.
* every other count is rounded half up to a multiple of ``round_to`` and never published
  below ``Publication.floor`` (so a published count is never 0 and a published people
  count is never below ``min_athletes``).
* direction axis: index 0 is *forward* (``a`` to ``b``, ``fwd == 1``), 1 is *reverse*.
* rows are sorted by their key (``a``, ``b``[, ``hour``, ``weekend``]); H3 cells of one
  resolution all print as 15 hex digits, so this is also the order of the text ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heatmetro.core.errors import PublishError
from heatmetro.site_builder.metro_dp import DpNoise
from heatmetro.site_builder.metro_secondary import part_partners

# Local-time bands of the crossing hour: (name, first hour, hour after the last).
BANDS: tuple[tuple[str, int, int], ...] = (
    ("morning", 5, 10),
    ("midday", 10, 15),
    ("evening", 15, 20),
    ("overnight", 20, 5),
)
_BAND_OF_HOUR = np.zeros(24, dtype=np.int64)
for _i, (_name, _start, _end) in enumerate(BANDS):
    _hours = range(_start, _end) if _start < _end else [*range(_start, 24), *range(_end)]
    _BAND_OF_HOUR[list(_hours)] = _i

BAND_OF_HOUR = _BAND_OF_HOUR  # the band of each local hour 0..23
MPS_TO_KMH = 3.6
SUPPRESSED = -1


@dataclass(frozen=True)
class Publication:
    """The two privacy numbers, checked once.

    Attributes:
        min_athletes: a count is published only if at least this many distinct people
            stand behind it.
        round_to: published counts are rounded half up to a multiple of this.
    """

    min_athletes: int
    round_to: int
    noise: DpNoise | None = None

    def __post_init__(self) -> None:
        if self.min_athletes < 1 or self.round_to < 1:
            msg = (
                f"metro: min_athletes and round_to must be >= 1, got "
                f"min_athletes={self.min_athletes}, round_to={self.round_to}"
            )
            raise PublishError(msg)

    @property
    def floor(self) -> int:
        """Smallest count ever published.

        At least ``round_to`` (a published 0 would read as "nobody", which is false) and
        at least ``min_athletes`` rounded up to a multiple of ``round_to``: with, say,
        ``min_athletes=7, round_to=5`` plain rounding would publish 7 people as 5, below
        the threshold the reader is told about.
        """
        return -(-self.min_athletes // self.round_to) * self.round_to

    @property
    def max_trips(self) -> int | None:
        """Per-person bound on one count's trips (only with differential privacy)."""
        return self.noise.max_trips if self.noise else None

    def publish(
        self, counts: np.ndarray, people: np.ndarray, *, is_people: bool = False
    ) -> np.ndarray:
        """Rounded ``counts`` where ``people >= min_athletes``, else ``SUPPRESSED``.

        With differential privacy the counts get their calibrated noise first; the
        threshold is still on the exact number of people.
        """
        if self.noise is not None:
            counts = self.noise.add(counts, people=is_people)
        r = self.round_to
        # floor(x / r + 1/2) in integers: half up, no float error.
        rounded = (2 * counts + r) // (2 * r) * r
        rounded = np.maximum(rounded, self.floor)
        return np.where(people >= self.min_athletes, rounded, SUPPRESSED).astype(np.int64)


# Mixed-radix keys must stay below this to fit int64 with room to spare.
_RADIX_LIMIT = 1 << 62


def _groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per value its rank among the distinct values, and one index per distinct value.

    Written with argsort rather than ``np.unique``: numpy 2's hash-based unique is many
    times slower on a million integers than one sort.
    """
    order = np.argsort(values)  # any row of a group can represent it: no need for stable
    srt = values[order]
    change = np.ones(len(srt), dtype=bool)
    change[1:] = srt[1:] != srt[:-1]
    inverse = np.empty(len(srt), dtype=np.int64)
    inverse[order] = np.cumsum(change) - 1
    return inverse, order[change]


def _ranks(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Per value its rank among the distinct values (order-preserving), and how many."""
    inverse, first = _groups(values)
    return inverse, len(first)


def dense_index(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the distinct key tuples 0..G-1 in sorted key order.

    Args:
        *keys: equal-length arrays, most significant first.

    Returns:
        ``(inverse, first)``: per input row its group number, and per group the index of
        one input row holding that key (to read the key values back).
    """
    # Ranks combined into one int64 sort far faster than np.lexsort on several uint64
    # columns (the hot path on ~1M rows); lexsort stays as the fallback for huge spans.
    combined = np.zeros(len(keys[0]), dtype=np.int64)
    span = 1
    for k in keys:
        rank, n = _ranks(k)
        span *= max(n, 1)
        if span >= _RADIX_LIMIT:
            break
        combined = combined * max(n, 1) + rank
    else:
        return _groups(combined)
    order = np.lexsort(keys[::-1])  # lexsort sorts by its LAST key first
    change = np.zeros(len(order), dtype=bool)
    change[:1] = True
    for k in keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(change) - 1
    return inverse, order[change]


def rows_of(keys_from: tuple[np.ndarray, ...], keys_to: tuple[np.ndarray, ...]) -> np.ndarray:
    """Per row of ``keys_to``, the row of ``keys_from`` with the same key (-1: none).
    ``keys_from`` keys are distinct."""
    n = len(keys_from[0])
    ids, _ = dense_index(*(np.concatenate([f, t]) for f, t in zip(keys_from, keys_to, strict=True)))
    at = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype=np.int64)
    at[ids[:n]] = np.arange(n)
    return at[ids[n:]]


def no_values(shape: tuple[int, int]) -> np.ndarray:
    """Zeros of ``shape`` without the memory: a read-only view of one 0.0 (the speeds
    of a sub-count, never summed; copying them was half of the Metro cache's merge)."""
    return np.broadcast_to(np.float64(0.0), shape)


def is_no_values(values: np.ndarray) -> bool:
    """Whether ``values`` is a ``no_values`` view (every row the same zeros)."""
    return values.ndim == 2 and values.strides == (0, 0) and values.dtype == np.float64


@dataclass(frozen=True)
class Cells:
    """Raw sums of one grouping, dense ``[rows, cols]`` (zero where nobody was)."""

    trips: np.ndarray
    people: np.ndarray
    speed_sum: np.ndarray
    speed_n: np.ndarray


def _distinct_people(cell: np.ndarray, athlete: np.ndarray, size: int) -> np.ndarray:
    """Per cell 0..size-1, how many distinct athletes have a row in it."""
    # Athletes are small snapshot-local indexes: offsetting them is enough (no sort).
    ath = athlete.astype(np.int64)
    if len(ath):
        ath -= ath.min()
    n_ath = int(ath.max()) + 1 if len(ath) else 1
    if size * n_ath < _RADIX_LIMIT:
        # One distinct (cell, athlete) pair per person and cell; then count per cell.
        pairs = np.sort(cell * n_ath + ath)
        distinct = np.ones(len(pairs), dtype=bool)
        distinct[1:] = pairs[1:] != pairs[:-1]
        return np.bincount(pairs[distinct] // n_ath, minlength=size)
    order = np.lexsort((ath, cell))
    sc, sa = cell[order], ath[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (sc[1:] != sc[:-1]) | (sa[1:] != sa[:-1])
    return np.bincount(sc[new], minlength=size)


def _clipped_trips(
    cell: np.ndarray, athlete: np.ndarray, trips: np.ndarray, clip: int
) -> tuple[np.ndarray, np.ndarray]:
    """One row per (cell, athlete) with that person's trips there capped at ``clip``."""
    order = np.lexsort((athlete, cell))
    sc, sa = cell[order], athlete[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (sc[1:] != sc[:-1]) | (sa[1:] != sa[:-1])
    starts = np.flatnonzero(new)
    per_person = np.add.reduceat(trips[order].astype(np.int64), starts) if len(starts) else starts
    return sc[starts], np.minimum(per_person, clip)


def count_cells(
    row: np.ndarray,
    col: np.ndarray,
    shape: tuple[int, int],
    arr: np.ndarray,
    clip: int | None = None,
    *,
    speeds: bool = True,
) -> Cells:
    """Sum trips and speed and count distinct athletes per ``(row, col)``.

    Args:
        row: per input row, its output row (from ``dense_index``).
        col: per input row, a small column number (direction, band, ...).
        shape: ``(rows, cols)`` of the result.
        arr: the input records (fields ``athlete``, ``trips`` and, if present,
            ``speed_sum`` / ``speed_n``).
        speeds: also sum the speeds (else ``speed_sum`` / ``speed_n`` are zeros).
    """
    n_rows, n_cols = shape
    size = n_rows * n_cols
    cell = row.astype(np.int64) * n_cols + col.astype(np.int64)

    def total(field: str) -> np.ndarray:
        # bincount sums in float64: exact for integer counts far beyond any real total.
        return np.bincount(cell, weights=arr[field], minlength=size).reshape(shape)

    has_speed = speeds and "speed_n" in (arr.dtype.names or ())
    zeros = no_values(shape)
    trips = np.rint(total("trips")).astype(np.int64)
    if clip is not None:  # differential privacy: bound each person's part of a count
        where, capped = _clipped_trips(cell, arr["athlete"], arr["trips"], clip)
        trips = np.bincount(where, weights=capped, minlength=size).astype(np.int64).reshape(shape)
    return Cells(
        trips=trips,
        people=_distinct_people(cell, arr["athlete"], size).reshape(shape).astype(np.int64),
        speed_sum=total("speed_sum") if has_speed else zeros,
        speed_n=np.rint(total("speed_n")).astype(np.int64) if has_speed else zeros,
    )


def _speeds(cells: Cells, shown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average speed in km/h (1 decimal) and m/s (2 decimals); ``nan`` where hidden."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ms = cells.speed_sum / cells.speed_n
    ok = shown & (cells.speed_n > 0)
    return np.where(ok, np.round(ms * MPS_TO_KMH, 1), np.nan), np.where(ok, np.round(ms, 2), np.nan)


def _checked(arr: np.ndarray, fields: tuple[str, ...], what: str) -> np.ndarray:
    """A copy of ``arr`` without rows of zero trips, after checking its fields."""
    missing = [f for f in ("athlete", "trips", *fields) if f not in (arr.dtype.names or ())]
    if missing:
        msg = f"metro: {what} records lack fields {missing}; got dtype {arr.dtype}"
        raise PublishError(msg)
    # A zero-trip row would count a person who made no trip.
    return arr[arr["trips"] > 0]


@dataclass(frozen=True)
class DirectionTable:
    """Published per-direction counts, one row per edge (or edge, hour, day type).

    Arrays are ``[rows, 2]`` (forward, reverse) unless said otherwise.

    Attributes:
        keys: the row key fields (``a``, ``b`` and for hourly ``hour``, ``weekend``).
        trips, people, commute, leisure: published counts.
        rides, ebike_rides: trips by bike other than e-bike, and by e-bike (ride layer).
        speed_kmh, speed_ms: average speed, ``nan`` when suppressed or unmeasured.
        total: ``[rows]``, forward + reverse of the published counts.
        bands: ``[rows, 2, len(BANDS)]`` trips per time-of-day band (edges only).
    """

    keys: dict[str, np.ndarray]
    trips: np.ndarray
    people: np.ndarray
    commute: np.ndarray
    leisure: np.ndarray
    rides: np.ndarray
    ebike_rides: np.ndarray
    speed_kmh: np.ndarray
    speed_ms: np.ndarray
    total: np.ndarray
    bands: np.ndarray | None

    def __len__(self) -> int:
        return len(self.total)


@dataclass(frozen=True)
class DirectionSums:
    """Raw sums of edge records grouped on a key, before any publication rule.

    Groups are sorted by their key tuple. ``total`` is ``[groups, 2]`` (forward,
    reverse); the sub-counts are ``[groups, 2 * n]`` laid out direction-major:
    ``kinds`` n = 2 (commute, leisure), ``bikes`` n = 3 (ride other than e-bike, e-bike
    ride, not a ride), ``bands`` n = ``len(BANDS)``; those hold trips and people only
    (their speed fields are zeros). Each group depends only on the
    records of its own key, so ``metro_cache`` can recompute some groups and keep the
    others.
    """

    keys: dict[str, np.ndarray]
    total: Cells
    kinds: Cells
    bikes: Cells
    bands: Cells | None

    def __len__(self) -> int:
        return len(self.total.trips)


def direction_sums(
    arr: np.ndarray, key: tuple[str, ...], max_trips: int | None, *, with_bands: bool
) -> DirectionSums:
    """Group edge records on ``key`` and sum them per direction (and sub-count column).

    Args:
        arr: ``EDGE_DTYPE`` records with the ``athlete`` field.
        key: row key, ``("a", "b")`` or ``("a", "b", "hour", "weekend")``.
        max_trips: per-person bound on a count's trips (differential privacy) or None.
        with_bands: also count the time-of-day bands.
    """
    arr = _checked(arr, ("a", "b", "fwd", "hour", "weekend", "commute"), "edge")
    if len(arr) and int(arr["hour"].max()) > 23:
        msg = f"metro: edge record with hour = {int(arr['hour'].max())}, expected 0-23"
        raise PublishError(msg)
    for flag in ("fwd", "weekend", "commute"):
        arr[flag] = arr[flag] != 0  # any non-zero means yes (arr is our own copy)
    row, first = dense_index(*(arr[k] for k in key))
    n_rows = len(first)
    direction = 1 - arr["fwd"].astype(np.int64)  # 0 forward, 1 reverse

    def sub(column: np.ndarray, n_sub: int) -> Cells:  # speeds are published per direction only
        shape = (n_rows, 2 * n_sub)
        return count_cells(row, direction * n_sub + column, shape, arr, max_trips, speeds=False)

    names = arr.dtype.names or ()
    ride = arr["ride"] != 0 if "ride" in names else np.zeros(len(arr), dtype=bool)
    ebike = arr["ebike"] != 0 if "ebike" in names else np.zeros(len(arr), dtype=bool)
    return DirectionSums(
        keys={k: arr[k][first] for k in key},
        total=count_cells(row, direction, (n_rows, 2), arr, max_trips),
        # Column 0 = commute, 1 = leisure.
        kinds=sub(1 - arr["commute"].astype(np.int64), 2),
        # Column 0 = ride other than e-bike, 1 = e-bike ride, 2 = not a ride.
        bikes=sub(np.where(ride, ebike.astype(np.int64), 2), 3),
        bands=sub(_BAND_OF_HOUR[arr["hour"].astype(np.int64)], len(BANDS)) if with_bands else None,
    )


def direction_table(
    arr: np.ndarray, key: tuple[str, ...], pub: Publication, *, with_bands: bool
) -> DirectionTable:
    """Group edge records on ``key`` and publish counts per direction (see
    ``direction_sums`` for the arguments and ``publish_directions`` for the rules)."""
    return publish_directions(direction_sums(arr, key, pub.max_trips, with_bands=with_bands), pub)


def by_hour(t: DirectionTable, *keys: str) -> tuple[np.ndarray, np.ndarray]:
    """``t`` (keyed by ``keys`` and ``hour``) pivoted to one row per ``keys``: published
    counts ``[rows, direction, hour, trips | people]`` (``SUPPRESSED`` where none), and
    per row one index into ``t`` holding its keys."""
    row, first = dense_index(*(t.keys[k] for k in keys))
    wide = np.full((len(first), 2, 24, 2), SUPPRESSED, dtype=np.int64)
    hour = t.keys["hour"].astype(np.int64)
    for d in (0, 1):
        wide[row, d, hour, 0] = t.trips[:, d]
        wide[row, d, hour, 1] = t.people[:, d]
    return wide, first


def publish_directions(
    sums: DirectionSums,
    pub: Publication,
    *,
    hide: np.ndarray | None = None,
    sub_hide: dict[str, np.ndarray] | None = None,
) -> DirectionTable:
    """Apply the privacy rules to grouped sums.

    Each published number stands on its own group of people: a direction shows only
    if ``min_athletes`` people crossed that way, and within it a commute, leisure or
    band count shows only if ``min_athletes`` people made those trips (otherwise one
    person's habits could be read off, and a true 0 could not be published at all).
    None can be worked out from the others (``metro_secondary``): where commute or
    leisure, ride or e-bike, or a band is hidden, a partner is hidden too; ``hide``
    (``[rows, 2]``) hides directions chosen as partners across rows. ``sub_hide`` (by
    kind: ``[rows, 2, n]``), when given, are the sub-counts to hide instead of the
    partners chosen here (``metro_plan`` chooses them over every table at once).
    The order of the ``publish`` calls is fixed: with differential privacy each draws
    the next noise from the release's seeded generator.
    """
    total = sums.total
    n_rows = len(sums)
    shown = total.people >= pub.min_athletes
    if hide is not None:
        shown &= ~hide
    trips = np.where(shown, pub.publish(total.trips, total.people), SUPPRESSED)

    def sub(cells: Cells, n_sub: int, parts: int, kind: str) -> np.ndarray:
        counts = pub.publish(cells.trips, cells.people).reshape(n_rows, 2, n_sub)
        if sub_hide is not None:
            extra = sub_hide[kind]
        else:
            extra = sub_partners(cells, n_sub, parts, shown, pub.min_athletes)
        return np.where(shown[:, :, None] & ~extra, counts, SUPPRESSED)

    kinds = sub(sums.kinds, 2, 2, "kinds")
    bikes = sub(sums.bikes, 3, 2, "bikes")  # not a ride: never published
    kmh, ms = _speeds(total, shown)
    bands = sub(sums.bands, len(BANDS), len(BANDS), "bands") if sums.bands is not None else None

    keep = shown.any(axis=1)  # a row with both directions hidden is not written at all
    people = np.where(shown, pub.publish(total.people, total.people, is_people=True), SUPPRESSED)
    return DirectionTable(
        keys={k: v[keep] for k, v in sums.keys.items()},
        trips=trips[keep],
        people=people[keep],
        commute=kinds[keep, :, 0],
        leisure=kinds[keep, :, 1],
        rides=bikes[keep, :, 0],
        ebike_rides=bikes[keep, :, 1],
        speed_kmh=kmh[keep],
        speed_ms=ms[keep],
        total=np.where(trips >= 0, trips, 0).sum(axis=1)[keep],
        bands=None if bands is None else bands[keep],
    )


def sub_partners(
    cells: Cells, n_sub: int, parts: int, shown: np.ndarray, min_athletes: int
) -> np.ndarray:
    """``[rows, 2, n_sub]``: the sub-counts hidden as partners (``metro_secondary``) in
    each shown direction, among its first ``parts`` columns (those that add up to it)."""
    rows = len(shown)
    trips = cells.trips.reshape(rows, 2, n_sub)[:, :, :parts]
    people = cells.people.reshape(rows, 2, n_sub)[:, :, :parts]
    ok = (people >= min_athletes) & shown[:, :, None]
    extra = np.zeros((rows, 2, n_sub), dtype=bool)
    extra[:, :, :parts] = part_partners(trips, np.where(shown[:, :, None], people, 0), ok,
                                        min_athletes)  # fmt: skip
    return extra


@dataclass(frozen=True)
class CellTable:
    """Published counts of hexagons or origin–destination pairs, one row per key.

    Attributes:
        keys: the key fields (``cell``, or ``o`` and ``d``).
        trips, people: published counts (rows below the threshold are dropped).
        speed_kmh, speed_ms: average speed, ``nan`` when unmeasured (hexagons only).
    """

    keys: dict[str, np.ndarray]
    trips: np.ndarray
    people: np.ndarray
    speed_kmh: np.ndarray
    speed_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.trips)


def cell_sums(
    arr: np.ndarray, key: tuple[str, ...], max_trips: int | None
) -> tuple[np.ndarray, np.ndarray, Cells]:
    """Hexagon or OD records grouped on ``key``: ``(records, first row of each group,
    sums [groups, 1])``, groups in sorted key order."""
    arr = _checked(arr, key, "/".join(key))
    row, first = dense_index(*(arr[k] for k in key))
    return (
        arr,
        first,
        count_cells(row, np.zeros(len(arr), np.int64), (len(first), 1), arr, max_trips),
    )


def cell_table(
    arr: np.ndarray,
    key: tuple[str, ...],
    pub: Publication,
    *,
    hide: np.ndarray | None = None,
) -> CellTable:
    """Group hexagon (``("cell",)``) or OD (``("o", "d")``) records and publish them;
    ``hide`` (per group): the partners ``metro_plan`` hides as well."""
    arr, first, cells = cell_sums(arr, key, pub.max_trips)
    shown = cells.people[:, 0] >= pub.min_athletes
    if hide is not None:
        shown &= ~hide
    rows = first[shown]
    kmh, ms = _speeds(cells, cells.people >= pub.min_athletes)
    return CellTable(
        keys={k: arr[k][rows] for k in key},
        trips=pub.publish(cells.trips, cells.people)[shown, 0],
        people=pub.publish(cells.people, cells.people, is_people=True)[shown, 0],
        speed_kmh=kmh[shown, 0],
        speed_ms=ms[shown, 0],
    )


def bearing_deg(
    lat1: np.ndarray, lng1: np.ndarray, lat2: np.ndarray, lng2: np.ndarray
) -> np.ndarray:
    """Initial great-circle bearing from point 1 to point 2, degrees in [0, 360), 1 decimal."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lng2 - lng1)
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    deg = np.round(np.degrees(np.arctan2(y, x)) % 360.0, 1)
    # 359.96 rounds to 360.0, which is the same direction as 0.0.
    return np.where(deg >= 360.0, 0.0, deg)
