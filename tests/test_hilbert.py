"""Vectorised PMTiles ids against the ``pmtiles`` package's own scalar functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pmtiles.tile import tileid_to_zxy, zxy_to_tileid

from heatmetro.site_builder.hilbert import tile_ids, tile_zxy


@st.composite
def tiles(draw: st.DrawFn) -> tuple[int, list[int], list[int]]:
    z = draw(st.integers(0, 31))
    xy = st.integers(0, (1 << z) - 1)
    n = draw(st.integers(0, 12))
    return z, draw(st.lists(xy, min_size=n, max_size=n)), draw(st.lists(xy, min_size=n, max_size=n))


@settings(max_examples=200, deadline=None)
@given(tiles())
def test_ids_equal_the_package(t: tuple[int, list[int], list[int]]) -> None:
    z, xs, ys = t
    got = tile_ids(z, np.array(xs, dtype=np.int64), np.array(ys, dtype=np.int64))
    assert got.tolist() == [zxy_to_tileid(z, x, y) for x, y in zip(xs, ys, strict=True)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 31), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
        max_size=12,
    )
)
def test_zxy_inverts_the_ids_across_zooms(tiles_: list[tuple[int, int, int]]) -> None:
    zxy = [(z, x % (1 << z), y % (1 << z)) for z, x, y in tiles_]
    ids = np.array([zxy_to_tileid(*t) for t in zxy], dtype=np.int64)
    z, x, y = tile_zxy(ids)
    assert list(zip(z.tolist(), x.tolist(), y.tolist(), strict=True)) == zxy
    assert [tileid_to_zxy(int(i)) for i in ids] == zxy


def test_every_tile_of_a_small_zoom() -> None:
    x, y = np.meshgrid(np.arange(16), np.arange(16))
    ids = tile_ids(4, x.ravel(), y.ravel())
    first = zxy_to_tileid(4, 0, 0)
    assert sorted(ids.tolist()) == list(range(first, first + 256))  # each id of zoom 4 once
    assert ids.tolist() == [
        zxy_to_tileid(4, int(a), int(b)) for a, b in zip(x.ravel(), y.ravel(), strict=True)
    ]


def test_out_of_range_tiles_are_refused() -> None:
    with pytest.raises(ValueError, match="outside zoom 3"):
        tile_ids(3, np.array([8]), np.array([0]))
    with pytest.raises(ValueError, match="zoom 32"):
        tile_ids(32, np.array([0]), np.array([0]))
