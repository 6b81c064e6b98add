"""``metro/metro.gpkg``: the Metro tables as a GeoPackage, written through GDAL (pyogrio).

GIS users open one file and get the layers ``edges`` (LineString), ``hexagons``
(Polygon) and ``od`` (LineString), in WGS 84, with the same columns and values as the
CSV files; and the per-hour and per-month CSV files as attribute tables (no geometry),
to join to a layer on its id in the same file. pyogrio's raw API takes numpy arrays and
WKB, so no GeoDataFrame is built.

Reproducible bytes: GDAL stamps ``gpkg_contents.last_change`` with the current time
unless ``OGR_CURRENT_DATE`` is set, so it is set to the build time for the write. GDAL's
file is then put in one canonical form (``metro_gpkg_canon``), which also lets a rebuild
take the rows of edges not recounted from the last build's file (``metro_gpkg_reuse``).
"""

from __future__ import annotations

import csv
import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from heatmetro.site_builder.metro_gpkg_canon import assemble, layout, whole
from heatmetro.site_builder.metro_gpkg_reuse import NEW, OLD, GpkgPlan, gpkg_key
from heatmetro.site_builder.metro_rows import Coords, Rows

_WKB_LINESTRING, _WKB_POLYGON = 2, 3


def _wkb_parts(kind: str, geometry: Sequence[Coords]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Little-endian WKB of each LineString or one-ring Polygon, all in one buffer:
    ``(bytes, offsets, valid)``, row ``i`` being ``bytes[offsets[i]:offsets[i + 1]]``
    (empty and not ``valid``: a null geometry). Geometries of one point count are packed
    by numpy (a packed record per row: byte order, type, [rings,] points, x y pairs)."""
    sizes = np.fromiter((len(g) for g in geometry), dtype=np.int64, count=len(geometry))
    if kind == "LineString":
        # A round trip's O/D line (origin = destination) has no length: as a LineString
        # it would be invalid (QGIS draws nothing, validity checks flag it). Its row stays,
        # with a null geometry.
        sizes[[i for i, g in enumerate(geometry) if len(set(g)) < 2]] = 0
    head = [("order", "u1"), ("type", "<u4")] + ([("rings", "<u4")] if kind != "LineString" else [])
    head_size = np.dtype(head).itemsize + 4  # and the point count
    offsets = np.zeros(len(geometry) + 1, dtype=np.int64)
    np.cumsum(np.where(sizes > 0, head_size + 16 * sizes, 0), out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for n in np.unique(sizes[sizes > 0]).tolist():
        at = np.flatnonzero(sizes == n)
        rec = np.zeros(len(at), np.dtype([*head, ("n", "<u4"), ("xy", "<f8", (n, 2))]))
        rec["order"] = 1
        rec["type"] = _WKB_LINESTRING if kind == "LineString" else _WKB_POLYGON
        if kind != "LineString":
            rec["rings"] = 1
        rec["n"] = n
        rec["xy"] = np.array([geometry[i] for i in at.tolist()], dtype=np.float64).reshape(-1, n, 2)
        size = rec.dtype.itemsize
        raw = rec.view(np.uint8).reshape(len(at), size)
        if len(at) == len(geometry):  # every row alike: the records are the buffer
            data = raw.reshape(-1)
        else:
            data[offsets[at][:, None] + np.arange(size)] = raw
    return data, offsets, sizes > 0


def _wkbs(kind: str, geometry: Sequence[Coords]) -> np.ndarray:
    """``_wkb_parts`` as one ``bytes`` per row (None: a null geometry), as an object array."""
    data, offsets, valid = _wkb_parts(kind, geometry)
    out = np.empty(len(geometry), dtype=object)
    raw = data.tobytes()
    for i in np.flatnonzero(valid).tolist():
        out[i] = raw[offsets[i] : offsets[i + 1]]
    return out


def _wkb_array(pa: Any, kind: str, geometry: Sequence[Coords]) -> Any:
    """``_wkbs`` as an Arrow binary array, built from the one buffer (no object per row:
    the same values as ``pa.array(_wkbs(...).tolist(), pa.binary())``)."""
    data, offsets, valid = _wkb_parts(kind, geometry)
    assert offsets[-1] < 2**31, "Arrow binary offsets are 32-bit"
    nulls = int(len(valid) - np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    buffers = [bitmap, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.binary(), len(valid), buffers, null_count=nulls)


def _kind(column: str) -> str:
    if column.endswith("_count") or column in ("hour", "osm_reference_id"):
        return "int"
    if column.endswith(("_kmh", "_ms", "_deg")) or column == "length_m":
        return "float"
    return "text"


class Named(Protocol):
    """A column as the writers know it (``metro_columns.Column`` and the street columns)."""

    @property
    def name(self) -> str: ...


def rows_from_geojson(path: Path, columns: Sequence[Named]) -> Rows:
    """A written FeatureCollection of LineStrings read back as rows (for the street layer,
    whose rows ``metro_streets`` writes straight to its own files)."""
    doc = orjson.loads(path.read_bytes())
    names = [c.name for c in columns]
    values = [tuple(f["properties"][n] for n in names) for f in doc["features"]]
    geometry = [[(x, y) for x, y in f["geometry"]["coordinates"]] for f in doc["features"]]
    return Rows(values, geometry)


@dataclass(frozen=True)
class _Name:
    name: str


def rows_from_csv(path: Path) -> tuple[list[_Name], Rows]:
    """A written CSV file read back as typed rows without geometry (an attribute table):
    an empty field is a null, as the CSV's readers take it."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        names = next(reader)
        kinds = [_kind(n) for n in names]
        convert = {"int": int, "float": float, "text": str}
        values = [
            tuple(convert[k](v) if v != "" else None for k, v in zip(kinds, row, strict=True))
            for row in reader
        ]
    return [_Name(n) for n in names], Rows(values, None)


def _field(
    column: str, values: Sequence[object] | np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """A column as pyogrio wants it: typed array, and for integers a null mask. An array
    (``metro_rows.Rows.columns``) is taken as it is: a negative count or a ``nan`` is empty."""
    kind = _kind(column)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        if kind == "int" and values.dtype.kind in "iu":
            missing = values < 0
            return np.where(missing, 0, values).astype(np.int64), missing
        if kind == "float":
            return values.astype(np.float64), None
        # Not of the column's kind: its values, empty where the array says so.
        empty = values < 0 if values.dtype.kind in "iu" else np.isnan(values)
        values = [None if e else v for v, e in zip(values.tolist(), empty.tolist(), strict=True)]
    if kind == "int":
        missing = np.array([v is None for v in values], dtype=bool)
        ints = np.array([0 if v is None else v for v in values], dtype=np.int64)
        return ints, missing
    if kind == "float":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64), None
    return np.array(values, dtype=object), None


_GEOMETRY = "geom"  # the input column GDAL takes the geometry from (stored as ``geom``)


def _arrow(pa: Any, data: np.ndarray, mask: np.ndarray | None) -> Any:
    """A ``_field`` column as an Arrow array: empty values (masked, ``nan``, ``None``) as
    nulls, so GDAL stores SQL NULLs as it did from the value-by-value writer."""
    if data.dtype == object:
        return pa.array(data.tolist(), pa.string())
    if data.dtype.kind == "f":
        mask = np.isnan(data)
    return pa.array(data, mask=mask)


def _column(pa: Any, column: str, values: Sequence[object] | np.ndarray) -> Any:
    """A column as an Arrow array: text given as values straight from them (no object
    array between: the same strings and nulls), anything else through ``_field``."""
    if _kind(column) == "text" and not isinstance(values, np.ndarray):
        return pa.array(values if isinstance(values, list) else list(values), pa.string())
    return _arrow(pa, *_field(column, values))


def gdal_version() -> str:
    """GDAL's version, as pyogrio has it (loads GDAL)."""
    import pyogrio

    return str(pyogrio.__gdal_version_string__)


def write_gpkg(
    path: Path,
    layers: Mapping[str, tuple[str | None, Sequence[Named], Rows]],
    when: datetime,
    attribution: str | None = None,
    plan: GpkgPlan | None = None,
) -> tuple[dict[str, int], int]:
    """Write each ``name: (geometry type, columns, rows)`` as a layer; return rows per
    layer and how many rows were taken from the last build's file. A geometry type of
    ``None`` writes an attribute table (GeoPackage ``attributes``).

    ``attribution`` (the base map's licence notice) becomes each layer's description.
    ``plan``: the last build's rows to take (``metro_gpkg_reuse``), if it was made
    with the same code and versions: the same bytes either way (``metro_gpkg_canon``).
    """
    path.unlink(missing_ok=True)
    gdal = path.with_name(path.stem + ".gdal.gpkg")  # GDAL's file, before assemble
    counts = {name: len(rows) for name, (_, _, rows) in layers.items()}
    try:
        if plan is not None and plan.key == gpkg_key(gdal_version()):
            old, tables = plan.base, plan.tables
            fresh = {name: (kind, columns, _subset(rows, tables[name].fresh))
                     for name, (kind, columns, rows) in layers.items()}  # fmt: skip
            _write_gdal(gdal, fresh, when, attribution)
            if layout(gdal) == layout(old):
                assemble(old, path, {OLD: old, NEW: gdal}, {n: p.placed for n, p in tables.items()})
                return counts, sum(counts[n] - len(p.fresh) for n, p in tables.items())
        _write_gdal(gdal, layers, when, attribution)
        assemble(gdal, path, {NEW: gdal}, {name: whole(NEW, n) for name, n in counts.items()})
    finally:
        gdal.unlink(missing_ok=True)
    return counts, 0


def _subset(rows: Rows, at: np.ndarray) -> Rows:
    """The rows ``at`` (ascending) of ``rows``."""
    geometry = [rows.geometry[i] for i in at.tolist()] if rows.geometry is not None else None
    if rows.columns is None:
        return Rows(rows.take(at), geometry)
    columns = [c[at] if isinstance(c, np.ndarray) else [c[i] for i in at.tolist()]
               for c in rows.columns]  # fmt: skip
    return Rows(None, geometry, columns)


def _write_gdal(
    path: Path,
    layers: Mapping[str, tuple[str | None, Sequence[Named], Rows]],
    when: datetime,
    attribution: str | None,
) -> None:
    """GDAL's GeoPackage of ``layers``, without the R-tree indexes (``assemble`` makes them)."""
    # GDAL loads here, in the forked Metro writer: not in every snapshot's start-up.
    import pyarrow as pa
    import pyogrio
    import pyogrio.errors
    import pyogrio.raw

    path.unlink(missing_ok=True)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    # No fsync per layer: the file lies in a build folder that is published whole or
    # discarded (a crash leaves an unpublished build), so SQLite's FULL sync would only
    # wait for the disk, ten times (half of the writer's time on this machine's disk).
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": stamp, "OGR_SQLITE_SYNCHRONOUS": "OFF"})
    options = {"SPATIAL_INDEX": "NO"} | ({"DESCRIPTION": attribution} if attribution else {})
    try:
        for name, (kind, columns, rows) in layers.items():
            by_column: Sequence[Sequence[object] | np.ndarray] = rows.columns or (
                list(zip(*rows.values, strict=True)) or [()] * len(columns)
            )
            arrays = [_column(pa, c.name, v) for c, v in zip(columns, by_column, strict=True)]
            names = [c.name for c in columns]
            if kind is not None:
                assert rows.geometry is not None
                arrays.append(_wkb_array(pa, kind, rows.geometry))
                names.append(_GEOMETRY)
            # Through GDAL's Arrow interface: the rows go to GDAL as columns, not value
            # by value from Python (pyogrio.raw.write): ~40% less CPU, the same bytes.
            pyogrio.raw.write_arrow(
                pa.table(arrays, names=names),
                str(path),
                layer=name,
                driver="GPKG",
                geometry_name=_GEOMETRY if kind is not None else None,
                geometry_type=kind,
                crs="EPSG:4326" if kind is not None else None,
                append=path.exists(),
                # GeoPackage 1.3, not GDAL's newest 1.4: GDAL before 3.7 (Debian 12's,
                # so many a QGIS) warns that it "may only be partially supported".
                dataset_options=None if path.exists() else {"VERSION": "1.3"},
                layer_options=options,
            )
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        # GDAL says "Failed to commit transaction", not why: a full disk is the usual cause.
        why = f"GDAL could not write it ({exc}; is the disk full, or a file size limit reached?)"
        raise OSError(errno.EIO, why, str(path)) from exc
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None, "OGR_SQLITE_SYNCHRONOUS": None})
