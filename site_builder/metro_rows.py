"""Published Metro tables as rows of values (and a geometry), ready for any writer.

``heatmetro.site_builder.metro_tables`` counts, suppresses and rounds; this module turns
its tables into rows in the column order of ``metro_columns`` and attaches each row's
geometry (GeoJSON order: lng, lat) for the GeoJSON and GeoPackage writers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial
from itertools import chain

import h3
import numpy as np

from heatmetro.core.cells import cell_centres
from heatmetro.core.months import month_index, month_of_index
from heatmetro.site_builder.metro_cache import MetroCache, edge_hashes
from heatmetro.site_builder.metro_columns import HOURS
from heatmetro.site_builder.metro_plan import OTHER, CellPlan, EdgePlan, other_records
from heatmetro.site_builder.metro_plan_cache import PLAN_CACHE, PlanCache
from heatmetro.site_builder.metro_tables import (
    BANDS,
    DirectionSums,
    DirectionTable,
    Publication,
    bearing_deg,
    by_hour,
    cell_table,
    direction_sums,
)
from heatmetro.site_builder.mix64 import mix64
from heatmetro.site_builder.window import WindowData
from heatmetro.state.records import LAYERS

Value = int | float | str | None
Coords = list[tuple[float, float]]
Column = Sequence[Value] | np.ndarray


@dataclass(frozen=True)
class Rows:
    """A published table: rows of values and, for the GIS files, one geometry per row.

    Given as rows (``given``) or, for the edge tables, as ``columns``: lists, or arrays
    of counts (``int64``, a negative one empty) and decimals (``float64``, ``nan``
    empty). The GeoPackage writer takes the columns as they are; the rows are made from
    them when asked for (``values``), or only some (``take``): a rebuild formats the
    rows of the recounted edges alone (``metro_text_cache``).
    """

    given: list[tuple[Value, ...]] | None
    geometry: list[Coords] | None = None
    columns: list[Column] | None = None
    #: Of an edge table: per row its edge (``metro_cache.edge_hashes``) and its edge and
    #: layer together (``metro_text_cache`` keeps the rows' text by them).
    edge: np.ndarray | None = None
    place: np.ndarray | None = None

    @cached_property
    def values(self) -> list[tuple[Value, ...]]:
        if self.given is not None:
            return self.given
        assert self.columns is not None
        return list(zip(*(values_of(c) for c in self.columns), strict=True))

    def take(self, at: np.ndarray) -> list[tuple[Value, ...]]:
        """The rows ``at``."""
        if self.given is not None or self.columns is None:
            values = self.values
            return [values[i] for i in at.tolist()]
        return list(zip(*(values_of(c, at) for c in self.columns), strict=True))

    def __len__(self) -> int:
        if self.given is not None or not self.columns:
            return len(self.values)
        return len(self.columns[0])


def values_of(column: Column, at: np.ndarray | None = None) -> list[Value]:
    """A column's values (those ``at``): an array's empty ones as ``None``."""
    if not isinstance(column, np.ndarray):
        return list(column) if at is None else [column[i] for i in at.tolist()]
    part = (column if at is None else column[at]).tolist()
    if column.dtype.kind == "f":
        return [None if v != v else v for v in part]
    return [None if v < 0 else v for v in part]


def _layers(by_layer: dict[str, np.ndarray]) -> list[str]:
    """Layers in publication order: the known ones first, then any others by name."""
    return [k for k in LAYERS if k in by_layer] + sorted(set(by_layer) - set(LAYERS))


def _counts(arr: np.ndarray) -> list[Value]:
    return [None if v < 0 else v for v in arr.tolist()]


def _decimals(arr: np.ndarray, places: int = 1) -> list[Value]:
    return values_of(decimal_array(arr, places))


def decimal_array(arr: np.ndarray, places: int = 1) -> np.ndarray:
    """Each value as ``round(v, places)`` gives it (``nan`` kept).

    Decimal-rounded so the CSV, GeoJSON and GeoPackage print the very same number:
    ``round`` is correctly rounded, the float of ``f"{v:.1f}"``, where ``np.round``
    scales first (0.35 -> 0.4, where the text says 0.3). But a value far from a half
    step rounds alike either way (the scaling errs by an ulp), and ``k / 10**places`` is
    the float nearest the decimal, as ``round`` returns it: only values near a half step
    go through ``round``.
    """
    values = np.asarray(arr, dtype=np.float64)
    scale = 10.0**places
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = values * scale
        near = np.abs(scaled - np.floor(scaled) - 0.5) <= 1e-9 * np.maximum(1.0, np.abs(scaled))
        near |= np.isfinite(values) & ~(np.abs(scaled) < 2.0**50)  # huge: ``round`` decides
    out = np.rint(scaled) / scale
    if near.any():
        out[near] = [round(v, places) for v in values[near].tolist()]
    return out


def _ids(cells: np.ndarray) -> list[str]:
    # An H3 index's string is its lowercase hex (``h3.int_to_str``), without the calls.
    return [f"{c:x}" for c in cells.tolist()]


def _edge_ids(a: np.ndarray, b: np.ndarray) -> list[str]:
    return [f"{x:x}-{y:x}" for x, y in zip(a.tolist(), b.tolist(), strict=True)]


def _months(keys: dict[str, np.ndarray]) -> list[Value]:
    return [month_of_index(m) for m in keys["month"].tolist()]


def _with_month(arr: np.ndarray, default: int) -> np.ndarray:
    """Records as ``direction_table`` / ``cell_table`` need them for a monthly key."""
    if "month" in (arr.dtype.names or ()):
        return arr
    names = arr.dtype.names or ()
    out = np.zeros(len(arr), np.dtype([*[(n, arr.dtype[n]) for n in names], ("month", "<u2")]))
    for n in names:
        out[n] = arr[n]
    out["month"] = default
    return out


def direction_values(t: DirectionTable) -> list[list[Value]]:
    """Columns of a ``DirectionTable`` in ``direction_columns`` order."""
    return [values_of(c) for c in direction_arrays(t)]


def direction_arrays(t: DirectionTable) -> list[np.ndarray]:
    """``direction_values`` as arrays (``Rows.columns``)."""
    counts = [t.trips[:, d] for d in (0, 1)] + [t.people[:, d] for d in (0, 1)] + [t.total]
    for table in (t.commute, t.leisure, t.rides, t.ebike_rides):
        counts += [table[:, d] for d in (0, 1)]
    if t.bands is not None:
        counts += [t.bands[:, d, i] for i in range(len(BANDS)) for d in (0, 1)]
    cols = [c.astype(np.int64) for c in counts]
    cols += [decimal_array(t.speed_kmh[:, d]) for d in (0, 1)]
    cols += [decimal_array(t.speed_ms[:, d], 2) for d in (0, 1)]
    return cols


def _sums(
    layer: str,
    arr: np.ndarray,
    key: tuple[str, ...],
    pub: Publication,
    cache: MetroCache | None,
    *,
    with_bands: bool,
) -> DirectionSums:
    """``direction_sums``, from ``cache`` if there is one (recounting only changed edges)."""
    if cache is None:
        return direction_sums(arr, key, pub.max_trips, with_bands=with_bands)
    return cache.sums(layer, arr, key, with_bands=with_bands)


def edge_plan(window: WindowData, pub: Publication, cache: MetroCache | None = None) -> EdgePlan:
    """Which counts of the edge tables to hide, over every table and layer at once
    (``metro_plan``); the four edge tables are published from one plan."""
    default = _default_month(window)
    arrs = {layer: _with_month(window.edges[layer], default) for layer in _layers(window.edges)}
    other = other_records(arrs)
    if other is not None:
        arrs[OTHER] = other

    def sums_of(layer: str, key: tuple[str, ...], bands: bool) -> DirectionSums:
        return _sums(layer, arrs[layer], key, pub, cache, with_bands=bands)

    plans = None
    if cache is not None:  # beside the Metro cache: what the last build's plan hid per edge
        plans = PlanCache(
            cache.path.with_name(PLAN_CACHE), pub.min_athletes, cache, reuse=cache.reuse
        )
    return EdgePlan(sums_of, list(arrs), ("a", "b"), pub.min_athletes, plans)


def _lines(a: np.ndarray, b: np.ndarray, *, coords: bool = True) -> tuple[list[Coords], np.ndarray]:
    """Lines from ``a``'s centre to ``b``'s (6 decimals; none without ``coords``) and the
    bearing a -> b."""
    lat_a, lng_a = cell_centres(a)
    lat_b, lng_b = cell_centres(b)
    bearing = bearing_deg(lat_a, lng_a, lat_b, lng_b)
    if not coords:
        return [], bearing
    xy = np.round(np.stack([lng_a, lat_a, lng_b, lat_b], axis=1), 6).tolist()
    return [[(x1, y1), (x2, y2)] for x1, y1, x2, y2 in xy], bearing


def same_records(
    parts: dict[str, np.ndarray], memo: dict[tuple[str, str], bool]
) -> Callable[[str, str], bool]:
    """Whether two layers of ``parts`` hold the very same records. ``memo`` keeps each
    answer: the four edge tables ask about the same pairs of layers (a comparison of two
    layers' records was ~2% of a rebuild's Metro writer, four times over)."""

    def same(a: str, b: str) -> bool:
        if (a, b) not in memo:
            x, y = parts[a], parts[b]
            memo[(a, b)] = x is y or (
                x.dtype == y.dtype and x.shape == y.shape and bool(np.array_equal(x, y))
            )
        return memo[(a, b)]

    return same


def _twin(
    layer: str,
    done: dict[str, _Built],
    pub: Publication,
    same: Callable[[str, str], bool],
    alike: Callable[[str, str], bool],
) -> _Built | None:
    """What an earlier layer with the very same records (``same``) built (a sport layer
    that holds every activity repeats ``all``: ValleyBike's ``ride``); never with
    differential privacy, where each layer's counts draw their own noise."""
    if pub.noise is not None:
        return None
    for other, built in done.items():
        if same(other, layer) and alike(other, layer):
            return built
    return None


# Per layer: the columns before the layer column, those after it, the geometry and each
# row's edge (``edge_hashes``).
_Built = tuple[list[Column], list[Column], list[Coords], np.ndarray]
_NONE: _Built = ([[]], [], [], np.zeros(0, np.uint64))


def _edge_layers(
    window: WindowData,
    pub: Publication,
    build: Callable[[str], _Built],
    plan: EdgePlan,
    table: str,
) -> Rows:
    """Rows (and geometry, columns, edges) of every edge layer: ``build(layer)``'s
    columns with the layer's name between the leading and trailing ones. A layer that
    ``plan`` hides alike in ``table`` and whose records are an earlier layer's takes
    that layer's rows."""
    same = same_records(window.edges, plan.memo)
    alike = partial(plan.alike, table)
    geometry: list[Coords] = []
    done: dict[str, _Built] = {}
    parts: list[list[Column]] = []
    edges, places = [np.zeros(0, np.uint64)], [np.zeros(0, np.uint64)]
    for layer in _layers(window.edges):
        built = _twin(layer, done, pub, same, alike) or build(layer)
        done[layer] = built
        lead, tail, lines, edge = built
        n = len(lead[0]) if lead else 0
        geometry += lines
        if n:
            parts.append([*lead, [layer] * n, *tail])
            tag = int.from_bytes(hashlib.sha256(layer.encode()).digest()[:8], "little")
            edges.append(edge)
            with np.errstate(over="ignore"):
                places.append(mix64(edge ^ np.uint64(tag)))
    edge_all, place = np.concatenate(edges), np.concatenate(places)
    if not parts:
        return Rows([], geometry, None, edge_all, place)
    columns = [_joined(column) for column in zip(*parts, strict=True)]
    return Rows(None, geometry, columns, edge_all, place)


def _joined(pieces: Sequence[Column]) -> Column:
    """One column of several layers' rows: an array if every piece is one."""
    arrays = [p for p in pieces if isinstance(p, np.ndarray)]
    if len(arrays) == len(pieces):
        return np.concatenate(arrays)
    return list(chain.from_iterable(values_of(p) for p in pieces))


def edge_rows(
    window: WindowData,
    pub: Publication,
    *,
    monthly: bool = False,
    cache: MetroCache | None = None,
    plan: EdgePlan | None = None,
) -> Rows:
    """``edges.csv`` with each edge's line (or ``edges_monthly.csv``, no GIS file: none)."""
    plan = plan or edge_plan(window, pub, cache)
    table = "month" if monthly else "edge"

    def build(layer: str) -> _Built:
        t = plan.publish(table, layer, pub)
        if not len(t):
            return _NONE
        a, b = t.keys["a"], t.keys["b"]
        lines, bearing = _lines(a, b, coords=not monthly)
        tail: list[Column] = [_months(t.keys)] if monthly else []
        tail += [*direction_arrays(t), decimal_array(bearing)]
        return [_edge_ids(a, b)], tail, lines, edge_hashes(a, b)

    rows = _edge_layers(window, pub, build, plan, table)
    return replace(rows, geometry=None) if monthly else rows


def hourly_rows(
    window: WindowData,
    pub: Publication,
    cache: MetroCache | None = None,
    plan: EdgePlan | None = None,
) -> Rows:
    plan = plan or edge_plan(window, pub, cache)

    def build(layer: str) -> _Built:
        t = plan.publish("hour_day", layer, pub)
        day = ["weekend" if w else "weekday" for w in t.keys["weekend"].tolist()]
        tail: list[Column] = [t.keys["hour"].tolist(), day, *direction_arrays(t)]
        a, b = t.keys["a"], t.keys["b"]
        return [_edge_ids(a, b)], tail, [], edge_hashes(a, b)

    return replace(_edge_layers(window, pub, build, plan, "hour_day"), geometry=None)


def hourly_wide_rows(
    window: WindowData,
    pub: Publication,
    cache: MetroCache | None = None,
    plan: EdgePlan | None = None,
) -> Rows:
    """One row per edge and layer: trips and people per direction and local hour.

    Each hour and direction is its own published count (suppressed below
    ``min_athletes`` people), exactly the hour's totals over weekdays and weekends.
    """

    plan = plan or edge_plan(window, pub, cache)

    def build(layer: str) -> _Built:
        t = plan.publish("hour", layer, pub)
        if not len(t):
            return _NONE
        wide, first = by_hour(t, "a", "b")
        a, b = t.keys["a"][first], t.keys["b"][first]
        tail: list[Column] = [
            wide[:, d, h, w].astype(np.int64) for d in (0, 1) for h in HOURS for w in (0, 1)
        ]
        return [_edge_ids(a, b)], tail, [], edge_hashes(a, b)

    return replace(_edge_layers(window, pub, build, plan, "hour"), geometry=None)


def cell_plan(
    window: WindowData, pub: Publication, parts: dict[str, np.ndarray], key: tuple[str, ...]
) -> CellPlan:
    """What the hexagon (or OD) tables hide, over both tables and every layer at once."""
    default = _default_month(window)
    arrs = {layer: _with_month(parts[layer], default) for layer in _layers(parts)}
    return CellPlan(arrs, key, pub.max_trips, pub.min_athletes)


def hexagon_rows(
    window: WindowData, pub: Publication, *, monthly: bool = False, plan: CellPlan | None = None
) -> Rows:
    key = ("cell", "month") if monthly else ("cell",)
    values: list[tuple[Value, ...]] = []
    geometry: list[Coords] = []
    default = _default_month(window)
    plan = plan or cell_plan(window, pub, window.hexagons, ("cell",))
    for layer in _layers(window.hexagons):
        hide = plan.hide("month" if monthly else "total", layer)
        t = cell_table(_with_month(window.hexagons[layer], default), key, pub, hide=hide)
        cols: list[Sequence[Value]] = [_ids(t.keys["cell"]), [layer] * len(t)]
        if monthly:
            cols.append(_months(t.keys))
        cols += [_counts(t.trips), _counts(t.people)]
        cols += [_decimals(t.speed_kmh), _decimals(t.speed_ms, 2)]
        values += zip(*cols, strict=True)
        if not monthly:
            geometry += [_hexagon(c) for c in t.keys["cell"].tolist()]
    return Rows(values, None if monthly else geometry)


def od_rows(
    window: WindowData, pub: Publication, *, monthly: bool = False, plan: CellPlan | None = None
) -> Rows:
    key = ("o", "d", "month") if monthly else ("o", "d")
    values: list[tuple[Value, ...]] = []
    geometry: list[Coords] = []
    default = _default_month(window)
    plan = plan or cell_plan(window, pub, window.od, ("o", "d"))
    for layer in _layers(window.od):
        hide = plan.hide("month" if monthly else "total", layer)
        t = cell_table(_with_month(window.od[layer], default), key, pub, hide=hide)
        cols: list[Sequence[Value]] = [_ids(t.keys["o"]), _ids(t.keys["d"]), [layer] * len(t)]
        if monthly:
            cols.append(_months(t.keys))
        cols += [_counts(t.trips), _counts(t.people)]
        values += zip(*cols, strict=True)
        if not monthly and len(t):
            geometry += _lines(t.keys["o"], t.keys["d"])[0]
    return Rows(values, None if monthly else geometry)


def _hexagon(cell: int) -> Coords:
    ring = [(round(lng, 6), round(lat, 6)) for lat, lng in h3.cell_to_boundary(h3.int_to_str(cell))]
    return [*ring, ring[0]]


def _default_month(window: WindowData) -> int:
    return month_index(window.month)
