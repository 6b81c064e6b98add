"""Arrays of an uncompressed ``.npz`` file as views of one memory map, without copies.

``np.load`` reads each member through ``zipfile``: a copy of every byte, and a CRC-32
over it. The snapshot caches in ``state_dir`` are tens of megabytes written by
``np.savez`` (stored, not deflated), read again at every snapshot, where that cost
more than the rest of a small rebuild's window stage. Here each member's bytes are found
from the zip directory and its ``.npy`` header, and viewed in place. The views are
read-only; a file replaced later (caches are written to a new file, then renamed) does
not change them.
"""

from __future__ import annotations

import mmap
import struct
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["load_mapped"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"
#: A ``.npy`` header is at most this long (version 2/3: 4-byte length field, 64-aligned).
_NPY_HEADER_MAX = 1 << 16


def load_mapped(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (``np.savez``: members stored, not deflated)
    by name without ``.npy``, as read-only views of one memory map.

    Raises:
        ValueError: on a deflated member, an object array or a malformed file.
        OSError: when the file cannot be read.
    """
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        if not size:
            msg = f"{path.name} is empty"
            raise ValueError(msg)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        members = zipfile.ZipFile(fh).infolist()
    out: dict[str, np.ndarray] = {}
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED:
            msg = f"{path.name}: {info.filename} is compressed"
            raise ValueError(msg)
        sig, name_len, extra_len = _LOCAL_HEADER.unpack_from(mm, info.header_offset)
        if sig != _LOCAL_SIGNATURE:
            msg = f"{path.name}: no local header for {info.filename}"
            raise ValueError(msg)
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        end = start + info.file_size
        if end > size:
            msg = f"{path.name}: {info.filename} runs past the end of the file"
            raise ValueError(msg)
        head = BytesIO(mm[start : min(end, start + _NPY_HEADER_MAX)])
        version = npy_format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(head)
        else:
            msg = f"{path.name}: {info.filename} is .npy version {version}"
            raise ValueError(msg)
        if dtype.hasobject:
            msg = f"{path.name}: {info.filename} holds Python objects"
            raise ValueError(msg)
        count = int(np.prod(shape, dtype=np.int64))
        if head.tell() + count * dtype.itemsize != info.file_size:
            msg = f"{path.name}: {info.filename} is not as long as its header says"
            raise ValueError(msg)
        flat = np.frombuffer(mm, dtype=dtype, count=count, offset=start + head.tell())
        arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
        out[info.filename.removesuffix(".npy")] = arr
    return out
