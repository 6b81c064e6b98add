"""Metro counts per OSM street edge: ``metro/streets.csv``, ``streets.geojson``,
``streets_hourly.csv`` and ``streets_monthly.csv``.

Written only when the config names a ``base_map``. Each row is one street edge (the part
of an OSM way between two intersections) and layer, with the same count columns as
``edges.csv``; *forward* is the way's digitised direction. The H3 files stay as they are
(they cover tracks off the street network too), so both can be compared.

The records come straight from the activities' stored street sequences (read here,
after the snapshot has applied every "hide more" setting): a trip counts once per edge
and direction, at the local hour it entered the edge, in the local month the activity started (as the
H3 edges' months), a ride or an e-bike ride by its sport. Thresholds, rounding and the
count columns are those of ``metro_tables`` and ``metro``, so the privacy rules are the
same code as for the H3 edges.
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import sqlite_utils

from heatmetro.core.config import Config
from heatmetro.core.months import month_index, month_of_index, window_months
from heatmetro.core.sports import is_ebike
from heatmetro.site_builder.metro_columns import HOURLY_WIDE_COLUMNS
from heatmetro.site_builder.metro_plan import OTHER, EdgePlan, other_records
from heatmetro.site_builder.metro_tables import (
    DirectionSums,
    Publication,
    bearing_deg,
    by_hour,
    direction_sums,
)
from heatmetro.state.records import EDGE_DTYPE, EDGE_KEY, LAYERS, group_sum, with_athlete
from heatmetro.state.street_network import ATTRIBUTION, LICENSE, StreetNetwork, network_for, project
from heatmetro.state.street_ops import STREET_DTYPE

FILES = {
    "streets.csv": "Per OSM street edge (a way between two intersections) and layer: trips and "
    "people per direction (base map)",
    "streets.geojson": "streets.csv with each street edge's own polyline, for GIS",
    "streets_hourly.csv": "streets.csv by local hour and weekday/weekend",
    "streets_hourly_wide.csv": "Trips and people per direction and local hour, one row per "
    "street edge and layer",
    "streets_monthly.csv": "streets.csv per local month of the window",
}
# As the H3 edges of the window (``load``): per athlete, month, edge key and ride flag.
_GROUP = ("athlete", "month", *EDGE_KEY, "ride")
_SUMS = ("trips", "speed_sum", "speed_n")
_EXTRA = [("month", "<u2"), ("ride", "u1")]


@dataclass(frozen=True)
class Column:
    name: str
    description: str


@dataclass
class StreetWindow:
    """Per-athlete street records of the window, by layer (``a`` = edge index, ``b`` = 0);
    ``athletes``: the athletes' ids in the order of their index (a cluster snapshot
    merges the windows of its processes by them)."""

    net: StreetNetwork
    records: dict[str, np.ndarray]
    tables: list[tuple[str, list[Any]]] = field(default_factory=list)
    athletes: list[str] = field(default_factory=list)


_WINDOW_SQL = (
    "SELECT a.athlete_id, a.activity_id, a.layer, a.start_s, a.utc_offset_s, a.commute, "
    "a.max_speed_ms, a.sport_type, a.month, a.streets FROM activities a "
    "LEFT JOIN athletes s ON s.athlete_id = a.athlete_id "
    "WHERE a.status = 'active' AND a.month BETWEEN ? AND ? AND a.streets IS NOT NULL "
    "AND coalesce(s.opt_out, 0) = 0 ORDER BY a.athlete_id, a.activity_id"
)


def load_streets(
    dbs: sqlite_utils.Database | Sequence[sqlite_utils.Database], month: str, config: Config
) -> StreetWindow | None:
    """The window's street records, or None without a base map.

    ``dbs`` is the store, or all shards of it: rows are merged in (athlete, activity)
    order, so the result does not depend on how athletes are spread over shards.
    """
    net = network_for(config)
    if net is None:
        return None
    first, last = window_months(month)
    shards = [dbs] if isinstance(dbs, sqlite_utils.Database) else list(dbs)
    rows = heapq.merge(*(db.execute(_WINDOW_SQL, (first, last)) for db in shards))
    index: dict[str, int] = {}
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in LAYERS}
    for athlete_id, _, layer, start_s, offset, commute, vmax, sport, month, blob in rows:
        recs = activity_street_records(
            net, np.frombuffer(blob, STREET_DTYPE), start_s + offset, bool(commute), vmax,
            ebike=is_ebike(sport or ""),
        )  # fmt: skip
        if not len(recs):
            continue
        recs = _with_month_and_ride(
            with_athlete(recs, index.setdefault(athlete_id, len(index))),
            month_index(month),
            ride=layer == "ride",
        )
        parts["all"].append(recs)
        if layer in parts and layer != "all":
            parts[layer].append(recs)
    records = {
        layer: group_sum(np.concatenate(p), _GROUP, _SUMS) for layer, p in parts.items() if p
    }
    return StreetWindow(net, records, athletes=list(index))


def _with_month_and_ride(recs: np.ndarray, month: int, *, ride: bool) -> np.ndarray:
    """``recs`` with the activity's local month (index) and whether it is a ride."""
    names = recs.dtype.names or ()
    out = np.zeros(len(recs), np.dtype([*[(n, recs.dtype[n]) for n in names], *_EXTRA]))
    for n in names:
        out[n] = recs[n]
    out["month"], out["ride"] = month, ride
    return out


