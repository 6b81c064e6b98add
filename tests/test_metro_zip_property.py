"""The Metro zip deflated ahead (``heatmetro.site_builder.metro_zip``) as a Hypothesis
property: whichever members were handed to the background thread and whichever were
packed at the end, the zip is byte for byte ``metro_files.write_zip``'s, and a zip any
reader opens; each member's SHA-256 is the file's."""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.metro_files import write_zip
from heatmetro.site_builder.metro_zip import ZipPacker

NAMES = ("README.md", "edges.csv", "edges.geojson", "metro.gpkg", "od.csv", "ü.csv")


def contents() -> st.SearchStrategy[bytes]:
    """Empty, text that deflates well, and bytes that do not (stored larger)."""
    text = st.lists(st.sampled_from([b"a,b,1\n", b"8a2a1072b59ffff,", b"\x00" * 64]),
                    max_size=400).map(b"".join)  # fmt: skip
    return st.one_of(st.binary(max_size=3000), text)


@settings(max_examples=60, deadline=None)
@given(
    files=st.dictionaries(st.sampled_from(NAMES), contents(), min_size=1),
    ahead=st.sets(st.sampled_from(NAMES)),
    when=st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1)),  # noqa: DTZ001 - naive bounds
)
def test_packed_zip_is_write_zips(files: dict[str, bytes], ahead: set[str], when: datetime) -> None:
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
                if member.name in ahead:
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


def test_a_member_that_cannot_be_read_raises_where_the_zip_is_written(tmp_path: Path) -> None:
    packer = ZipPacker()
    try:
        packer.add(tmp_path / "gone.csv")
        with pytest.raises(FileNotFoundError):
            packer.write(tmp_path / "out.zip", "top", [tmp_path / "gone.csv"], datetime.now(UTC))
    finally:
        packer.close()
