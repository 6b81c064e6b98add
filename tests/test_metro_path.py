"""The Metro path (``heatmetro.flows.metro_path``): hysteresis, zones, returns, hide-more.

Properties over generated tracks and zones: no Metro cell overlaps a zone, consecutive
cells are neighbours, every crossing joins neighbours. Examples: a track wobbling along
a border adds nothing, a genuine return counts, and a new zone cuts the stored Metro path.
"""

from __future__ import annotations

import math

import h3.api.basic_int as h3
import numpy as np
import orjson
import pytest
import sqlite_utils
from hypothesis import given

from heatmetro.core.config import Config
from heatmetro.core.contract import parse_event
from heatmetro.flows.metro_path import CROSSING_MARGIN_M, depth_m, metro_paths
from heatmetro.state.changes import ActivityChange
from heatmetro.state.records import EDGE_DTYPE, PATH_DTYPE, from_blob
from tests.streams import activity, athlete
from tests.test_fold_and_store import MIDDLE, Harness, at, path_of, ride, row
from tests.test_trim_properties import CONFIG, FAST, FOLD, hexagon_distance_m, tracks_and_zones

RES = CONFIG.metro_resolution
M_PER_DEG = 111_195.0


@pytest.fixture
def h(config: Config, fresh_db: sqlite_utils.Database) -> Harness:
    return Harness(config, fresh_db)


def _border() -> tuple[int, int, tuple[float, float], tuple[float, float]]:
    """Two neighbouring res-10 cells near Northampton and their shared border (lat, lng)."""
    a = h3.latlng_to_cell(42.3195, -72.6350, RES)
    b = h3.grid_ring(a, 1)[0]
    edge = h3.cells_to_directed_edge(a, b)
    p, q = h3.directed_edge_to_boundary(edge)
    return a, b, p, q


