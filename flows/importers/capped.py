"""Reading an uploaded file as a stream, decompressed on the fly, never past a size cap.

Uploaded files are hostile input: a 3 MB ``.gpx.gz`` can hold 3 GiB of zeros. Every
track file (plain, ``.gz``, a zip member, a ``.gz`` inside a zip) is read through
``CappedReader``, which counts the *uncompressed* bytes as they flow and stops the
read as soon as they pass the cap; parsers consume it incrementally, so peak memory
does not depend on the file's size. It also hashes the content for the activity id.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from typing import IO, BinaryIO

from heatmetro.core.errors import ImportFileError

DEFAULT_MAX_FILE_BYTES = 256 * 2**20  # uncompressed; a 24-hour 1 Hz GPX is ~15 MB
CHUNK = 1 << 16


def size_text(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


class FileTooLarge(ImportFileError):
    """The file's uncompressed content passes the cap."""


class CappedReader(io.RawIOBase):
    """The uncompressed content of ``raw`` (gunzipped when ``gz``), at most ``cap`` bytes.

    Raises (from ``read``):
        FileTooLarge: more than ``cap`` bytes came out.
        ImportFileError: the gzip stream is broken.
    """

    def __init__(self, raw: IO[bytes], cap: int, *, gz: bool) -> None:
        super().__init__()
        self.cap, self.gz = cap, gz
        self.stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw  # type: ignore[assignment]
        self.total = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.total

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        # Never ask for more than one byte past the cap: that byte is the proof.
        want = min(len(view), self.cap + 1 - self.total)
        try:
            data = self.stream.read(want)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            msg = f"broken gzip: {exc}"
            raise ImportFileError(msg) from None
        n = len(data)
        self.total += n
        if self.total > self.cap:
            msg = (
                f"refused: uncompressed content is larger than {size_text(self.cap)} "
                "(--max-file-bytes; a decompression bomb?)"
            )
            raise FileTooLarge(msg)
        view[:n] = data
        self.sha256.update(data)
        return n

    def drain(self) -> None:
        """Read the rest (still capped), so the hash covers the whole content."""
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return self.sha256.hexdigest()


def capped(raw: IO[bytes], cap: int, *, gz: bool) -> tuple[CappedReader, io.BufferedReader]:
    """The counting reader and a buffered view of it for parsers."""
    reader = CappedReader(raw, cap, gz=gz)
    return reader, io.BufferedReader(reader, CHUNK)
