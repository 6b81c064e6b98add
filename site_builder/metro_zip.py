"""The Metro zip, its members deflated in a background thread as each one is written.

Deflating the files (~11 MB, half of it the GeoPackage) and hashing them was a fifth of
a rebuild's Metro writer, all at its very end, while the heat's process waited for it.
zlib, ``crc32`` and ``hashlib`` let go of the GIL on large buffers, so a thread deflates
the CSV and GeoJSON files while this one writes the GeoPackage, and each file is read
once for its zip entry, CRC and SHA-256 together.

The zip is byte for byte ``metro_files.write_zip``'s: the same zlib stream
(``compressobj(ZIP_LEVEL, DEFLATED, -15)`` over the whole file, as ``zipfile`` deflates
one ``writestr``) under the same headers, which ``zipfile`` itself writes from the
entries' ``ZipInfo`` (tested against ``write_zip``).
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from heatmetro.site_builder.metro_files import ZIP_LEVEL, zip_info

__all__ = ["Packed", "ZipPacker", "pack"]


@dataclass(frozen=True)
class Packed:
    """A file as its zip entry needs it, and its SHA-256 for the download list."""

    size: int
    crc: int
    deflated: bytes
    sha256: str


def pack(path: Path, level: int = ZIP_LEVEL) -> Packed:
    data = path.read_bytes()
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    deflated = deflate.compress(data) + deflate.flush()
    return Packed(len(data), zlib.crc32(data), deflated, hashlib.sha256(data).hexdigest())


class ZipPacker:
    """``add`` each member once it is written for good; ``write`` the zip at the end;
    ``close`` always (a failed build stops the thread there)."""

    def __init__(self, level: int = ZIP_LEVEL) -> None:
        self.level = level
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metro-zip")
        self._packed: dict[Path, Future[Packed]] = {}

    def add(self, path: Path) -> None:
        """Start deflating ``path`` (it must not change any more)."""
        if path not in self._packed:
            self._packed[path] = self._pool.submit(pack, path, self.level)

    def adopt(self, path: Path, packed: Packed) -> None:
        """``path`` as already deflated (the published zip's entry of the same bytes)."""
        future: Future[Packed] = Future()
        future.set_result(packed)
        self._packed[path] = future

    def packed(self, path: Path) -> Packed:
        """``path`` deflated (now, if it was not added); what the thread raised, raised."""
        future = self._packed.get(path)
        return pack(path, self.level) if future is None else future.result()

    def write(self, path: Path, folder: str, members: Sequence[Path], when: datetime) -> None:
        """``metro_files.write_zip(path, folder, members, when)``, from the packed members.
        (A new zip in mode ``w`` writes its central directory on close, from ``filelist``.)"""
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            fp = zf.fp
            assert fp is not None
            for member in sorted(members, key=lambda p: p.name):
                packed = self.packed(member)
                info = zip_info(f"{folder}/{member.name}", when)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.flag_bits = 0
                info.file_size, info.compress_size = packed.size, len(packed.deflated)
                info.CRC = packed.crc
                # As ``zipfile`` decides for an entry of this size (and so never, here).
                zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT
                if not zip64 and info.compress_size > zipfile.ZIP64_LIMIT:
                    msg = "Compressed size too large"
                    raise RuntimeError(msg)
                info.header_offset = fp.tell()
                fp.write(info.FileHeader(zip64))
                fp.write(packed.deflated)
                # What ``ZipFile.close`` writes the central directory from.
                zf.filelist.append(info)
                zf.NameToInfo[info.filename] = info
                zf.start_dir = fp.tell()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
