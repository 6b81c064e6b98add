"""Deterministic Metro file writers: CSV, GeoJSON, the zip of everything, checksums.

Same input, same bytes: ``\\n`` line ends, sorted JSON keys, fixed zip entry times
(``SOURCE_DATE_EPOCH``) and modes.
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from heatmetro.site_builder.metro_columns import Column
from heatmetro.site_builder.metro_rows import Rows

ZIP_MIN_DATE = datetime(1980, 1, 1, tzinfo=UTC)  # the earliest time a zip entry can hold
#: Python's own zlib (zlib-ng's bytes differ between CPUs), at level 4: on the bench's
#: Metro files (11 MB) half the CPU of the default level 6 (0.07 s vs 0.16 s) for a zip
#: ~19% larger; 9 costs ~3.5x the CPU of 6 for ~6% fewer bytes.
ZIP_LEVEL = 4


def write_csv(path: Path, columns: Sequence[Column], rows: Rows) -> int:
    """Write a CSV (``\\n`` line ends, ``None`` as an empty cell); return the data rows."""
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow([c.name for c in columns])
        out.writerows(rows.values)
    return len(rows)


def write_geojson(
    path: Path, columns: Sequence[Column], rows: Rows, attribution: str | None = None
) -> int:
    """A FeatureCollection of LineStrings, one feature per text line.

    Properties are the CSV's values (``None`` becomes ``null``), in the CSV's column
    order (QGIS shows a layer's fields in the order of its first feature's). ``attribution`` (the
    base map's licence notice) goes in a top-level ``attribution`` member. orjson writes
    the features in one call (~4x faster than ``json``; compact, UTF-8, floats as their
    shortest round-trip text, as ``json`` does), and one write takes them all.
    """
    names = [c.name for c in columns]
    assert rows.geometry is not None
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
    body = features[1:-1].replace(b'},{"geometry":', b'},\n{"geometry":')
    tail = b"" if attribution is None else b',"attribution":' + orjson.dumps(attribution)
    path.write_bytes(
        b'{"features":[' + (b"\n" + body if rows.values else b"") + b"\n]" + tail
        + b',"type":"FeatureCollection"}\n'
    )  # fmt: skip
    return len(rows)


def write_zip(path: Path, folder: str, members: Sequence[Path], when: datetime) -> None:
    """Deterministic zip: sorted entries, fixed time and mode, one top folder."""
    when = max(when, ZIP_MIN_DATE)
    date_time = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member in sorted(members, key=lambda p: p.name):
            info = zipfile.ZipInfo(f"{folder}/{member.name}", date_time=date_time)
            info.create_system = 3  # Unix, whatever OS builds it, so the bytes match
            info.external_attr = 0o644 << 16
            data = member.read_bytes()
            zf.writestr(info, data, zipfile.ZIP_DEFLATED, ZIP_LEVEL)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
