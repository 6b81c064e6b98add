"""From stored trimmed paths to the per-athlete-month aggregates the snapshot reads.

Everything Metro and the heatmap count is derived here from the same trimmed paths, so
trips on an edge always come from the activities that lit its cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import h3.api.basic_int as h3
import numpy as np

from heatmetro.state.records import (
    EDGE_DTYPE,
    EDGE_KEY,
    HEAT_DTYPE,
    HEX_DTYPE,
    HEX_KEY,
    OD_DTYPE,
    OD_KEY,
    PATH_DTYPE,
    group_sum,
)


@dataclass(frozen=True, slots=True)
class StoredActivity:
    """What the aggregates need of one contributing activity."""

    activity_id: str
    path: np.ndarray  # PATH_DTYPE at the heat resolution
    metro_path: np.ndarray  # PATH_DTYPE at the Metro resolution (see flows.metro_path)
    start_s: int  # UTC epoch seconds of start_date
    utc_offset_s: int
    commute: bool
    max_speed_ms: float
    ebike: bool = False  # EBikeRide / EMountainBikeRide: counted apart from other rides


@dataclass(frozen=True, slots=True)
class MonthAggregate:
    heat: np.ndarray  # HEAT_DTYPE
    edges: np.ndarray  # EDGE_DTYPE
    hexagons: np.ndarray  # HEX_DTYPE
    od: np.ndarray  # OD_DTYPE
    activities: int


_RES_MASK = np.uint64(0xF << 52)


def cells_to_parent(cells: np.ndarray, res: int) -> np.ndarray:
    """Vectorised ``h3.cell_to_parent`` for cells at ``res`` or finer.

    An H3 index stores its resolution in bits 52-55 and one 3-bit digit per finer
    resolution below; the parent is the same index with the resolution lowered and the
    digits past it set to 7 (unused), exactly what the C library does.
    """
    cells = np.asarray(cells, dtype=np.uint64)
    out = (cells & ~_RES_MASK) | np.uint64(res << 52)
    return out | np.uint64((1 << ((15 - res) * 3)) - 1)


def _crossings(cells: np.ndarray, piece: np.ndarray, t: np.ndarray, v: np.ndarray):  # type: ignore[no-untyped-def]
    """Consecutive distinct Metro cells within each piece: (prev, next, t, v, row of next).

    ``piece`` identifies a piece of track (unique across activities). The Metro path is
    built with hysteresis and grid-filled on ingest (``heatmetro.flows.metro_path``), so
    consecutive cells of a piece are neighbours; a cut made later by "hide more" only
    splits pieces. A pair that is not (a store written by an older version) is skipped.
    """
    new_run = np.ones(len(cells), dtype=bool)
    new_run[1:] = (cells[1:] != cells[:-1]) | (piece[1:] != piece[:-1])
    rows = np.flatnonzero(new_run)
    rc, rs = cells[rows], piece[rows]
    cross = rs[1:] == rs[:-1]
    prev, nxt = rc[:-1][cross], rc[1:][cross]
    row = rows[1:][cross]
    if len(prev):
        ok = np.fromiter(
            (h3.are_neighbor_cells(a, b) for a, b in zip(prev.tolist(), nxt.tolist(), strict=True)),
            dtype=bool,
            count=len(prev),
        )
        prev, nxt, row = prev[ok], nxt[ok], row[ok]
    return prev, nxt, t[row], v[row], row


def _first_of_groups(*keys: np.ndarray) -> np.ndarray:
    """Positions of the first row of each distinct key combination, in row order."""
    order = np.lexsort(tuple(reversed(keys)))  # stable: first occurrences sort first
    change = np.zeros(len(order), dtype=bool)
    if len(order):
        change[0] = True
    for k in keys:
        sk = k[order]
        change[1:] |= sk[1:] != sk[:-1]
    return np.sort(order[change])


_LOW52 = np.uint64((1 << 52) - 1)


def _distinct_pairs(aid: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (activity, cell) pairs, sorted by activity then cell.

    Cells of one resolution differ only in their low 52 bits (base cell and digits), so
    with fewer than 4,096 activities a pair packs into one uint64 that sorts like the pair:
    one plain sort instead of a two-key lexsort. Anything else takes the lexsort.
    """
    high = cells >> np.uint64(52)
    if len(cells) and 0 <= aid.min() and aid.max() < 4096 and np.all(high == high[0]):
        key = np.sort((aid.astype(np.uint64) << np.uint64(52)) | (cells & _LOW52))
        key = key[np.r_[True, key[1:] != key[:-1]]]  # (np.unique hashes: ~8x slower here)
        return (key >> np.uint64(52)).astype(aid.dtype), (key & _LOW52) | (high[0] << np.uint64(52))
    order = np.lexsort((cells, aid))
    pa, pc = aid[order], cells[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (pa[1:] != pa[:-1]) | (pc[1:] != pc[:-1])
    return pa[first], pc[first]


def activity_records(
    act: StoredActivity, *, od_res: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One activity's heat cells, edge crossings, hexagon trips and OD pair."""
    return batch_records([act], od_res=od_res)[0]


def batch_records(
    acts: list[StoredActivity], *, od_res: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``activity_records`` for many activities in one vectorised pass.

    Each activity's result does not depend on the others (no sums across activities),
    so an activity gets the same records whatever batch it was processed in.
    """
    k = len(acts)
    sizes = np.array([len(a.path) for a in acts], dtype=np.int64)
    path = concat([a.path for a in acts], PATH_DTYPE)
    aid = np.repeat(np.arange(k), sizes)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    cells = path["cell"]
    # Heat: each activity counts once per cell.
    heat_aid, heat_cells = _distinct_pairs(aid, cells)
    heat = np.zeros(len(heat_cells), HEAT_DTYPE)
    heat["cell"], heat["n"] = heat_cells, 1
    heat_bounds = np.searchsorted(heat_aid, np.arange(k + 1))

    # Edges: the first crossing of each edge and direction per activity, on the Metro path.
    msizes = np.array([len(a.metro_path) for a in acts], dtype=np.int64)
    mpath = concat([a.metro_path for a in acts], PATH_DTYPE)
    maid = np.repeat(np.arange(k), msizes)
    mspan = np.array(
        [int(a.metro_path["piece"].max()) + 1 if len(a.metro_path) else 0 for a in acts],
        dtype=np.int64,
    )
    mpiece = mpath["piece"].astype(np.int64) + np.concatenate(([0], np.cumsum(mspan)))[:-1][maid]
    prev, nxt, ct, cv, row = _crossings(
        mpath["cell"], mpiece, mpath["t"].astype(np.float64), mpath["v"].astype(np.float64)
    )
    xaid = maid[row]
    if len(prev) > 1:
        first = _first_of_groups(xaid, prev, nxt)
        prev, nxt, ct, cv, xaid = prev[first], nxt[first], ct[first], cv[first], xaid[first]
    start = np.array([a.start_s + a.utc_offset_s for a in acts], dtype=np.int64)
    vmax = np.array([a.max_speed_ms for a in acts])
    commute = np.array([a.commute for a in acts], dtype=bool)
    speed_ok = np.isfinite(cv) & (cv <= vmax[xaid]) if len(xaid) else np.zeros(0, dtype=bool)
    local = start[xaid] + np.floor(ct).astype(np.int64)
    edges = np.zeros(len(prev), EDGE_DTYPE)
    edges["a"] = np.minimum(prev, nxt)
    edges["b"] = np.maximum(prev, nxt)
    edges["fwd"] = prev < nxt
    edges["hour"] = (local // 3600) % 24
    # 1970-01-01 was a Thursday (weekday 3 when Monday is 0).
    edges["weekend"] = ((local // 86400) + 3) % 7 >= 5
    edges["commute"] = commute[xaid]
    edges["ebike"] = np.array([a.ebike for a in acts], dtype=bool)[xaid] if k else False
    edges["trips"] = 1
    edges["speed_sum"] = np.where(speed_ok, cv, 0.0)
    edges["speed_n"] = speed_ok
    edge_bounds = np.searchsorted(xaid, np.arange(k + 1))

    # Hexagons: a trip counts once per hexagon; speeds from the crossings entering it.
    hx_all = cells_to_parent(heat["cell"], od_res)
    hx_aid = np.repeat(np.arange(k), np.diff(heat_bounds))
    hex_aid, hex_cells = _distinct_pairs(hx_aid, hx_all)
    hexes = np.zeros(len(hex_cells), HEX_DTYPE)
    hexes["cell"], hexes["trips"] = hex_cells, 1
    if len(nxt) and len(hex_cells):
        dense_hex, dense_inv = np.unique(
            np.concatenate([hex_cells, cells_to_parent(nxt, od_res)]), return_inverse=True
        )
        width = len(dense_hex)
        group_key = hex_aid * width + dense_inv[: len(hex_cells)]
        cross_key = xaid * width + dense_inv[len(hex_cells) :]
        where = np.searchsorted(group_key, cross_key)
        found = where < len(group_key)
        found[found] = group_key[where[found]] == cross_key[found]
        hexes["speed_sum"] = np.bincount(
            where[found], weights=edges["speed_sum"][found], minlength=len(hex_cells)
        )
        hexes["speed_n"] = np.bincount(
            where[found], weights=speed_ok[found], minlength=len(hex_cells)
        )
    hex_bounds = np.searchsorted(hex_aid, np.arange(k + 1))

    out = []
    for i in range(k):
        if sizes[i] == 0:
            out.append(
                (
                    np.zeros(0, HEAT_DTYPE),
                    np.zeros(0, EDGE_DTYPE),
                    np.zeros(0, HEX_DTYPE),
                    np.zeros(0, OD_DTYPE),
                )
            )
            continue
        ends = cells_to_parent(cells[[bounds[i], bounds[i + 1] - 1]], od_res)
        od = np.zeros(1, OD_DTYPE)
        od["o"], od["d"], od["trips"] = ends[0], ends[1], 1
        out.append(
            (
                heat[heat_bounds[i] : heat_bounds[i + 1]],
                edges[edge_bounds[i] : edge_bounds[i + 1]],
                hexes[hex_bounds[i] : hex_bounds[i + 1]],
                od,
            )
        )
    return out


def merge_records(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> MonthAggregate:
    """Sum activities' records into one athlete-month-layer aggregate.

    Callers pass ``parts`` in activity-id order so float sums are bit-identical
    whatever order the activities arrived in.
    """
    contributing = sum(1 for p in parts if len(p[0]))
    heat = group_sum(concat([p[0] for p in parts], HEAT_DTYPE), ("cell",), ("n",))
    edges = group_sum(
        concat([p[1] for p in parts], EDGE_DTYPE), EDGE_KEY, ("trips", "speed_sum", "speed_n")
    )
    hexes = group_sum(
        concat([p[2] for p in parts], HEX_DTYPE), HEX_KEY, ("trips", "speed_sum", "speed_n")
    )
    od = group_sum(concat([p[3] for p in parts], OD_DTYPE), OD_KEY, ("trips",))
    return MonthAggregate(heat, edges, hexes, od, contributing)


def concat(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """``np.concatenate`` for same-dtype structured arrays, via bytes (no dtype promotion)."""
    return np.frombuffer(b"".join(p.tobytes() for p in parts), dtype=dtype)