def _path(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    t = np.arange(len(lat), dtype=np.float64)
    piece = np.zeros(len(lat), dtype=np.int64)
    v = np.full(len(lat), 5.0)
    return metro_paths(lat, lng, t, v, piece, np.zeros(1, np.int64), [()], res=RES)[0]


def test_depth_is_the_distance_to_the_hexagon_border() -> None:
    a, _, p, q = _border()
    lat0, lng0 = h3.cell_to_latlng(a)
    mid = ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
    fractions = np.linspace(0.0, 0.99, 12)  # from the centre towards the border's middle
    lat = lat0 + (mid[0] - lat0) * fractions
    lng = lng0 + (mid[1] - lng0) * fractions
    cells = np.array([h3.latlng_to_cell(x, y, RES) for x, y in zip(lat, lng, strict=True)])
    assert (cells == a).all()
    depth = depth_m(lat, lng, cells.astype(np.uint64))
    assert 55 < depth[0] < 75  # res-10 inner radius ~65 m
    # Past the middle, the border ahead is the nearest: depth shrinks linearly to ~0.
    ahead = fractions >= 0.5
    to_border = depth[ahead] / (1 - fractions[ahead])
    assert np.ptp(to_border) < 1.0 and 55 < to_border.mean() < 75
    assert depth[-1] < 1.0


def test_wobbling_along_a_border_crosses_nothing_and_a_real_crossing_counts() -> None:
    a, b, p, q = _border()
    (la, lna), (lb, lnb) = h3.cell_to_latlng(a), h3.cell_to_latlng(b)
    mid = np.array([(p[0] + q[0]) / 2, (p[1] + q[1]) / 2])
    into_b = np.array([lb - la, lnb - lna]) / math.dist((la, lna), (lb, lnb))
    metres = into_b / M_PER_DEG * np.array([1.0, 1 / math.cos(math.radians(la))])
    # Start deep in a, then wobble +-10 m across the border 40 times.
    start = np.array([la, lna])
    wobble = [mid + metres * (10.0 if k % 2 else -10.0) for k in range(40)]
    pts = np.array([start, *wobble])
    path = _path(pts[:, 0], pts[:, 1])
    assert path["cell"].tolist() == [a]
    # Then go 20 m into b: one crossing a -> b, and back deep into a: one b -> a.
    pts = np.array([start, *wobble, mid + metres * 20.0, *wobble, start])
    assert _path(pts[:, 0], pts[:, 1])["cell"].tolist() == [a, b, a]
    assert CROSSING_MARGIN_M > 10.0


def test_a_genuine_return_along_the_same_street_counts_both_ways(h: Harness) -> None:
    west, east = (42.3195, -72.6450), (42.3195, -72.6250)
    n = 400
    out = [[west[0], west[1] + (east[1] - west[1]) * i / n] for i in range(n)]
    h.send(ride("r1", "a1", out + out[::-1]))
    edges = from_blob(row(h.db, "r1")["edges"], EDGE_DTYPE)
    pairs = list(zip(edges["a"].tolist(), edges["b"].tolist(), edges["fwd"].tolist(), strict=True))
    forward = {(a, b) for a, b, f in pairs if f}
    backward = {(a, b) for a, b, f in pairs if not f}
    # Out east and back west on the same street: the same segments, both directions.
    # (Which direction is "forward" depends on the integer order of each pair.)
    assert len(forward | backward) >= 10
    assert forward and backward
    directed = {(a, b) if f else (b, a) for a, b, f in pairs}
    assert {(b, a) for a, b in directed} == directed
    assert edges["trips"].max() == 1  # each direction counts once per activity


@FAST
@given(scenario=tracks_and_zones())
def test_no_metro_cell_overlaps_a_zone_and_crossings_join_neighbours(
    scenario: tuple[list[list[float]], list[tuple[float, float, float]]],
) -> None:
    pts, zones = scenario
    ath = athlete("a-1", privacy_zones=[{"lat": a, "lng": b, "radius_m": r} for a, b, r in zones])
    settings_, _ = FOLD.apply(None, parse_event(orjson.dumps(ath)))
    out = FOLD.apply(settings_, parse_event(orjson.dumps(activity("r-1", "a-1", pts))))[1]
    (change,) = [c for c in out if isinstance(c, ActivityChange)]  # the public store's
    metro = from_blob(change.metro_path, PATH_DTYPE)
    eff = FOLD.zones(settings_, "a-1")
    for cell in np.unique(metro["cell"]).tolist():
        assert h3.get_resolution(cell) == RES
        for z in eff:
            assert hexagon_distance_m(cell, z.lat, z.lng) > z.radius_m, (cell, z)
    for k in np.flatnonzero(metro["piece"][1:] == metro["piece"][:-1]).tolist():
        assert h3.are_neighbor_cells(int(metro["cell"][k]), int(metro["cell"][k + 1]))
    edges = from_blob(change.edges, EDGE_DTYPE)
    for a, b in zip(edges["a"].tolist(), edges["b"].tolist(), strict=True):
        assert a < b and h3.are_neighbor_cells(a, b)


def test_new_zone_cuts_the_stored_metro_path(h: Harness) -> None:
    h.send(ride("r1", "a1"))
    before = from_blob(row(h.db, "r1")["metro_path"], PATH_DTYPE)
    zone = {"lat": MIDDLE[0], "lng": MIDDLE[1], "radius_m": 200}
    h.send(athlete("a1", updated=at(10), privacy_zones=[zone]))
    after = from_blob(row(h.db, "r1")["metro_path"], PATH_DTYPE)
    assert 0 < len(after) < len(before)
    for cell in after["cell"].tolist():
        assert hexagon_distance_m(cell, *MIDDLE) > 200
    edges = from_blob(row(h.db, "r1")["edges"], EDGE_DTYPE)
    cells = set(after["cell"].tolist())
    assert edges.size and all(int(a) in cells and int(b) in cells for a, b in edges[["a", "b"]])
    assert len(path_of(h.db, "r1"))  # the heat path was cut too, not emptied