def merge_street_windows(net: StreetNetwork, parts: Sequence[StreetWindow]) -> StreetWindow:
    """The street window of a store whose athletes are split over ``parts`` (each athlete
    in one part, as over a cluster's shards): what ``load_streets`` gives for the whole
    store, index for index and bit for bit. Indexes follow athlete ids in sorted order,
    as ``load_streets`` reads them; an athlete's sums come whole from their own part."""
    everyone = sorted(a for part in parts for a in part.athletes)
    rank = {a: i for i, a in enumerate(everyone)}
    pieces: dict[str, list[np.ndarray]] = {}
    for part in parts:
        remap = np.array([rank[a] for a in part.athletes], dtype=np.int64)
        for layer, recs in part.records.items():
            recs = recs.copy()
            recs["athlete"] = remap[recs["athlete"]]
            pieces.setdefault(layer, []).append(recs)
    records = {
        layer: group_sum(np.concatenate(pieces[layer]), _GROUP, _SUMS)
        for layer in LAYERS
        if layer in pieces
    }
    return StreetWindow(net, records, athletes=everyone)


def activity_street_records(
    net: StreetNetwork,
    streets: np.ndarray,
    local_start_s: int,
    commute: bool,
    vmax: float,
    *,
    ebike: bool = False,
) -> np.ndarray:
    """One activity's edge crossings as ``EDGE_DTYPE`` rows (``a`` = edge index).

    A trip counts once per edge and direction (its first pass), like the H3 edges.
    """
    idx = net.index_of(streets["edge"])
    streets, idx = streets[idx >= 0], idx[idx >= 0]  # edges gone from a newer extract
    pair = idx.astype(np.int64) * 2 + streets["fwd"]
    _, first = np.unique(pair, return_index=True)
    first = np.sort(first)
    s, e = streets[first], idx[first]
    out = np.zeros(len(s), EDGE_DTYPE)
    local = local_start_s + np.floor(s["t"].astype(np.float64)).astype(np.int64)
    v = s["v"].astype(np.float64)
    ok = np.isfinite(v) & (v <= vmax)
    out["a"], out["b"], out["fwd"] = e, 0, s["fwd"]
    out["hour"] = (local // 3600) % 24
    out["weekend"] = ((local // 86400) + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    out["commute"] = commute
    out["ebike"] = ebike
    out["trips"] = 1
    out["speed_sum"] = np.where(ok, v, 0.0)
    out["speed_n"] = ok
    return out


def _street_columns(direction_columns: list[Any]) -> list[Column]:
    return [
        Column("edge_uid", "Street edge: '{OSM way id}:{first node id}-{last node id}'"),
        Column("osm_reference_id", "The OpenStreetMap way the edge belongs to"),
        Column("street_name", "The way's name tag (empty when unnamed)"),
        Column(
            "nearest_street",
            "For a way with no name of its own (a sidewalk, crossing, cycle track or path, "
            f"usually mapped unnamed): the name of the named street within {NEAREST_M:.0f} m "
            "of most of it, if there is one; empty for named ways",
        ),
        Column("highway", "The way's highway tag (street class: primary, residential, cycleway ...)"),
        Column("footway", "The way's footway tag (sidewalk, crossing ..., or empty)"),
        Column(
            "bicycle",
            "The way's bicycle tag (yes, designated, no, use_sidepath: bikes ride the cycle "
            "track beside it ..., or empty)",
        ),
        Column("oneway", "The way's oneway tag as mapped (yes, -1, no, or empty)"),
        Column("layer", "Activity layer: all, ride, run (run, walk, hike), water or winter"),
        *(
            Column(c.name, c.description.replace("(a to b)", "(the way's digitised direction)")
                   .replace("(b to a)", "(against the way's direction)"))
            for c in direction_columns
        ),
        Column(
            "forward_bearing_deg",
            "Compass direction of forward travel, from the edge's first node to its last "
            "(0 = north, 90 = east)",
        ),
        Column("length_m", "Length of the edge's polyline in metres (1 decimal)"),
    ]  # fmt: skip


def write_streets(
    sw: StreetWindow, pub: Publication, metro_dir: Path, columns: Any, values: Any
) -> dict[str, int]:
    """Write the street files; ``columns(with_bands=)`` / ``values(table)`` are the
    count columns of ``metro`` (so the two sets of files cannot drift apart)."""
    main_cols = _street_columns(columns(with_bands=True))
    after_layer = [c.name for c in main_cols].index("layer") + 1
    hourly_cols = _street_columns(columns(with_bands=False))
    hourly_cols[after_layer:after_layer] = [
        Column("hour", "Local hour the trip entered the edge, 0-23"),
        Column("day_type", "weekday (Monday-Friday) or weekend, local time"),
    ]
    monthly_cols = _street_columns(columns(with_bands=True))
    monthly_cols[after_layer:after_layer] = [
        Column("month", "Local month of the activities, YYYY-MM")
    ]
    wide_cols = main_cols[:after_layer] + HOURLY_WIDE_COLUMNS[2:] + main_cols[-2:]
    sw.tables = [
        ("streets.csv and streets.geojson", main_cols),
        ("streets_hourly.csv", hourly_cols),
        ("streets_monthly.csv", monthly_cols),
        ("streets_hourly_wide.csv", wide_cols),
    ]
    net = sw.net
    n = 0
    names = [c.name for c in main_cols]
    plan = street_plan(sw, pub)
    with (
        (metro_dir / "streets.csv").open("w", encoding="utf-8", newline="") as fc,
        (metro_dir / "streets.geojson").open("wb") as fg,
    ):
        table = csv.writer(fc, lineterminator="\n")
        table.writerow(names)
        head = {"attribution": ATTRIBUTION, "license": LICENSE, "type": "FeatureCollection"}
        # orjson, as ``metro_files.write_geojson``: UTF-8, compact, properties in CSV order.
        fg.write(orjson.dumps(head, option=orjson.OPT_SORT_KEYS)[:-1] + b',"features":[')
        for row, edge in _rows(sw, pub, values, plan, by=()):
            table.writerow(row)
            lat, lng = net.polyline(edge)
            coords = np.round(np.column_stack([lng, lat]), 7).tolist()
            feature = {
                "geometry": {"coordinates": coords, "type": "LineString"},
                "properties": dict(zip(names, row, strict=True)),
                "type": "Feature",
            }
            fg.write(
                (b"\n" if n == 0 else b",\n") + orjson.dumps(feature)  # fields in CSV order
            )
            n += 1
        fg.write(b"\n]}\n")
    counts = {"streets.csv": n, "streets.geojson": n}
    for name, cols, by in (
        ("streets_hourly.csv", hourly_cols, ("hour", "weekend")),
        ("streets_monthly.csv", monthly_cols, ("month",)),
    ):
        counts[name] = 0
        with (metro_dir / name).open("w", encoding="utf-8", newline="") as fh:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow([c.name for c in cols])
            for row, _ in _rows(sw, pub, values, plan, by=by):
                out.writerow(row)
                counts[name] += 1
    with (metro_dir / "streets_hourly_wide.csv").open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow([c.name for c in wide_cols])
        wide = list(_wide_rows(sw, pub, plan))
        out.writerows(wide)
        counts["streets_hourly_wide.csv"] = len(wide)
    return counts


def _wide_rows(sw: StreetWindow, pub: Publication, plan: EdgePlan) -> Iterator[list[Any]]:
    """As ``metro_rows.hourly_wide_rows`` for street edges: per edge and layer, each
    direction and local hour its own published count (all days), in edge_uid order."""
    net = sw.net
    nearest = nearest_street_names(net)
    for layer in [k for k in LAYERS if k in sw.records]:
        t = plan.publish("hour", layer, pub)
        if not len(t):
            continue
        wide, first = by_hour(t, "a")
        edges = t.keys["a"][first].astype(np.int64)
        bearing = _bearings(net, edges)
        flat = wide.reshape(len(first), -1)  # direction, hour, trips|people: the columns
        for r in np.argsort(net.uid[edges], kind="stable").tolist():
            e = int(edges[r])
            counts = (None if v < 0 else v for v in flat[r].tolist())
            yield [*_lead(net, nearest, e, layer), *counts, *_tail(net, bearing[r], e)]


def _rows(
    sw: StreetWindow, pub: Publication, values: Any, plan: EdgePlan, *, by: tuple[str, ...]
) -> Iterator[tuple[list[Any], int]]:
    """Rows per street edge and layer, and per ``by`` (``()``, hour and weekend, or
    month), in edge_uid order (text: independent of the extract's numbering)."""
    net = sw.net
    layers = [k for k in LAYERS if k in sw.records]
    hourly = by == ("hour", "weekend")
    nearest = nearest_street_names(net)
    for layer in layers:
        table = {(): "edge", ("month",): "month", ("hour", "weekend"): "hour_day"}[by]
        t = plan.publish(table, layer, pub)
        edges = t.keys["a"].astype(np.int64)
        bearing = _bearings(net, edges)
        order = np.lexsort((*(t.keys[k] for k in reversed(by)), net.uid[edges]))
        cols = [list(c) for c in values(t)]
        for r in order.tolist():
            e = int(edges[r])
            lead = _lead(net, nearest, e, layer)
            if hourly:
                day = "weekend" if t.keys["weekend"][r] else "weekday"
                lead += [int(t.keys["hour"][r]), day]
            elif by:
                lead.append(month_of_index(int(t.keys["month"][r])))
            yield [*lead, *(c[r] for c in cols), *_tail(net, bearing[r], e)], e


def street_plan(sw: StreetWindow, pub: Publication) -> EdgePlan:
    """``metro_plan`` over the street tables of every layer (each key counted once)."""

    records = {k: sw.records[k] for k in LAYERS if k in sw.records}
    other = other_records(records)
    if other is not None:
        records[OTHER] = other

    @cache
    def sums_of(layer: str, key: tuple[str, ...], with_bands: bool) -> DirectionSums:
        return direction_sums(records[layer], key, pub.max_trips, with_bands=with_bands)

    return EdgePlan(sums_of, list(records), ("a",), pub.min_athletes)


def _lead(net: StreetNetwork, nearest: list[str], e: int, layer: str) -> list[Any]:
    """The street's own columns of a row, up to ``layer`` (``_street_columns``' order)."""
    return [str(net.uid[e]), int(net.way_id[e]), str(net.name[e]), nearest[e],
            str(net.highway[e]), str(net.footway[e]), str(net.bicycle[e]),
            str(net.oneway[e]), layer]  # fmt: skip


def _tail(net: StreetNetwork, bearing: float, e: int) -> list[float]:
    """The last two columns: ``forward_bearing_deg`` and ``length_m``."""
    return [round(float(bearing), 1), round(float(net.length_m[e]), 1)]


def _bearings(net: StreetNetwork, edges: np.ndarray) -> np.ndarray:
    """Compass bearing of each edge, first node to last."""
    first, last = net.offsets[edges], net.offsets[edges + 1] - 1
    return np.asarray(bearing_deg(net.lat[first], net.lng[first], net.lat[last], net.lng[last]))


# A sidewalk or cycle track runs a few metres beside its street: 20 m takes in a wide
# street's far side, and not the next street over (city blocks are wider than 40 m).
NEAREST_M = 20.0
_SAMPLE_M = 5.0  # named ways are sampled this often for the search


@lru_cache(maxsize=4)
def nearest_street_names(net: StreetNetwork) -> list[str]:
    """Per edge, for an unnamed way: the name of the named way nearest to at least two
    of three points on it (a quarter, half and three quarters along), each within
    ``NEAREST_M``; "" otherwise, and for named ways (their own name says it). A planner
    can then find the sidewalks and cycle tracks of a street without a spatial join."""
    from scipy.spatial import cKDTree

    out = [""] * len(net)
    named = np.flatnonzero(net.name != "")
    unnamed = np.flatnonzero(net.name == "")
    if not len(named) or not len(unnamed):
        return out
    lat0 = float(np.mean(net.lat))
    x, y = project(net.lat, net.lng, lat0)
    # Named ways as points every _SAMPLE_M along their segments, each knowing its edge.
    vertex_edge = np.repeat(np.arange(len(net)), np.diff(net.offsets))
    is_start = np.ones(len(vertex_edge), dtype=bool)
    is_start[net.offsets[1:] - 1] = False  # an edge's last vertex starts no segment of it
    seg = np.flatnonzero(is_start & (net.name[vertex_edge] != ""))
    seg_edge = vertex_edge[seg]
    dx, dy = x[seg + 1] - x[seg], y[seg + 1] - y[seg]
    steps = np.maximum(np.ceil(np.hypot(dx, dy) / _SAMPLE_M).astype(np.int64), 1)
    which = np.repeat(np.arange(len(seg)), steps)
    f = (np.arange(len(which)) - np.repeat(np.cumsum(steps) - steps, steps)) / steps[which]
    tree = cKDTree(np.column_stack([x[seg][which] + f * dx[which], y[seg][which] + f * dy[which]]))
    point_edge = seg_edge[which]
    # Three points along each unnamed edge.
    qx, qy = [], []
    for e in unnamed.tolist():
        a, b = int(net.offsets[e]), int(net.offsets[e + 1])
        ex, ey = x[a:b], y[a:b]
        along = np.concatenate(([0.0], np.cumsum(np.hypot(np.diff(ex), np.diff(ey)))))
        at = along[-1] * np.array([0.25, 0.5, 0.75])
        qx.append(np.interp(at, along, ex))
        qy.append(np.interp(at, along, ey))
    dist, idx = tree.query(np.column_stack([np.concatenate(qx), np.concatenate(qy)]), k=1)
    near = np.where(
        dist <= NEAREST_M, net.name[point_edge[np.minimum(idx, len(point_edge) - 1)]], ""
    )
    for i, e in enumerate(unnamed.tolist()):
        one, two, three = (str(v) for v in near[3 * i : 3 * i + 3])
        out[e] = two if two and two in (one, three) else one if one and one == three else ""
    return out
