"""From stored trimmed paths to the per-athlete-month aggregates the snapshot reads.

Everything Metro and the heatmap count is derived here from the same trimmed paths, so
trips on an edge always come from the activities that lit its cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import h3.api.basic_int as h3
import numpy as np

from state.records import (
    EDGE_DTYPE,
    EDGE_KEY,
    HEAT_DTYPE,
    HEX_DTYPE,
    HEX_KEY,
    OD_DTYPE,
    OD_KEY,
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


def _crossings(path: np.ndarray, res: int) -> tuple[np.ndarray, ...]:
    """Consecutive distinct metro cells within each piece: (prev, next, t, v) at entry."""
    parents = cells_to_parent(path["cell"], res)
    seg = path["seg"]
    # Collapse runs of the same parent within a piece; keep when/how fast each run began.
    new_run = np.concatenate(([True], (parents[1:] != parents[:-1]) | (seg[1:] != seg[:-1])))
    rp, rs = parents[new_run], seg[new_run]
    rt = path["t"][new_run].astype(np.float64)
    rv = path["v"][new_run].astype(np.float64)
    cross = rs[1:] == rs[:-1]
    prev, nxt = rp[:-1][cross], rp[1:][cross]
    t, v = rt[1:][cross], rv[1:][cross]
    # Parents of adjacent fine cells are almost always adjacent; fill the rare gap.
    if len(prev):
        neighbours = h3.are_neighbor_cells
        ok = [neighbours(a, b) for a, b in zip(prev.tolist(), nxt.tolist(), strict=True)]
        if not all(ok):
            prev, nxt, t, v = _fill_gaps(prev, nxt, t, v, ok)
    return prev, nxt, t, v


def _fill_gaps(prev, nxt, t, v, ok):  # type: ignore[no-untyped-def]
    rows: list[tuple[int, int, float, float]] = []
    for a, b, tb, vb, good in zip(
        prev.tolist(), nxt.tolist(), t.tolist(), v.tolist(), ok, strict=True
    ):
        if good:
            rows.append((a, b, tb, vb))
            continue
        try:
            line = h3.grid_path_cells(a, b)
        except Exception:  # noqa: BLE001 - h3 cannot path across some pentagons: skip
            continue
        rows.extend((line[k], line[k + 1], tb, vb) for k in range(len(line) - 1))
    arr = np.array(rows, dtype=[("p", "<u8"), ("n", "<u8"), ("t", "<f8"), ("v", "<f8")])
    return arr["p"], arr["n"], arr["t"], arr["v"]


def activity_records(
    act: StoredActivity, *, metro_res: int, od_res: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One activity's heat cells, edge crossings, hexagon trips and OD pair.

    Runs once per activity on the ingest hot path: plain arrays, few numpy calls.
    """
    path = act.path
    if len(path) == 0:
        return (
            np.zeros(0, HEAT_DTYPE),
            np.zeros(0, EDGE_DTYPE),
            np.zeros(0, HEX_DTYPE),
            np.zeros(0, OD_DTYPE),
        )
    cells = np.unique(path["cell"])
    heat = np.zeros(len(cells), HEAT_DTYPE)
    heat["cell"], heat["n"] = cells, 1

    prev, nxt, t_next, speed = _crossings(path, metro_res)
    if len(prev) > 1:
        # A trip counts once per edge and direction: a track running along a cell border
        # zig-zags across the same edge many times.
        order = np.lexsort((nxt, prev))  # stable: the first crossing of a pair sorts first
        sp, sn = prev[order], nxt[order]
        new = np.ones(len(order), dtype=bool)
        new[1:] = (sp[1:] != sp[:-1]) | (sn[1:] != sn[:-1])
        first = np.sort(order[new])
        prev, nxt, t_next, speed = prev[first], nxt[first], t_next[first], speed[first]
    edges = np.zeros(len(prev), EDGE_DTYPE)
    hex_cells = np.unique(cells_to_parent(cells, od_res))
    hexes = np.zeros(len(hex_cells), HEX_DTYPE)
    hexes["cell"], hexes["trips"] = hex_cells, 1  # a trip counts once per hexagon
    if len(prev):
        speed_ok = np.isfinite(speed) & (speed <= act.max_speed_ms)
        local = act.start_s + act.utc_offset_s + np.floor(t_next).astype(np.int64)
        edges["a"] = np.minimum(prev, nxt)
        edges["b"] = np.maximum(prev, nxt)
        edges["fwd"] = prev < nxt
        edges["hour"] = (local // 3600) % 24
        # 1970-01-01 was a Thursday (weekday 3 when Monday is 0).
        edges["weekend"] = ((local // 86400) + 3) % 7 >= 5
        edges["commute"] = act.commute
        edges["trips"] = 1
        edges["speed_sum"] = np.where(speed_ok, speed, 0.0)
        edges["speed_n"] = speed_ok
        # Hexagon speeds come from the crossings that enter the hexagon.
        where = np.searchsorted(hex_cells, cells_to_parent(nxt, od_res))
        where = np.minimum(where, len(hex_cells) - 1)
        hexes["speed_sum"] = np.bincount(
            where, weights=edges["speed_sum"], minlength=len(hex_cells)
        )
        hexes["speed_n"] = np.bincount(where, weights=speed_ok, minlength=len(hex_cells))
    ends = cells_to_parent(path["cell"][[0, -1]], od_res)
    od = np.zeros(1, OD_DTYPE)
    od["o"], od["d"], od["trips"] = ends[0], ends[1], 1
    return heat, edges, hexes, od


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
