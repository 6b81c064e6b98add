"""The tile encoder: the same pixels give the same PNG bytes, whatever lies around them.

A build is byte-identical to the build before only if compressing a tile depends on its
pixels alone: not on the reused buffer next to them, nor on what was compressed before.
ISA-L broke that once (see ``site_builder/png.py``); the run-length stream is also
checked against zlib's own, a second implementation of the same algorithm.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from heatmetro.site_builder.png import encode_scanlines, png_header
from heatmetro.site_builder.tile_colours import heat_ramp

SIZE = 256
HEADER = png_header(heat_ramp(), SIZE, SIZE)


def sparse_tile(seed: int, strokes: int) -> np.ndarray:
    """PNG scanlines (filter byte 0, then levels) of a tile with a few streaks of heat."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((SIZE, SIZE + 1), np.uint8)
    for _ in range(strokes):
        y, x = rng.integers(0, SIZE - 8, 2)
        h, w = rng.integers(1, 9, 2)
        rows[y : y + h, 1 + x : 1 + x + w] = rng.integers(1, 256)
    return rows


def idat(png: bytes) -> bytes:
    at = png.index(b"IDAT")
    (length,) = struct.unpack(">I", png[at - 4 : at])
    return png[at + 4 : at + 4 + length]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), strokes=st.integers(0, 60), slot=st.integers(0, 3))
def test_bytes_depend_on_the_pixels_alone(seed: int, strokes: int, slot: int) -> None:
    tile = sparse_tile(seed, strokes)
    alone = encode_scanlines(tile.copy(), HEADER)
    # The same pixels inside a reused batch buffer, other tiles' heat on both sides,
    # after other tiles were compressed.
    batch = np.stack([sparse_tile(seed + k + 1, 40) for k in range(4)])
    for other in batch:
        encode_scanlines(other, HEADER)
    batch[slot] = tile
    assert encode_scanlines(batch[slot], HEADER) == alone
    # zlib's own run-length strategy writes the very same stream.
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    assert idat(alone) == packer.compress(tile.tobytes()) + packer.flush()
    # And it is a PNG of these levels.
    with Image.open(io.BytesIO(alone)) as im:
        assert np.array_equal(np.asarray(im), tile[:, 1:])
