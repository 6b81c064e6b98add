"""Keep the published Metro files when their inputs have not changed: ``state_dir/metro_output.<site>.json``.

Every Metro data file (the CSV and GeoJSON files and the GeoPackage) is a pure function
of the window's edge, hexagon and O/D records, the publication settings (all but the
build date, which only the README and ``index.html`` show), the file time
(``SOURCE_DATE_EPOCH``), the code and the libraries that format them. A rebuild after no
athlete changed has the very same inputs: counting, solving and writing them again (two
seconds of CPU on the bench, most of it GDAL's) would only give the same bytes. So the
manifest records a SHA-256 of those inputs with what the build wrote, and a rebuild
with the same digest links (or copies) the files from the PUBLISHED build instead, as
the tile cache does with unchanged tiles; its zip takes the published zip's deflated
entries of those files (the same bytes deflated the same way), and only the README and
``index.html`` are written anew.

The manifest names the build it describes by its full path, with each file's size and
modification time there: a manifest of a build never published (a snapshot that died
after its Metro writer), of another site sharing the ``state_dir``, or a published file
changed since, means writing everything. Not with a street base map (its records are
not in the digest): then every file is written, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import heatmetro.core
import heatmetro.state
from heatmetro.core.temp_files import temporary_for
from heatmetro.site_builder.code_digest import code_digest
from heatmetro.site_builder.metro_zip import Packed
from heatmetro.site_builder.window import WindowData

__all__ = ["OUTPUT_CACHE", "KeptFiles", "OutputCache", "output_cache_path"]

FORMAT = 1
OUTPUT_CACHE = "metro_output.json"  # one for every site: the name before it was per site
# What a data file's bytes are made with, besides the modules named ``metro*.py``.
_CODE = ("mix64.py",)
_CORE_CODE = ("months.py", "cells.py", "arrays.py", "sports.py")
_STATE_CODE = ("records.py", "street_network.py", "street_ops.py")
_LOCAL_HEADER = 30  # bytes of a zip entry's local header before its name and extra field
_LIBRARIES = ("numpy", "orjson", "h3", "pyogrio", "pyarrow")  # pyogrio's wheel holds GDAL


def _code() -> str:
    here = Path(__file__).resolve().parent
    core = Path(heatmetro.core.__file__).parent
    state = Path(heatmetro.state.__file__).parent
    files = sorted(here.glob("metro*.py")) + [here / n for n in _CODE]
    files += [core / n for n in _CORE_CODE] + [state / n for n in _STATE_CODE]
    return code_digest(files)


def _versions() -> dict[str, str]:
    out = {"python": sys.version, "zlib": zlib.ZLIB_RUNTIME_VERSION}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "none"
    return out


def inputs_digest(window: WindowData, settings: Any, when: datetime) -> str:
    """SHA-256 of everything a Metro data file depends on (``settings``: a
    ``metro.MetroSettings``; its build date is left out)."""
    h = hashlib.sha256()
    head = {
        "format": FORMAT,
        "code": _code(),
        "versions": _versions(),
        "settings": {**dataclasses.asdict(settings), "build_date": None},
        "when": when.isoformat(),
        "window": [window.month, window.first_month, window.month_in_progress],
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for table in ("edges", "hexagons", "od"):
        for layer, arr in getattr(window, table).items():
            h.update(f"\0{table}\0{layer}\0{arr.dtype.descr!r}\0{arr.shape!r}\0".encode())
            h.update(np.ascontiguousarray(arr).view(np.uint8).data)
    return h.hexdigest()


@dataclass(frozen=True)
class KeptFiles:
    """The published build's files with this build's inputs: ``paths`` by name, each
    one's ``packed`` zip entry, the rows per file and the chart's totals."""

    paths: dict[str, Path]
    packed: dict[str, Packed]
    rows: dict[str, int]
    totals: dict[str, dict[str, int]]
    gpkg_tables: list[str]


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _zip_entries(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Per member name (without its folder): ``(size, crc, deflated bytes)`` as stored."""
    out = {}
    with path.open("rb") as fh, zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 1:
                continue
            fh.seek(info.header_offset)
            header = fh.read(_LOCAL_HEADER)
            if header[:4] != b"PK\x03\x04":
                continue
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            fh.seek(name_len + extra_len, os.SEEK_CUR)
            deflated = fh.read(info.compress_size)
            out[info.filename.split("/", 1)[-1]] = (info.file_size, info.CRC, deflated)
    return out


def output_cache_path(state_dir: Path, final: Path) -> Path:
    """The manifest of the site whose build's Metro folder will be ``final``
    (``.NAME.builds/<build>/metro``): one per site, as the tile manifests are, so two
    ``out_dir``s sharing a ``state_dir`` keep their own instead of replacing each other's."""
    site = hashlib.sha256(str(final.parent.parent).encode()).hexdigest()[:12]
    return state_dir / f"metro_output.{site}.json"


class OutputCache:
    """``path``: the manifest; ``published``: the served build's Metro folder (None:
    no build served); ``this``: this build's Metro folder as it will be published;
    ``reuse``: take files from the published build (False: write all, save the manifest)."""

    def __init__(self, path: Path, published: Path | None, this: Path, *, reuse: bool) -> None:
        self.path, self.published, self.this, self.use = path, published, this, reuse

    def kept(self, digest: str, zip_name: str) -> KeptFiles | None:
        """The published build's data files, if they were written from these inputs and
        are as that build left them; else None."""
        if not self.use or self.published is None:
            return None
        try:
            meta = json.loads(self.path.read_bytes())
            if (meta.get("format") != FORMAT or meta.get("inputs") != digest
                    or meta.get("build") != str(self.published)):  # fmt: skip
                return None
            files: dict[str, Any] = meta["files"]
            paths = {name: self.published / name for name in files}
            if any(_stat(paths[name]) != files[name]["stat"] for name in files):
                return None
            if _stat(self.published / zip_name) != meta["zip"]:
                return None
            entries = _zip_entries(self.published / zip_name)
            packed = {}
            for name, known in files.items():
                size, crc, deflated = entries[name]
                if [size, crc] != [known["stat"][0], known["crc"]]:
                    return None
                packed[name] = Packed(size, crc, deflated, known["sha256"])
            return KeptFiles(
                paths, packed, {str(k): int(v) for k, v in meta["rows"].items()},
                meta["totals"], [str(t) for t in meta["gpkg_tables"]],
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            return None

    def save(
        self,
        digest: str | None,
        metro_dir: Path,
        files: dict[str, Packed],
        zip_name: str,
        rows: dict[str, int],
        totals: dict[str, dict[str, int]],
        gpkg_tables: list[str],
    ) -> None:
        """What this build wrote into ``metro_dir`` (``files``: its data files, packed;
        ``zip_name``: the zip) from inputs ``digest`` (None: nothing to keep, the old
        manifest removed)."""
        if digest is None:
            self.path.unlink(missing_ok=True)
            return
        meta = {
            "format": FORMAT,
            "inputs": digest,
            "build": str(self.this),
            "files": {
                name: {"stat": _stat(metro_dir / name), "crc": p.crc, "sha256": p.sha256}
                for name, p in files.items()
            },  # fmt: skip
            "zip": _stat(metro_dir / zip_name),
            "rows": rows,
            "totals": totals,
            "gpkg_tables": gpkg_tables,
        }
        tmp = temporary_for(self.path)
        try:
            tmp.write_bytes(json.dumps(meta).encode())  # in order: the chart's layers
            tmp.replace(self.path)
        except OSError:  # the next build writes every file
            tmp.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
