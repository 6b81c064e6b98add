"""Read the 12-month window from the store into a ``WindowData`` (privacy rules 6 and 7).

Opted-out athletes are skipped, each athlete's weight in a heat cell is capped, and a
heat cell is kept only if enough distinct athletes reached it. Metro records are left
per athlete (with a local index, never the id) for the Metro writer to threshold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from heatmetro.core.months import month_index, window_months
from heatmetro.site_builder.activity_layers import ActivityPath, layer_heat
from heatmetro.site_builder.window import LayerHeat, WindowData, publishable_heat
from heatmetro.state.records import (
    EDGE_DTYPE,
    EDGE_KEY,
    HEAT_DTYPE,
    HEX_DTYPE,
    HEX_KEY,
    LAYERS,
    OD_DTYPE,
    OD_KEY,
    PATH_DTYPE,
    from_blob,
    group_sum,
    with_athlete,
)
from heatmetro.state.view import ReadView


def contributing_paths(
    view: ReadView, where: str, params: tuple[object, ...]
) -> Iterator[ActivityPath]:
    """The public store's contributing activities matching ``where`` (SQL on ``a.``),
    athletes numbered locally in id order (opted-out athletes skipped, as above), over
    every shard of the view."""
    index: dict[str, int] = {}
    rows = view.merged(
        "SELECT a.athlete_id, a.layer, a.sport_type, a.start_s, a.utc_offset_s, a.path "
        "FROM activities a LEFT JOIN athletes s ON s.athlete_id = a.athlete_id "
        f"WHERE a.status = 'active' AND coalesce(s.opt_out, 0) = 0 AND {where} "
        "ORDER BY a.athlete_id, a.activity_id",
        params,
    )
    for athlete_id, layer, sport, start_s, offset, path in rows:
        yield ActivityPath(
            index.setdefault(athlete_id, len(index)),
            layer,
            sport,
            start_s,
            offset,
            from_blob(path, PATH_DTYPE),
        )


@dataclass
class _Rows:
    heat: list[np.ndarray]
    edges: list[np.ndarray]
    hexagons: list[np.ndarray]
    od: list[np.ndarray]


def load_window(
    view: ReadView,
    month: str,
    *,
    min_athletes: int,
    max_per_athlete: int,
    threshold_ring: int,
    sport_layers: tuple[str, ...] = (),
    night: bool = False,
    partial: bool = False,
) -> WindowData:
    """The window ending with ``month``: month layers from the aggregates, plus the
    per-sport and night layers asked for, counted from the window's stored paths.
    ``threshold_ring`` and ``partial``: see ``publishable_heat``."""
    first, last = window_months(month)
    rows = view.window_rows(first, last)  # opted-out athletes already left out
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
        heat_out[layer] = publishable_heat(
            layer, per_athlete, min_athletes, max_per_athlete,
            threshold_ring=threshold_ring, partial=partial,
        )  # fmt: skip
        edge_key = (*EDGE_KEY, "ride")
        sums = ("trips", "speed_sum", "speed_n")
        edges_out[layer] = merged_by_month(r.edges, EDGE_DTYPE, edge_key, sums)
        hex_out[layer] = merged_by_month(r.hexagons, HEX_DTYPE, HEX_KEY, sums)
        od_out[layer] = merged_by_month(r.od, OD_DTYPE, OD_KEY, ("trips",))
    if sport_layers or night:
        extra = layer_heat(
            contributing_paths(view, "a.month BETWEEN ? AND ?", (first, last)),
            group_layers=False,
            sport_layers=sport_layers,
            night=night,
            min_athletes=min_athletes,
            max_per_athlete=max_per_athlete,
            threshold_ring=threshold_ring,
            partial=partial,
        )
        heat_out.update(extra)
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
