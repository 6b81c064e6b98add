"""Vectorised H3 (``heatmetro.core.h3_vector``) must give what h3-py gives one call at a
time: the same cells for every point, the same grid paths for every pair, anywhere on
Earth (near the 12 pentagons, across the antimeridian, at the poles)."""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from heatmetro.core.geo import haversine_m
from heatmetro.core.h3_vector import (
    cells_to_latlng,
    grid_disks,
    grid_distances_in_plane,
    grid_path_interiors,
    latlng_to_cells,
)

RESOLUTIONS = st.integers(0, 15)
LAT = st.floats(-90.0, 90.0, allow_nan=False)
LNG = st.floats(-180.0, 180.0, allow_nan=False)


@st.composite
def points(draw: st.DrawFn, res: int) -> tuple[float, float]:
    """Anywhere, or close to where H3 is hardest: pentagons, the antimeridian, the poles."""
    where = draw(st.sampled_from(["anywhere", "pentagon", "antimeridian", "pole"]))
    if where == "anywhere":
        return draw(LAT), draw(LNG)
    # Within a few cells of the spot (a cell's edge is about this many degrees).
    reach = 3.0 * h3.average_hexagon_edge_length(res, "km") / 111.0
    jitter = st.floats(-reach, reach, allow_nan=False)
    if where == "pentagon":
        pent = draw(st.sampled_from(sorted(h3.get_pentagons(res))))
        lat, lng = h3.cell_to_latlng(pent)
    elif where == "antimeridian":
        lat, lng = draw(st.floats(-80.0, 80.0)), draw(st.sampled_from([-180.0, 180.0]))
    else:
        lat, lng = draw(st.sampled_from([-90.0, 90.0])), draw(LNG)
    lat = min(90.0, max(-90.0, lat + draw(jitter)))
    lng = (lng + draw(jitter) + 180.0) % 360.0 - 180.0
    return lat, lng


@st.composite
def point_batches(draw: st.DrawFn) -> tuple[int, list[tuple[float, float]]]:
    res = draw(RESOLUTIONS)
    return res, draw(st.lists(points(res), min_size=1, max_size=40))


@settings(max_examples=150, deadline=None)
@given(point_batches())
def test_cells_of_points_are_h3_py_cells(batch: tuple[int, list[tuple[float, float]]]) -> None:
    res, pts = batch
    lat, lng = np.array(pts).T
    got = latlng_to_cells(lat, lng, res)
    assert got.dtype == np.uint64
    assert got.tolist() == [h3.latlng_to_cell(a, b, res) for a, b in pts]


@settings(max_examples=100, deadline=None)
@given(point_batches())
def test_cell_centres_match_h3_py(batch: tuple[int, list[tuple[float, float]]]) -> None:
    res, pts = batch
    arr = np.array(pts)
    cells = latlng_to_cells(arr[:, 0], arr[:, 1], res)
    lat, lng = cells_to_latlng(cells)
    ref = np.array([h3.cell_to_latlng(c) for c in cells.tolist()])
    # h3o's floating point differs from the C library's in the last bits: a few mm at
    # most (res 15 by a pole; ~0.01 mm in a town at res 13), never a different place.
    apart_m = haversine_m(lat, lng, ref[:, 0], ref[:, 1])
    assert np.all(apart_m < 0.02), apart_m.max()


def _reference_interior(a: int, b: int) -> list[int]:
    """What the ingest inserted between two cells before: h3-py, one pair at a time."""
    if h3.are_neighbor_cells(a, b):
        return []
    try:
        return list(h3.grid_path_cells(a, b)[1:-1])
    except Exception:  # noqa: BLE001 - no grid path across some pentagon distortions
        return []


