"""Read the 12-month window from the store into a ``WindowData`` (privacy rules 6 and 7).

Opted-out athletes are skipped, each athlete's weight in a heat cell is capped, and a
heat cell is kept only if enough distinct athletes reached it. Metro records are left
per athlete (with a local index, never the id) for the Metro writer to threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlite_utils

from heatmetro.core.months import month_index, window_months
from heatmetro.site_builder.window import LayerHeat, WindowData
from heatmetro.state.records import (
    EDGE_DTYPE,
    EDGE_KEY,
    HEAT_DTYPE,
    HEX_DTYPE,
    HEX_KEY,
    LAYERS,
    OD_DTYPE,
    OD_KEY,
    from_blob,
    group_sum,
    with_athlete,
)


@dataclass
class _Rows:
    heat: list[np.ndarray]
    edges: list[np.ndarray]
    hexagons: list[np.ndarray]
    od: list[np.ndarray]


def load_window(
    db: sqlite_utils.Database, month: str, *, min_athletes: int, max_per_athlete: int
) -> WindowData:
    first, last = window_months(month)
    rows = db.execute(
        "SELECT m.athlete_id, m.month, m.layer, m.activities, m.heat, m.edges, m.hexagons, m.od "
        "FROM athlete_months m LEFT JOIN athletes a ON a.athlete_id = m.athlete_id "
        "WHERE m.month BETWEEN ? AND ? AND coalesce(a.opt_out, 0) = 0 "
        "ORDER BY m.athlete_id, m.month, m.layer",
        (first, last),
    ).fetchall()
    index: dict[str, int] = {}
    per_layer: dict[str, _Rows] = {layer: _Rows([], [], [], []) for layer in LAYERS}
    activities = 0
    for athlete_id, month, layer, n_act, heat, edges, hexes, od in rows:
        i = index.setdefault(athlete_id, len(index))
        activities += n_act
        targets = [per_layer["all"]] + ([per_layer[layer]] if layer in per_layer else [])
        when = month_index(month)
        arrays = (
            with_athlete(from_blob(heat, HEAT_DTYPE), i),
            _with_fields(with_athlete(from_blob(edges, EDGE_DTYPE), i), when, layer == "ride"),
            _with_fields(with_athlete(from_blob(hexes, HEX_DTYPE), i), when),
            _with_fields(with_athlete(from_blob(od, OD_DTYPE), i), when),
        )
        for t in targets:
            t.heat.append(arrays[0])
            t.edges.append(arrays[1])
            t.hexagons.append(arrays[2])
            t.od.append(arrays[3])

    def merged(
        parts: list[np.ndarray], dtype: np.dtype, key: tuple[str, ...], sums: tuple[str, ...]
    ) -> np.ndarray:
        if not parts:
            return with_athlete(np.zeros(0, dtype), 0)
        return group_sum(np.concatenate(parts), ("athlete", *key), sums)

    def merged_by_month(
        parts: list[np.ndarray], dtype: np.dtype, key: tuple[str, ...], sums: tuple[str, ...]
    ) -> np.ndarray:
        if not parts:
            ride = True if dtype == EDGE_DTYPE else None
            return _with_fields(with_athlete(np.zeros(0, dtype), 0), 0, ride)
        return group_sum(np.concatenate(parts), ("athlete", "month", *key), sums)

    heat_out: dict[str, LayerHeat] = {}
    edges_out, hex_out, od_out = {}, {}, {}
    for layer, r in per_layer.items():
        per_athlete = merged(r.heat, HEAT_DTYPE, ("cell",), ("n",))
        heat_out[layer] = publishable_heat(layer, per_athlete, min_athletes, max_per_athlete)
        edge_key = (*EDGE_KEY, "ride")
        sums = ("trips", "speed_sum", "speed_n")
        edges_out[layer] = merged_by_month(r.edges, EDGE_DTYPE, edge_key, sums)
        hex_out[layer] = merged_by_month(r.hexagons, HEX_DTYPE, HEX_KEY, sums)
        od_out[layer] = merged_by_month(r.od, OD_DTYPE, OD_KEY, ("trips",))
    return WindowData(
        month=last,
        first_month=first,
        heat=heat_out,
        edges=edges_out,
        hexagons=hex_out,
        od=od_out,
        athletes=len(index),
        activities=activities,
        counts={f"cells_{k}": len(v.cells) for k, v in heat_out.items()},
    )


def _with_fields(arr: np.ndarray, month: int, ride: bool | None = None) -> np.ndarray:
    """``arr`` with the local ``month`` of its athlete-month (and, for edges, ``ride``).

    Metro publishes per month too, and splits rides from e-bike rides in every layer,
    so both must survive the merge of athlete-months into a layer.
    """
    extra = [("month", "<u2")] + ([("ride", "u1")] if ride is not None else [])
    names = arr.dtype.names or ()
    out = np.zeros(len(arr), np.dtype([*[(n, arr.dtype[n]) for n in names], *extra]))
    for n in names:
        out[n] = arr[n]
    out["month"] = month
    if ride is not None:
        out["ride"] = ride
    return out


def publishable_heat(
    layer: str, per_athlete: np.ndarray, min_athletes: int, max_per_athlete: int
) -> LayerHeat:
    """Cap each athlete's weight per cell, then keep cells with enough distinct athletes.

    ``per_athlete`` has one row per (athlete, cell) with the athlete's activity count.
    """
    if len(per_athlete) == 0:
        empty = np.zeros(0, np.uint64)
        return LayerHeat(layer, empty, np.zeros(0), np.zeros(0, np.uint32))
    capped = np.minimum(per_athlete["n"], max_per_athlete).astype(np.float64)
    cells, inv = np.unique(per_athlete["cell"], return_inverse=True)
    heat = np.bincount(inv, weights=capped, minlength=len(cells))
    athletes = np.bincount(inv, minlength=len(cells)).astype(np.uint32)
    keep = athletes >= min_athletes
    return LayerHeat(layer, cells[keep], heat[keep], athletes[keep])
