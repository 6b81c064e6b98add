"""Read the 12-month window from the store into a ``WindowData`` (privacy rules 6 and 7).

Opted-out athletes are skipped, each athlete's weight in a heat cell is capped, and a
heat cell is kept only if enough distinct athletes reached it. Metro records are left
per athlete (with a local index, never the id) for the Metro writer to threshold.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np

from heatmetro.core.months import month_index, window_months
from heatmetro.site_builder.activity_layers import (
    PER_ATHLETE,
    ActivityPath,
    layer_names,
    per_athlete_counts,
)
from heatmetro.site_builder.split_rows import SplitRows, heat_rows, whole
from heatmetro.site_builder.threshold_cache import LayerThresholds
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
from heatmetro.state.view import ReadView, only_athletes


def contributing_paths(
    view: ReadView,
    where: str,
    params: tuple[object, ...],
    ids: list[str] | None = None,
    *,
    sort_in_sql: bool = True,
) -> Iterator[ActivityPath]:
    """The public store's contributing activities matching ``where`` (SQL on ``a.``),
    athletes numbered locally in id order (opted-out athletes skipped, as above), over
    every shard of the view, in (athlete id, activity id) order. ``ids``, when given,
    receives the athletes' ids in index order.

    ``sort_in_sql=False``: each shard's rows are sorted here, for a ``where`` read through
    an index in another order (SQLite's sorter would copy every path blob; here the
    rows are only referenced). Same order: ids compare alike as UTF-8 bytes and as str.
    """
    index: dict[str, int] = {}
    sql = (
        "SELECT a.athlete_id, a.activity_id, a.layer, a.sport_type, a.start_s, "
        "a.utc_offset_s, a.path "
        "FROM activities a LEFT JOIN athletes s ON s.athlete_id = a.athlete_id "
        f"WHERE a.status = 'active' AND coalesce(s.opt_out, 0) = 0 AND {where}"
    )
    if sort_in_sql:
        rows = view.merged(f"{sql} ORDER BY a.athlete_id, a.activity_id", params)
    else:
        rows = view.merged_sorted(sql, params, columns=2)
    for athlete_id, _, layer, sport, start_s, offset, path in rows:
        if ids is not None and athlete_id not in index:
            ids.append(athlete_id)
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


KINDS = ("heat", "edges", "hexagons", "od")


def part_dtypes(extra_layers: list[str]) -> dict[str, np.dtype]:
    """The arrays of a ``WindowParts`` and their record layouts."""
    kinds = {
        "heat": with_athlete(np.zeros(0, HEAT_DTYPE), 0).dtype,
        "edges": _with_fields(with_athlete(np.zeros(0, EDGE_DTYPE), 0), 0, True).dtype,
        "hexagons": _with_fields(with_athlete(np.zeros(0, HEX_DTYPE), 0), 0).dtype,
        "od": _with_fields(with_athlete(np.zeros(0, OD_DTYPE), 0), 0).dtype,
    }
    out = {f"{kind}/{layer}": dt for layer in LAYERS for kind, dt in kinds.items()}
    out.update({f"extra/{name}": PER_ATHLETE for name in extra_layers})
    return out


@dataclass
class WindowParts:
    """The window per athlete, before any threshold: what ``load_window`` publishes from.

    Every array has one row per (athlete, key) with ``athlete`` an index into ``ids``
    (sorted), rows sorted by (athlete, key): exactly the merge of all athletes' rows,
    so the parts of unchanged athletes can be kept and the others replaced (the window
    cache). ``has_rows``: the athlete has month aggregates in the window (they are
    numbered by ``load_window``); ``has_paths``: contributing activities (extra layers).
    """

    ids: list[str]
    activities: np.ndarray
    has_rows: np.ndarray
    has_paths: np.ndarray
    arrays: Mapping[str, np.ndarray]  # a dict, or ``window_cache.MergedArrays`` (lazy)


def read_parts(
    view: ReadView,
    first: str,
    last: str,
    *,
    extra_layers: tuple[tuple[str, ...], bool],
    athletes: Collection[str] | None = None,
) -> WindowParts:
    """The parts of ``athletes`` (everyone when None) read from the store.

    ``extra_layers``: the sport types with their own layer, and whether to count night.
    """
    sport_layers, night = extra_layers
    rows = view.window_rows(first, last) if athletes is None else (
        view.window_rows(first, last, athletes)
    )  # fmt: skip
    index: dict[str, int] = {}
    per_layer: dict[str, _Rows] = {layer: _Rows([], [], [], []) for layer in LAYERS}
    n_act: list[int] = []
    for athlete_id, month, layer, n, heat, edges, hexes, od in rows:
        i = index.setdefault(athlete_id, len(index))
        if i == len(n_act):
            n_act.append(0)
        n_act[i] += n
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
    path_ids: list[str] = []
    names = layer_names(group_layers=False, sport_layers=sport_layers, night=night)
    extra: dict[str, np.ndarray] = {name: np.zeros(0, PER_ATHLETE) for name in names}
    if names:
        where, params = only_athletes("a.athlete_id", athletes)
        acts = list(
            contributing_paths(
                view, f"a.month BETWEEN ? AND ? AND {where}", (first, last, *params), path_ids
            )
        )
        extra = per_athlete_counts(acts, group_layers=False, sport_layers=sport_layers, night=night)
    # Both lists are in id order, so are their union and the maps into it.
    row_ids = list(index)
    ids = sorted(set(row_ids) | set(path_ids))
    pos = {a: i for i, a in enumerate(ids)}
    row_to = np.array([pos[a] for a in row_ids], dtype=np.int32)
    path_to = np.array([pos[a] for a in path_ids], dtype=np.int32)
    dtypes = part_dtypes(names)
    out: dict[str, np.ndarray] = {}
    for layer, r in per_layer.items():
        for kind, parts in zip(KINDS, (r.heat, r.edges, r.hexagons, r.od), strict=True):
            name = f"{kind}/{layer}"
            if not parts:
                out[name] = np.zeros(0, dtypes[name])
                continue
            merged = group_sum(np.concatenate(parts), MERGE_KEYS[kind], MERGE_SUMS[kind])
            out[name] = _remap(merged, row_to)
    for name, arr in extra.items():
        out[f"extra/{name}"] = _remap(arr, path_to)
    activities = np.zeros(len(ids), np.int64)
    activities[row_to] = n_act
    has_rows = np.zeros(len(ids), bool)
    has_rows[row_to] = True
    has_paths = np.zeros(len(ids), bool)
    has_paths[path_to] = True
    return WindowParts(ids, activities, has_rows, has_paths, out)


# Per kind, the key rows are merged (and sorted) on, and the fields summed (a cluster
# snapshot merges its members' rows with these too: the same rows as one process).
MERGE_KEYS = {
    "heat": ("athlete", "cell"),
    "edges": ("athlete", "month", *EDGE_KEY, "ride"),
    "hexagons": ("athlete", "month", *HEX_KEY),
    "od": ("athlete", "month", *OD_KEY),
}
MERGE_SUMS = {
    "heat": ("n",),
    "edges": ("trips", "speed_sum", "speed_n"),
    "hexagons": ("trips", "speed_sum", "speed_n"),
    "od": ("trips",),
}


def _remap(arr: np.ndarray, to: np.ndarray) -> np.ndarray:
    """``arr`` with its ``athlete`` index mapped through ``to`` (in place: arr is ours)."""
    if len(arr):
        arr["athlete"] = to[arr["athlete"]]
    return arr


def assemble(
    parts: WindowParts,
    first: str,
    last: str,
    *,
    min_athletes: int,
    max_per_athlete: int,
    threshold_ring: int,
    partial: bool = False,
    thresholds: LayerThresholds | None = None,
    metro: WindowData | None = None,
) -> WindowData:
    """The ``WindowData`` of ``parts``: heat thresholded (``publishable_heat``), Metro
    records left per athlete, renumbered as the store's reading order numbers them.
    ``threshold_ring`` and ``partial``: see ``publishable_heat``. ``thresholds`` (unused
    with ``partial``): decides each layer's heat instead, reusing the last build's where
    it can, and keeps the states for the next (``threshold_cache``). ``metro``: what
    ``metro_window(parts, first, last)`` already gave, if it was called."""

    def heat_of(layer: str, per_athlete: np.ndarray | SplitRows) -> LayerHeat:
        if thresholds is not None and not partial:
            return thresholds(
                layer, per_athlete, min_athletes, max_per_athlete, threshold_ring=threshold_ring
            )
        return publishable_heat(
            layer, whole(per_athlete), min_athletes, max_per_athlete,
            threshold_ring=threshold_ring, partial=partial,
        )  # fmt: skip

    heat_out: dict[str, LayerHeat] = {}
    for layer in LAYERS:
        # A threshold counts distinct athletes: any one-to-one numbering decides the
        # same (and heat sums integers), so the heat rows go as they are, not copied.
        heat_out[layer] = heat_of(layer, heat_rows(parts.arrays, f"heat/{layer}"))
    for name in parts.arrays:
        if name.startswith("extra/"):
            heat = heat_of(name.removeprefix("extra/"), heat_rows(parts.arrays, name))
            if len(heat.cells):
                heat_out[heat.layer] = heat
    return replace(
        metro if metro is not None else metro_window(parts, first, last),
        heat=heat_out,
        counts={f"cells_{k}": len(v.cells) for k, v in heat_out.items()},
    )


def metro_window(parts: WindowParts, first: str, last: str) -> WindowData:
    """The ``WindowData`` of ``parts`` without heat (``heat`` is empty): all the Metro
    writer reads, ready before any threshold is computed."""
    row_index = (np.cumsum(parts.has_rows) - 1).astype(np.int32)
    metro: dict[str, dict[str, np.ndarray]] = {"edges": {}, "hexagons": {}, "od": {}}
    for layer in LAYERS:
        for kind, table in metro.items():
            table[layer] = _remap(parts.arrays[f"{kind}/{layer}"].copy(), row_index)
    return WindowData(
        month=last,
        first_month=first,
        heat={},
        edges=metro["edges"],
        hexagons=metro["hexagons"],
        od=metro["od"],
        athletes=int(parts.has_rows.sum()),
        activities=int(parts.activities.sum()),
    )


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
    parts = read_parts(view, first, last, extra_layers=(sport_layers, night))
    return assemble(
        parts, first, last, min_athletes=min_athletes, max_per_athlete=max_per_athlete,
        threshold_ring=threshold_ring, partial=partial,
    )  # fmt: skip


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
