"""From stored trimmed paths to the per-athlete-month aggregates the snapshot reads.

Everything Metro and the heatmap count is derived here from the same trimmed paths, so
trips on an edge always come from the activities that lit its cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h3._cy as h3_cy  # the int API minus its wrapper (hot path)
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
    path: np.ndarray  # PATH_DTYPE
    start_s: int  # UTC epoch seconds of start_date
    utc_offset_s: int
    commute: bool
    max_speed_ms: float


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


def _crossings(cells: np.ndarray, piece: np.ndarray, t: np.ndarray, v: np.ndarray, res: int):  # type: ignore[no-untyped-def]
    """Consecutive distinct metro cells within each piece: (prev, next, t, v, row of next).

    ``piece`` identifies a piece of track (unique across activities).
    """
    parents = cells_to_parent(cells, res)
    # Collapse runs of the same parent within a piece; keep when/how fast each run began.
    new_run = np.ones(len(parents), dtype=bool)
    new_run[1:] = (parents[1:] != parents[:-1]) | (piece[1:] != piece[:-1])
    rows = np.flatnonzero(new_run)
    rp, rs = parents[rows], piece[rows]
    if len(cells):
        rp, rs, rows = _drop_border_bounces(rp, rs, rows, len(cells), _bounce_rows(cells, res))
    cross = rs[1:] == rs[:-1]
    prev, nxt = rp[:-1][cross], rp[1:][cross]
    row = rows[1:][cross]
    rt, rv = t[row], v[row]
    # Parents of adjacent fine cells are almost always adjacent; fill the rare gap.
    if len(prev):
        neighbours = h3_cy.are_neighbor_cells
        ok = [neighbours(a, b) for a, b in zip(prev.tolist(), nxt.tolist(), strict=True)]
        if not all(ok):
            prev, nxt, rt, rv, row = _fill_gaps(prev, nxt, rt, rv, row, ok)
    return prev, nxt, rt, rv, row


def _bounce_rows(cells: np.ndarray, metro_res: int) -> int:
    """Path rows of a visit to a metro cell short enough to be GPS noise along its border.

    Half a metro hexagon's edge of fine cells: 5 rows of res 13 under res 10, and 0 for
    res 11, whose cells are already wider than that (so nothing changes there).
    """
    heat_res = int((int(cells[0]) >> 52) & 0xF)
    spacing = math.sqrt(3.0) * h3.average_hexagon_edge_length(heat_res, "m")
    return int(h3.average_hexagon_edge_length(metro_res, "m") / 2 // spacing)


def _drop_border_bounces(rp, rs, rows, n, max_rows):  # type: ignore[no-untyped-def]
    """Remove A -> B -> A visits to B of at most ``max_rows`` path rows (noise, not travel).

    A track running along a metro cell border at a fine heat resolution flickers between
    the two cells; each flicker would count as a crossing each way.
    """
    if max_rows <= 0:
        return rp, rs, rows
    while len(rp) >= 3:
        same_piece_next = rs[1:] == rs[:-1]
        length = np.diff(np.append(rows, n))  # rows up to the next run (or the path end)
        bounce = (rp[:-2] == rp[2:]) & same_piece_next[:-1] & same_piece_next[1:]
        bounce &= length[1:-1] <= max_rows
        if not bounce.any():
            break
        keep = np.ones(len(rp), dtype=bool)
        keep[1:-1] = ~bounce
        rp, rs, rows = rp[keep], rs[keep], rows[keep]
        merge = np.ones(len(rp), dtype=bool)
        merge[1:] = (rp[1:] != rp[:-1]) | (rs[1:] != rs[:-1])
        rp, rs, rows = rp[merge], rs[merge], rows[merge]
    return rp, rs, rows


def _fill_gaps(prev, nxt, t, v, row, ok):  # type: ignore[no-untyped-def]
    rows: list[tuple[int, int, float, float, int]] = []
    for a, b, tb, vb, r, good in zip(
        prev.tolist(), nxt.tolist(), t.tolist(), v.tolist(), row.tolist(), ok, strict=True
    ):
        if good:
            rows.append((a, b, tb, vb, r))
            continue
        try:
            line = h3.grid_path_cells(a, b)
        except Exception:  # noqa: BLE001 - h3 cannot path across some pentagons: skip
            continue
        rows.extend((line[k], line[k + 1], tb, vb, r) for k in range(len(line) - 1))
    arr = np.array(
        rows, dtype=[("p", "<u8"), ("n", "<u8"), ("t", "<f8"), ("v", "<f8"), ("r", "<i8")]
    ).reshape(-1)
    return arr["p"], arr["n"], arr["t"], arr["v"], arr["r"]


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


def activity_records(
    act: StoredActivity, *, metro_res: int, od_res: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One activity's heat cells, edge crossings, hexagon trips and OD pair."""
    return batch_records([act], metro_res=metro_res, od_res=od_res)[0]


def batch_records(
    acts: list[StoredActivity], *, metro_res: int, od_res: int
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
    # Pieces numbered across the batch: activity i's pieces follow activity i-1's.
    seg_span = np.array(
        [int(a.path["seg"].max()) + 1 if len(a.path) else 0 for a in acts], dtype=np.int64
    )
    seg_base = np.concatenate(([0], np.cumsum(seg_span)))[:-1]
    piece = path["seg"].astype(np.int64) + seg_base[aid]

    # Heat: each activity counts once per cell.
    hrow = _first_of_groups(aid, cells)
    heat_aid, heat_cells = aid[hrow], cells[hrow]
    horder = np.lexsort((heat_cells, heat_aid))
    heat = np.zeros(len(hrow), HEAT_DTYPE)
    heat["cell"], heat["n"] = heat_cells[horder], 1
    heat_bounds = np.searchsorted(heat_aid[horder], np.arange(k + 1))

    # Edges: the first crossing of each edge and direction per activity.
    prev, nxt, ct, cv, row = _crossings(
        cells, piece, path["t"].astype(np.float64), path["v"].astype(np.float64), metro_res
    )
    xaid = aid[row]
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
    edges["trips"] = 1
    edges["speed_sum"] = np.where(speed_ok, cv, 0.0)
    edges["speed_n"] = speed_ok
    edge_bounds = np.searchsorted(xaid, np.arange(k + 1))

    # Hexagons: a trip counts once per hexagon; speeds from the crossings entering it.
    hx_all = cells_to_parent(heat["cell"], od_res)
    hx_aid = np.repeat(np.arange(k), np.diff(heat_bounds))
    hrow2 = _first_of_groups(hx_aid, hx_all)
    hex_aid, hex_cells = hx_aid[hrow2], hx_all[hrow2]
    ho = np.lexsort((hex_cells, hex_aid))
    hex_aid, hex_cells = hex_aid[ho], hex_cells[ho]
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
