"""Indexed-colour PNG encoding of heat tiles: fixed settings, no metadata, equal input -> equal bytes.

A tile is a ``(h, w)`` uint8 array of ramp levels (0 = no heat). It is written as an
indexed PNG whose palette is the colour ramp and whose ``tRNS`` chunk holds the ramp's
alphas, so it decodes to exactly the RGBA of the ramp. The encoder is a few lines
rather than Pillow: it is the hot loop of a snapshot, and skipping Pillow's image
objects and compressing with zlib-ng's run-length strategy makes it several times
faster for the sparse tiles a heatmap is made of.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from zlib_ng import zlib_ng

__all__ = ["PNG_SIGNATURE", "encode_indexed_png", "encode_scanlines", "png_header"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: zlib's ``Z_RLE`` strategy (matches at distance 1 only: runs of one value, which is what
#: a heat tile's rows are made of), run by zlib-ng: ~2x faster than zlib itself and than
#: libdeflate's fastest level, ~5% larger than the latter. There is no hash table, so
#: nothing but the input decides the stream: zlib gives the very same bytes (tested), and
#: builds stay byte-identical. ISA-L's level 1 was used before and dropped: in 2 of 11
#: bench builds it compressed one tile in thousands differently (a valid stream of the
#: same pixels with one other match distance).
DEFLATE_LEVEL = 1


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_IEND = _chunk(b"IEND", b"")
_IDAT_CRC = zlib.crc32(b"IDAT")


def png_header(lut: np.ndarray, width: int, height: int) -> bytes:
    """Signature, ``IHDR``, ``PLTE`` and ``tRNS`` of an indexed PNG with palette ``lut``.

    Args:
        lut: ``(256, 4)`` uint8 RGBA palette.
        width: image width in pixels.
        height: image height in pixels.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit, indexed
    lut = np.ascontiguousarray(lut, dtype=np.uint8)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"PLTE", lut[:, :3].tobytes())
        + _chunk(b"tRNS", lut[:, 3].tobytes())
    )


def encode_indexed_png(levels: np.ndarray, header: bytes) -> bytes:
    """PNG bytes of ``levels`` with a header from :func:`png_header` of the same size.

    Every row gets filter type 0 (none): the filters help photos, not flat heat.
    """
    h, w = levels.shape
    raw = np.zeros((h, w + 1), dtype=np.uint8)
    raw[:, 1:] = levels
    return encode_scanlines(raw, header)


def encode_scanlines(scanlines: np.ndarray, header: bytes) -> bytes:
    """PNG bytes of an image given as its filtered rows (``(h, w + 1)`` uint8, C order).

    The renderer draws straight into this layout (a 0 filter byte before each row), so
    the pixels are compressed where they lie: no copy, one ``IDAT`` chunk.
    """
    packer = zlib_ng.compressobj(DEFLATE_LEVEL, zlib_ng.DEFLATED, 15, 8, zlib_ng.Z_RLE)
    data = packer.compress(scanlines) + packer.flush()
    return b"".join(
        (
            header,
            struct.pack(">I", len(data)),
            b"IDAT",
            data,
            struct.pack(">I", zlib.crc32(data, _IDAT_CRC)),
            _IEND,
        )
    )
