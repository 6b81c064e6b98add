"""The Metro zip, its members deflated in a background thread as each one is written.

Deflating the files (~11 MB, half of it the GeoPackage) and hashing them was a fifth of
a rebuild's Metro writer, all at its very end, while the heat's process waited for it.
zlib, ``crc32`` and ``hashlib`` let go of the GIL on large buffers, so a thread deflates
the CSV and GeoJSON files while this one writes the next (the GeoPackage's own process
deflates it: ``pack``, adopted here), and each file is read once for its zip entry, CRC
and SHA-256 together. A file written from pieces in memory
(the edge files: a header, the rows' text, a tail) is not read at all: its pieces are
(``metro_files.write_pieces``), ~31 MB of the bench's ~47 MB not read back from disk.

The zip is byte for byte ``metro_files.write_zip``'s: the same zlib stream
(``compressobj(zip_level(name), DEFLATED, -15)`` over the whole file, as ``zipfile``
deflates one ``writestr``: zlib's stream does not depend on how its input is cut into
calls) under the same headers, which ``zipfile`` itself writes from the entries'
``ZipInfo`` (tested against ``write_zip``, with the files cut into pieces anywhere).
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

from heatmetro.site_builder.metro_files import Pieces, zip_info, zip_level

__all__ = ["Packed", "ZipPacker", "pack"]


@dataclass(frozen=True)
class Packed:
    """A file as its zip entry needs it, and its SHA-256 for the download list."""

    size: int
    crc: int
    deflated: bytes
    sha256: str


def pack(path: Path, pieces: Pieces | None = None) -> Packed:
    """``path``'s entry, from its bytes as ``pieces`` (if given) or as read."""
    if pieces is None:
        pieces = [path.read_bytes()]
    deflate = zlib.compressobj(zip_level(path.name), zlib.DEFLATED, -15)
    size, crc, digest, out = 0, 0, hashlib.sha256(), []
    for piece in pieces:
        size += len(piece) if isinstance(piece, bytes) else piece.nbytes
        crc = zlib.crc32(piece, crc)
        digest.update(piece)
        out.append(deflate.compress(piece))
    out.append(deflate.flush())
    return Packed(size, crc, b"".join(out), digest.hexdigest())


class ZipPacker:
    """``add`` each member once it is written for good; ``write`` the zip at the end;
    ``close`` always (a failed build stops the thread there)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metro-zip")
        self._packed: dict[Path, Future[Packed]] = {}

    def add(self, path: Path, pieces: Pieces | None = None) -> None:
        """Start deflating ``path`` (it must not change any more): its bytes as read,
        or as ``pieces`` (which must not change either), if given."""
        if path not in self._packed:
            self._packed[path] = self._pool.submit(pack, path, pieces)

    def adopt(self, path: Path, packed: Packed) -> None:
        """``path`` as already deflated (the published zip's entry of the same bytes)."""
        future: Future[Packed] = Future()
        future.set_result(packed)
        self._packed[path] = future

    def packed(self, path: Path) -> Packed:
        """``path`` deflated (now, if it was not added); what the thread raised, raised."""
        future = self._packed.get(path)
        return pack(path) if future is None else future.result()

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
