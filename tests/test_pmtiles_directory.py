"""``pmtiles_directory.read_directory`` against the ``pmtiles`` package's own reader."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pmtiles.tile import Entry, deserialize_directory, serialize_directory

from heatmetro.site_builder.pmtiles_directory import read_directory, varints


@st.composite
def directories(draw: st.DrawFn) -> list[Entry]:
    """Entries as a writer makes them: rising ids, data mostly back to back, some runs,
    some leaf directories (run length 0), values up to 2**50 (multi-byte varints)."""
    n = draw(st.integers(0, 60))
    entries, tile_id, offset = [], 0, draw(st.integers(0, 2**50))
    for _ in range(n):
        tile_id += draw(st.integers(1, 2**40))
        length = draw(st.integers(1, 2**30))
        if draw(st.booleans()):  # not right after the previous one (or the same bytes)
            offset = draw(st.integers(0, 2**50))
        entries.append(Entry(tile_id, offset, length, draw(st.integers(0, 5))))
        offset += length
    return entries


@settings(max_examples=200, deadline=None)
@given(entries=directories())
def test_read_directory_reads_what_the_pmtiles_reader_reads(entries: list[Entry]) -> None:
    data = serialize_directory(entries)
    want = deserialize_directory(data)
    got = read_directory(data)
    as_tuples = [(e.tile_id, e.run_length, e.length, e.offset) for e in want]
    assert list(zip(*(a.tolist() for a in got), strict=True)) == as_tuples


def test_a_truncated_directory_is_an_error_not_a_guess() -> None:
    data = gzip.decompress(serialize_directory([Entry(5, 0, 10, 1), Entry(9, 10, 300, 1)]))
    with pytest.raises(ValueError, match="truncated varint"):
        read_directory(gzip.compress(data[:-1] + bytes([0x80])))
    with pytest.raises(ValueError, match="holds"):
        read_directory(gzip.compress(data[:-2]))
    assert varints(bytes([0xAC, 0x02, 0x00])).tolist() == [300, 0]
