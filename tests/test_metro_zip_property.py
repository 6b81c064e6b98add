"""The Metro zip deflated ahead (``heatmetro.site_builder.metro_zip``) as a Hypothesis
property: whichever members were handed to the background thread, as read or as the
pieces they were written from (cut anywhere), and whichever were packed at the end, the
zip is byte for byte ``metro_files.write_zip``'s, and a zip any reader opens, each
entry's CRC and sizes right; each member's SHA-256 is the file's. GeoJSON entries are
deflated at level 3, the others at 4."""

from __future__ import annotations

import hashlib
import struct
import tempfile
import zipfile
import zlib
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.metro_files import Pieces, write_pieces, write_zip
from heatmetro.site_builder.metro_zip import ZipPacker

NAMES = ("README.md", "edges.csv", "edges.geojson", "metro.gpkg", "od.csv", "ü.csv")


def contents() -> st.SearchStrategy[bytes]:
    """Empty, text that deflates well, and bytes that do not (stored larger)."""
    text = st.lists(st.sampled_from([b"a,b,1\n", b"8a2a1072b59ffff,", b"\x00" * 64]),
                    max_size=400).map(b"".join)  # fmt: skip
    return st.one_of(st.binary(max_size=3000), text)


def _cut(data: bytes, at: list[int]) -> Pieces:
    """``data`` in pieces at ``at``: bytes and views of bytes, empty ones too."""
    ends = [0, *sorted(min(a, len(data)) for a in at), len(data)]
    view = memoryview(data)
    return [bytes(view[a:b]) if i % 2 else view[a:b] for i, (a, b) in enumerate(pairwise(ends))]


@settings(max_examples=60, deadline=None)
@given(
    files=st.dictionaries(st.sampled_from(NAMES), contents(), min_size=1),
    ahead=st.sets(st.sampled_from(NAMES)),
    pieces=st.dictionaries(st.sampled_from(NAMES), st.lists(st.integers(0, 3000), max_size=6)),
    when=st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1)),  # noqa: DTZ001 - naive bounds
)
def test_packed_zip_is_write_zips(
    files: dict[str, bytes], ahead: set[str], pieces: dict[str, list[int]], when: datetime
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        members = []
        for name, data in files.items():
            (root / name).write_bytes(data)
            members.append(root / name)
        when = when.replace(tzinfo=UTC)
        write_zip(root / "plain.zip", "top", members, when)
        packer = ZipPacker()
        try:
            for member in members:
                data = files[member.name]
                if member.name in pieces:  # told of when written: never read back
                    write_pieces(member, _cut(data, pieces[member.name]), packer.add)
                    assert member.read_bytes() == data
                    member.unlink()
                elif member.name in ahead:
                    packer.add(member)
            packer.write(root / "packed.zip", "top", members, when)
            digests = {m.name: packer.packed(m).sha256 for m in members}
        finally:
            packer.close()
        assert (root / "packed.zip").read_bytes() == (root / "plain.zip").read_bytes()
        assert digests == {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
        with zipfile.ZipFile(root / "packed.zip") as zf:
            assert zf.testzip() is None
            assert {i.filename: zf.read(i) for i in zf.infolist()} == {
                f"top/{n}": d for n, d in files.items()
            }
            for info in zf.infolist():
                data = files[info.filename.removeprefix("top/")]
                assert (info.CRC, info.file_size) == (zlib.crc32(data), len(data))


def _entries(path: Path) -> dict[str, bytes]:
    """Each entry of the zip at ``path`` as stored: its deflated bytes."""
    out = {}
    with path.open("rb") as fh, zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            fh.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", fh.read(4))
            fh.seek(name_len + extra_len, 1)
            out[info.filename] = fh.read(info.compress_size)
    return out


def _deflated(data: bytes, level: int) -> bytes:
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    return deflate.compress(data) + deflate.flush()


def test_geojson_is_deflated_at_level_3_the_others_at_4(tmp_path: Path) -> None:
    feature = (b'{"geometry":{"coordinates":[[%d.25,52.5],[13.125,%d.75]],"type":"LineString"},'
               b'"properties":{"edge_id":"8a1f%05d","layer":"all","trips":%d},"type":"Feature"}')  # fmt: skip
    data = b"\n".join(feature % (i, i * 7 % 90, i, i % 13) for i in range(4000))
    assert _deflated(data, 3) != _deflated(data, 4)  # else the test tells nothing
    members = [tmp_path / "edges.geojson", tmp_path / "edges.csv"]
    for member in members:
        member.write_bytes(data)
    when = datetime(2024, 1, 1, tzinfo=UTC)
    write_zip(tmp_path / "plain.zip", "top", members, when)
    packer = ZipPacker()
    try:
        packer.add(members[0])
        packer.write(tmp_path / "packed.zip", "top", members, when)
    finally:
        packer.close()
    for zip_path in (tmp_path / "plain.zip", tmp_path / "packed.zip"):
        assert _entries(zip_path) == {
            "top/edges.csv": _deflated(data, 4),
            "top/edges.geojson": _deflated(data, 3),
        }


def test_a_member_that_cannot_be_read_raises_where_the_zip_is_written(tmp_path: Path) -> None:
    packer = ZipPacker()
    try:
        packer.add(tmp_path / "gone.csv")
        with pytest.raises(FileNotFoundError):
            packer.write(tmp_path / "out.zip", "top", [tmp_path / "gone.csv"], datetime.now(UTC))
    finally:
        packer.close()
