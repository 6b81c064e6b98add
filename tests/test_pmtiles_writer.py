"""The archive writer against the ``pmtiles`` package's own: the very same bytes."""

from __future__ import annotations

import io
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pmtiles.tile import Compression, TileType, write_varint
from pmtiles.writer import Writer

from heatmetro.site_builder.pmtiles_writer import ArchiveWriter, varints


def package_bytes(tiles: list[tuple[int, bytes]]) -> bytes:
    out = io.BytesIO()
    writer = Writer(out)
    for tileid, data in tiles:
        writer.write_tile(tileid, data)
    writer.finalize(header(), {"name": "x"})
    writer.tile_f.close()
    return out.getvalue()


def our_bytes(tiles: list[tuple[int, bytes]], *, one_call: bool) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    if one_call:
        writer.write_tiles([t for t, _ in tiles], [d for _, d in tiles])
    else:
        for tileid, data in tiles:
            writer.write_tile(tileid, data)
    writer.finalize(header(), {"name": "x"})
    return out.getvalue()


def header() -> dict[str, object]:
    return {"tile_type": TileType.PNG, "tile_compression": Compression.NONE, "center_zoom": 0}


@st.composite
def archives(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Tiles in mostly ascending order, with repeated contents (runs and shared offsets)."""
    n = draw(st.integers(1, 40))
    steps = draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n))
    ids = np.cumsum(steps).tolist()
    if draw(st.booleans()):  # now and then out of order: not clustered
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        ids[i], ids[j] = ids[j], ids[i]
    contents = [b"", b"a", b"bb", b"a" * 300, bytes(range(200))]
    picks = draw(st.lists(st.integers(0, len(contents) - 1), min_size=n, max_size=n))
    return [(t, contents[k]) for t, k in zip(ids, picks, strict=True)]


@settings(max_examples=300, deadline=None)
@given(archives(), st.booleans())
def test_the_package_s_bytes(tiles: list[tuple[int, bytes]], one_call: bool) -> None:
    assert our_bytes(tiles, one_call=one_call) == package_bytes(tiles)


def test_the_package_s_bytes_with_leaf_directories() -> None:
    rng = random.Random(7)
    tileid = 0
    tiles = []
    for i in range(60_000):  # a root of this many entries is over 16 kB: leaves
        tileid += rng.randint(1, 5000)
        tiles.append((tileid, i.to_bytes(3, "little") if rng.random() < 0.9 else b"same"))
    got = our_bytes(tiles, one_call=True)
    assert int.from_bytes(got[40:48], "little") > 0  # leaf_directory_length
    assert got == package_bytes(tiles)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_varints_are_the_package_s(values: list[int]) -> None:
    out = io.BytesIO()
    for v in values:
        write_varint(out, v)
    assert varints(np.array(values, dtype=np.uint64)).tobytes() == out.getvalue()
