"""Arrays in plain files written once under a name never used again, read back as views of
one memory map: the pieces of the window cache (``window_cache_files``).

A file is the arrays' bytes, each at an offset aligned to 64, then a footer naming the
file's token and size. The file has no header: where each array lies (offset and count)
is kept by whoever refers to the file (the cache's manifest), with the dtype it expects.
Reading checks the size and the footer, so a file torn by a crash (shorter, or never
finished: no footer) or another file under the name raises instead of reading as valid.
Nothing is checksummed: a check of every byte would cost more than the read it saves.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from heatmetro.core.spliced_rows import SplicedRows

__all__ = ["FileLayout", "map_arrays", "new_token", "write_arrays"]

_MAGIC = b"HMWCACHE"
_FOOTER = struct.Struct("<8s16sQ")  # magic, token (its 16 hex digits), size of the file
_ALIGN = 64

#: Per array name: (offset in the file, number of items).
FileLayout = dict[str, tuple[int, int]]


def new_token() -> str:
    """A fresh file token (16 hex digits): names are never reused, so a reader holding
    the old manifest never finds other bytes under a name it knows."""
    return os.urandom(8).hex()


def write_arrays(
    path: Path, token: str, arrays: dict[str, np.ndarray | SplicedRows]
) -> tuple[int, FileLayout]:
    """Write ``arrays`` (1-d) to the new file ``path`` (it must not exist); its size and
    where each array went. A failure removes the file."""
    layout: FileLayout = {}
    offset = 0
    try:
        with path.open("xb") as fh:
            for name, arr in arrays.items():
                pad = -offset % _ALIGN
                if pad:
                    fh.write(bytes(pad))
                    offset += pad
                if isinstance(arr, SplicedRows):  # a piece at a time, never whole
                    layout[name] = (offset, len(arr))
                    for piece in arr.pieces():
                        fh.write(piece.view(np.uint8).data)
                    offset += arr.nbytes
                    continue
                flat = np.ascontiguousarray(arr).reshape(-1)
                layout[name] = (offset, len(flat))
                if flat.nbytes:
                    fh.write(flat.view(np.uint8).data)  # no copy: the array's own buffer
                offset += flat.nbytes
            size = offset + _FOOTER.size
            fh.write(_FOOTER.pack(_MAGIC, token.encode(), size))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return size, layout


def map_arrays(
    path: Path, token: str, size: int, layout: FileLayout, dtypes: dict[str, np.dtype]
) -> dict[str, np.ndarray]:
    """The arrays ``layout`` places in ``path`` (of ``dtypes``), read-only views of one map.

    Raises:
        ValueError: the file is not the one written (size, footer), or an array lies
            outside it.
        OSError: it cannot be read (gone).
    """
    with path.open("rb") as fh:
        actual = os.fstat(fh.fileno()).st_size
        if actual != size or size < _FOOTER.size:
            msg = f"{path.name} is {actual:,} bytes, not {size:,}"
            raise ValueError(msg)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    magic, got, recorded = _FOOTER.unpack_from(mm, size - _FOOTER.size)
    if magic != _MAGIC or got != token.encode() or recorded != size:
        msg = f"{path.name} has no footer of its own (torn or replaced)"
        raise ValueError(msg)
    out: dict[str, np.ndarray] = {}
    end_of_data = size - _FOOTER.size
    for name, dtype in dtypes.items():
        offset, count = layout[name]
        if not (0 <= offset and 0 <= count and offset + count * dtype.itemsize <= end_of_data):
            msg = f"{path.name}: {name} lies outside the file"
            raise ValueError(msg)
        out[name] = np.frombuffer(mm, dtype=dtype, count=count, offset=offset)
    return out
