"""Deterministic Metro file writers: CSV, GeoJSON, the zip of everything, checksums.

Same input, same bytes: ``\\n`` line ends, sorted JSON keys, fixed zip entry times
(``SOURCE_DATE_EPOCH``) and modes.
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from heatmetro.site_builder.metro_columns import Column
from heatmetro.site_builder.metro_rows import Rows
from heatmetro.site_builder.metro_text_cache import TextCache

ZIP_MIN_DATE = datetime(1980, 1, 1, tzinfo=UTC)  # the earliest time a zip entry can hold
#: Python's own zlib (zlib-ng's bytes differ between CPUs), at level 4: on the bench's
#: Metro files (11 MB) half the CPU of the default level 6 (0.07 s vs 0.16 s) for a zip
#: ~19% larger; 9 costs ~3.5x the CPU of 6 for ~6% fewer bytes.
ZIP_LEVEL = 4
#: GeoJSON's at level 3, the last of zlib's fast levels (no lazy matching): its keys,
#: repeated in every feature, are long matches found at once. On the bench's
#: ``edges.geojson`` (21.6 MB) 1,389,682 bytes in 0.16 s of CPU against level 4's
#: 1,435,553 bytes in 0.30 s: smaller and half the time. (Not so the CSV files and the
#: GeoPackage: 7% and 5% larger at 3.)
GEOJSON_ZIP_LEVEL = 3

#: A file's bytes as the pieces it was written from, in order.
Pieces = Sequence[bytes | memoryview]
#: Called with each file written from pieces, once written (``ZipPacker.add``: the zip
#: deflates the pieces in hand instead of reading the file back).
Written = Callable[[Path, Pieces], None]


def zip_level(name: str) -> int:
    """The zlib level of the zip entry of the file called ``name``."""
    return GEOJSON_ZIP_LEVEL if name.endswith(".geojson") else ZIP_LEVEL


def write_pieces(path: Path, pieces: Pieces, written: Written | None = None) -> None:
    """``path``'s bytes are ``pieces``, one after the other (never joined: the large
    ones go to the file as they are); then ``written(path, pieces)``."""
    with path.open("wb") as fh:
        fh.writelines(pieces)
    if written is not None:
        written(path, pieces)


class _Lines:
    """A file for ``csv.writer`` that keeps each row's line apart (it writes a row at once)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


def csv_lines(values: Sequence[Sequence[object]]) -> list[bytes]:
    """Each row as ``write_csv`` writes it: its line, UTF-8."""
    out = _Lines()
    csv.writer(out, lineterminator="\n").writerows(values)
    assert len(out.lines) == len(values)
    return [line.encode("utf-8") for line in out.lines]


def write_csv(
    path: Path,
    columns: Sequence[Column],
    rows: Rows,
    texts: TextCache | None = None,
    written: Written | None = None,
) -> int:
    """Write a CSV (``\\n`` line ends, ``None`` as an empty cell); return the data rows.

    ``texts``: the last build's rows of an edge table, kept for the edges not recounted.
    ``written``: told of the file and its pieces (``write_pieces``) when it is written
    from ``texts`` (an edge table), else not told.
    """
    if texts is not None and rows.edge is not None and rows.place is not None:
        body = texts.body(path.name, rows.edge, rows.place, lambda at: csv_lines(rows.take(at)))
        write_pieces(path, [csv_lines([[c.name for c in columns]])[0], *body], written)
        return len(rows)
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow([c.name for c in columns])
        out.writerows(rows.values)
    return len(rows)


def write_geojson(
    path: Path,
    columns: Sequence[Column],
    rows: Rows,
    attribution: str | None = None,
    texts: TextCache | None = None,
    written: Written | None = None,
) -> int:
    """A FeatureCollection of LineStrings, one feature per text line.

    Properties are the CSV's values (``None`` becomes ``null``), in the CSV's column
    order (QGIS shows a layer's fields in the order of its first feature's). ``attribution`` (the
    base map's licence notice) goes in a top-level ``attribution`` member. orjson writes
    the features in one call (~4x faster than ``json``; compact, UTF-8, floats as their
    shortest round-trip text, as ``json`` does), and one write takes them all. ``texts``:
    as for ``write_csv``; ``written``: told of the file and its pieces (``write_pieces``).
    """
    names = [c.name for c in columns]
    assert rows.geometry is not None
    tail = b"" if attribution is None else b',"attribution":' + orjson.dumps(attribution)
    if texts is not None and rows.edge is not None and rows.place is not None:
        geometry = rows.geometry

        def lines(at: np.ndarray) -> list[bytes]:  # each feature after its separator
            return [b",\n" + orjson.dumps(
                {
                    "geometry": {"coordinates": geometry[i], "type": "LineString"},
                    "properties": dict(zip(names, row, strict=True)),
                    "type": "Feature",
                }
            ) for i, row in zip(at.tolist(), rows.take(at), strict=True)]  # fmt: skip

        body = texts.body(path.name, rows.edge, rows.place, lines)
        end = b"\n]" + tail + b',"type":"FeatureCollection"}\n'
        # The first feature without the separator before it.
        first = [memoryview(body[0])[1:]] if body else []
        write_pieces(path, [b'{"features":[', *first, *body[1:], end], written)
        return len(rows)
    features = orjson.dumps(
        [
            {
                "geometry": {"coordinates": coords, "type": "LineString"},
                "properties": dict(zip(names, row, strict=True)),
                "type": "Feature",
            }
            for row, coords in zip(rows.values, rows.geometry, strict=True)
        ]
    )
    # One dump, then a line per feature: a feature's every quote inside a string is
    # escaped, so ``},{"geometry":`` only ever stands between two features.
    joined = features[1:-1].replace(b'},{"geometry":', b'},\n{"geometry":')
    head = b'{"features":[' + (b"\n" if rows.values else b"")
    write_pieces(path, [head, joined, b"\n]" + tail + b',"type":"FeatureCollection"}\n'], written)
    return len(rows)


def zip_info(name: str, when: datetime) -> zipfile.ZipInfo:
    """A zip entry's fixed time and mode."""
    when = max(when, ZIP_MIN_DATE)
    date_time = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.create_system = 3  # Unix, whatever OS builds it, so the bytes match
    info.external_attr = 0o644 << 16
    return info


def write_zip(path: Path, folder: str, members: Sequence[Path], when: datetime) -> None:
    """Deterministic zip: sorted entries, fixed time and mode, one top folder (the
    reference of ``metro_zip.ZipPacker``, which writes the same bytes)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member in sorted(members, key=lambda p: p.name):
            data = member.read_bytes()
            info = zip_info(f"{folder}/{member.name}", when)
            zf.writestr(info, data, zipfile.ZIP_DEFLATED, zip_level(member.name))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
