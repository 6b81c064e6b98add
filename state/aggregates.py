"""From stored trimmed paths to the per-athlete-month aggregates the snapshot reads.

Everything Metro and the heatmap count is derived here from the same trimmed paths, so
trips on an edge always come from the activities that lit its cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import h3.api.basic_int as h3
import numpy as np

from heatmetro.geo import haversine_m
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


class ParentCache:
    """Memoised ``cell_to_parent`` and cell centres (h3 has no vector API)."""

    def __init__(self) -> None:
        self._parents: dict[tuple[int, int], int] = {}
        self._centres: dict[int, tuple[float, float]] = {}

    def parents(self, cells: np.ndarray, res: int) -> np.ndarray:
        uniq, inv = np.unique(cells, return_inverse=True)
        get = self._parents.get
        out = np.empty(len(uniq), dtype=np.uint64)
        for i, c in enumerate(uniq.tolist()):
            p = get((c, res))
            if p is None:
                p = h3.cell_to_parent(c, res)
                self._parents[(c, res)] = p
            out[i] = p
        return out[inv]

    def centres(self, cells: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(cells, return_inverse=True)
        out = np.empty((len(uniq), 2), dtype=np.float64)
        for i, c in enumerate(uniq.tolist()):
            ll = self._centres.get(c)
            if ll is None:
                ll = h3.cell_to_latlng(c)
                self._centres[c] = ll
            out[i] = ll
        return out[inv]


def _crossings(path: np.ndarray, res: int, cache: ParentCache) -> tuple[np.ndarray, ...]:
    """Consecutive distinct metro cells within each segment: (prev, next, t_prev, t_next)."""
    parents = cache.parents(path["cell"], res)
    seg = path["seg"]
    t = path["t"].astype(np.float64)
    # Collapse runs of the same parent within a segment; remember when each run began.
    new_run = np.r_[True, (parents[1:] != parents[:-1]) | (seg[1:] != seg[:-1])]
    rp, rs, rt = parents[new_run], seg[new_run], t[new_run]
    cross = rs[1:] == rs[:-1]
    prev, nxt = rp[:-1][cross], rp[1:][cross]
    t_prev, t_next = rt[:-1][cross], rt[1:][cross]
    # Parents of adjacent fine cells are almost always adjacent; fill the rare gap.
    if len(prev):
        ok = np.fromiter(
            (h3.are_neighbor_cells(int(a), int(b)) for a, b in zip(prev, nxt, strict=True)),
            dtype=bool,
            count=len(prev),
        )
        if not ok.all():
            prev, nxt, t_prev, t_next = _fill_gaps(prev, nxt, t_prev, t_next, ok)
    return prev, nxt, t_prev, t_next


def _fill_gaps(prev, nxt, t_prev, t_next, ok):  # type: ignore[no-untyped-def]
    rows: list[tuple[int, int, float, float]] = []
    for a, b, ta, tb, good in zip(
        prev.tolist(), nxt.tolist(), t_prev.tolist(), t_next.tolist(), ok.tolist(), strict=True
    ):
        if good:
            rows.append((a, b, ta, tb))
            continue
        try:
            line = h3.grid_path_cells(a, b)
        except Exception:  # noqa: BLE001 - h3 cannot path across some pentagons: skip
            continue
        n = len(line) - 1
        for k in range(n):
            rows.append((line[k], line[k + 1], ta + (tb - ta) * k / n, ta + (tb - ta) * (k + 1) / n))
    arr = np.array(rows, dtype=[("p", "<u8"), ("n", "<u8"), ("tp", "<f8"), ("tn", "<f8")])
    return arr["p"], arr["n"], arr["tp"], arr["tn"]


def activity_records(
    act: StoredActivity, *, metro_res: int, od_res: int, cache: ParentCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One activity's heat cells, edge crossings, hexagon trips and OD pair."""
    path = act.path
    heat = np.zeros(0, HEAT_DTYPE)
    edges = np.zeros(0, EDGE_DTYPE)
    hexes = np.zeros(0, HEX_DTYPE)
    od = np.zeros(0, OD_DTYPE)
    if len(path) == 0:
        return heat, edges, hexes, od
    cells = np.unique(path["cell"])
    heat = np.zeros(len(cells), HEAT_DTYPE)
    heat["cell"], heat["n"] = cells, 1

    prev, nxt, t_prev, t_next = _crossings(path, metro_res, cache)
    if len(prev):
        c_prev, c_next = cache.centres(prev), cache.centres(nxt)
        dist = haversine_m(c_prev[:, 0], c_prev[:, 1], c_next[:, 0], c_next[:, 1])
        dt = t_next - t_prev
        speed_ok = dt > 0
        speed = np.where(speed_ok, dist / np.where(speed_ok, dt, 1.0), 0.0)
        speed_ok &= speed <= act.max_speed_ms
        local = act.start_s + act.utc_offset_s + np.floor(t_next).astype(np.int64)
        edges = np.zeros(len(prev), EDGE_DTYPE)
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
        hx = np.zeros(len(prev), HEX_DTYPE)
        hx["cell"] = cache.parents(nxt, od_res)
        hx["speed_sum"], hx["speed_n"] = edges["speed_sum"], edges["speed_n"]
        hexes = group_sum(hx, HEX_KEY, ("speed_sum", "speed_n"))
    visited = np.unique(cache.parents(cells, od_res))
    missing = np.setdiff1d(visited, hexes["cell"])
    if len(missing):
        extra = np.zeros(len(missing), HEX_DTYPE)
        extra["cell"] = missing
        hexes = np.sort(np.concatenate([hexes, extra]), order="cell")
    hexes["trips"] = 1  # a trip counts once per hexagon however long it stays
    ends = cache.parents(path["cell"][[0, -1]], od_res)
    od = np.zeros(1, OD_DTYPE)
    od["o"], od["d"], od["trips"] = ends[0], ends[1], 1
    return heat, edges, hexes, od


def month_aggregate(
    activities: list[StoredActivity], *, metro_res: int, od_res: int, cache: ParentCache | None = None
) -> MonthAggregate:
    """Aggregate one athlete's activities of one month and layer (order-independent)."""
    cache = cache or ParentCache()
    parts = [
        activity_records(a, metro_res=metro_res, od_res=od_res, cache=cache)
        for a in sorted(activities, key=lambda a: a.activity_id)
    ]
    if not parts:
        parts = [(np.zeros(0, HEAT_DTYPE), np.zeros(0, EDGE_DTYPE), np.zeros(0, HEX_DTYPE), np.zeros(0, OD_DTYPE))]
    heat = group_sum(np.concatenate([p[0] for p in parts]), ("cell",), ("n",))
    edges = group_sum(np.concatenate([p[1] for p in parts]), EDGE_KEY, ("trips", "speed_sum", "speed_n"))
    hexes = group_sum(np.concatenate([p[2] for p in parts]), HEX_KEY, ("trips", "speed_sum", "speed_n"))
    od = group_sum(np.concatenate([p[3] for p in parts]), OD_KEY, ("trips",))
    contributing = sum(1 for a in activities if len(a.path))
    return MonthAggregate(heat, edges, hexes, od, contributing)