@st.composite
def cell_pairs(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    """Pairs of distinct cells of one resolution, up to ~20 cells apart."""
    res = draw(st.integers(0, 15))
    edge_deg = h3.average_hexagon_edge_length(res, "km") / 111.0
    pairs = []
    for _ in range(draw(st.integers(1, 30))):
        lat, lng = draw(points(res))
        reach = draw(st.sampled_from([1.0, 3.0, 30.0])) * edge_deg
        dlat, dlng = draw(st.floats(-reach, reach)), draw(st.floats(-reach, reach))
        a = h3.latlng_to_cell(lat, lng, res)
        b_lat = min(90.0, max(-90.0, lat + dlat))
        b = h3.latlng_to_cell(b_lat, (lng + dlng + 180.0) % 360.0 - 180.0, res)
        if a != b:
            pairs.append((a, b))
    return res, pairs


@settings(max_examples=200, deadline=None)
@given(cell_pairs())
def test_grid_path_interiors_are_h3_py_grid_paths(batch: tuple[int, list[tuple[int, int]]]) -> None:
    _, pairs = batch
    a = np.array([p[0] for p in pairs], dtype=np.uint64)
    b = np.array([p[1] for p in pairs], dtype=np.uint64)
    cells, counts = grid_path_interiors(a, b)
    expected = [_reference_interior(x, y) for x, y in pairs]
    assert counts.tolist() == [len(e) for e in expected]
    assert cells.tolist() == [c for e in expected for c in e]


def _across_base_cells(res: int) -> tuple[int, int]:
    """Two cells 6 apart in different base cells (neither a pentagon's)."""
    for base in sorted(h3.get_res0_cells()):
        # A corner of a base cell, where three of them meet.
        start = h3.latlng_to_cell(*h3.cell_to_boundary(base)[0], res)
        for cell in sorted(h3.grid_ring(start, 6)):
            bases = {h3.get_base_cell_number(c) for c in (start, cell)}
            if len(bases) == 2 and not any(
                h3.is_pentagon(h3.cell_to_parent(c, 0)) for c in (start, cell)
            ):
                return start, cell
    msg = "no pair found"
    raise AssertionError(msg)


def test_long_paths_and_pentagon_pairs_in_one_call() -> None:
    """A batch mixing long paths, neighbours, base cell crossings and pairs by a pentagon
    keeps pair order."""
    pent = sorted(h3.get_pentagons(9))[3]
    ring = sorted(h3.grid_ring(pent, 2))
    town = h3.latlng_to_cell(42.3195, -72.6350, 13)
    far = h3.latlng_to_cell(42.3295, -72.6250, 13)  # ~1.4 km: hundreds of cells between
    pairs = [(town, far), (ring[0], ring[5]), (town, h3.grid_ring(town, 1)[0]), (far, town)]
    pairs += [(pent, ring[1]), (ring[2], pent), _across_base_cells(2), _across_base_cells(13)]
    a = np.array([p[0] for p in pairs], dtype=np.uint64)
    b = np.array([p[1] for p in pairs], dtype=np.uint64)
    cells, counts = grid_path_interiors(a, b)
    expected = [_reference_interior(x, y) for x, y in pairs]
    assert counts[0] > 200 and counts[2] == 0
    assert counts.tolist() == [len(e) for e in expected]
    assert cells.tolist() == [c for e in expected for c in e]


def test_empty_inputs() -> None:
    empty = np.zeros(0)
    assert latlng_to_cells(empty, empty, 13).shape == (0,)
    assert [x.shape for x in cells_to_latlng(np.zeros(0, np.uint64))] == [(0,), (0,)]
    cells, counts = grid_path_interiors(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    assert cells.shape == counts.shape == (0,)


def test_tie_breaking_follows_h3s_arithmetic() -> None:
    """A path whose cube coordinates hit exact halves: h3 4.5 steps by diff * (1 / n);
    diff / n rounds one cell of this path the other way."""
    a, b = 0x89F241332B3FFFF, 0x89F241049CFFFFF
    cells, counts = grid_path_interiors(np.array([a], np.uint64), np.array([b], np.uint64))
    assert cells.tolist() == _reference_interior(a, b)
    assert counts.tolist() == [11]


@settings(max_examples=100, deadline=None)
@given(point_batches(), st.integers(0, 2))
def test_grid_disks_are_h3_py_disks(batch: tuple[int, list[tuple[float, float]]], k: int) -> None:
    res, pts = batch
    cells = np.array([h3.latlng_to_cell(a, b, res) for a, b in pts], dtype=np.uint64)
    got = grid_disks(cells, k)
    assert got.shape == (cells.size, 1 + 3 * k * (k + 1))
    for c, row in zip(cells.tolist(), got.tolist(), strict=True):
        assert set(row) == set(h3.grid_disk(c, k))
        assert row == sorted(row)  # one order, whichever library listed the disk


@st.composite
def clusters(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A few cells close together (as a track's changed cells are), anywhere or near a
    base cell's edge or a pentagon, and a number of rings."""
    res = draw(st.integers(4, 15))
    centre = draw(points(res))
    reach = 6.0 * h3.average_hexagon_edge_length(res, "km") / 111.0
    jitter = st.floats(-reach, reach, allow_nan=False)
    cells = [
        h3.latlng_to_cell(
            min(90.0, max(-90.0, centre[0] + draw(jitter))),
            (centre[1] + draw(jitter) + 180.0) % 360.0 - 180.0,
            res,
        )
        for _ in range(draw(st.integers(1, 12)))
    ]
    return res, draw(st.integers(0, 6)), cells


def _reference_distances(cells: list[int], k: int) -> dict[int, int]:
    """h3-py, one ring at a time: each cell within k of one of ``cells``, nearest distance."""
    best: dict[int, int] = {}
    for c in cells:
        for d in range(k + 1):
            for x in h3.grid_ring(c, d):
                best[x] = min(best.get(x, d), d)
    return best


@settings(max_examples=150, deadline=None)
@given(clusters())
def test_grid_distances_in_plane_are_h3_py_distances(batch: tuple[int, int, list[int]]) -> None:
    res, k, cells = batch
    got = grid_distances_in_plane(np.array(cells, np.uint64), k)
    event("declined" if got is None else "in the plane")
    if got is None:  # a pentagon's or another base cell: the caller uses H3's disks
        return
    region, dist = got
    assert region.tolist() == sorted(region.tolist())
    assert dict(zip(region.tolist(), dist.tolist(), strict=True)) == _reference_distances(cells, k)


def test_grid_distances_in_plane_decline_where_the_plane_ends() -> None:
    """Cells in two base cells, or rings that would cross into another: None."""
    # Walk from one base cell's centre to its neighbour's (Europe: no pentagon near).
    a = h3.latlng_to_cell(48.0, 10.0, 0)
    b = next(c for c in h3.grid_ring(a, 1) if not h3.is_pentagon(c))
    (lat_a, lng_a), (lat_b, lng_b) = h3.cell_to_latlng(a), h3.cell_to_latlng(b)
    walk = [
        h3.latlng_to_cell(lat_a + f * (lat_b - lat_a), lng_a + f * (lng_b - lng_a), 9)
        for f in np.linspace(0.0, 1.0, 4001).tolist()
    ]
    cross = next(n for n in range(1, len(walk)) if walk[n] >> 45 != walk[n - 1] >> 45)
    inside, outside = walk[cross - 1], walk[cross]
    assert h3.get_base_cell_number(inside) != h3.get_base_cell_number(outside)
    assert grid_distances_in_plane(np.array([inside, outside], np.uint64), 1) is None
    near_edge = h3.grid_distance(inside, outside)
    assert grid_distances_in_plane(np.array([inside], np.uint64), near_edge + 2) is None
    # ... while rings that stay inside are found there.
    got = grid_distances_in_plane(np.array([walk[0]], np.uint64), 3)
    assert got is not None and got[0].size == 37


def test_grid_distances_in_plane_of_a_real_street() -> None:
    """A res-13 street 2 km long (Northampton, MA) and 25 rings: the rebuild's case."""
    lat = np.linspace(42.3170, 42.3250, 400)
    lng = np.linspace(-72.6400, -72.6200, 400)
    cells = latlng_to_cells(lat, lng, 13)
    got = grid_distances_in_plane(cells, 25)
    assert got is not None
    region, dist = got
    sample = np.random.default_rng(7).choice(region.size, 300, replace=False)
    listed = cells.tolist()
    for at in sample.tolist():  # each checked against h3-py's own grid distance
        cell = int(region[at])
        assert dist[at] == min(h3.grid_distance(cell, c) for c in listed)
    assert int(dist.max()) == 25 and region.size > 400 * 51 // 2
