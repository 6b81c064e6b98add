"""A PMTiles archive writer giving the ``pmtiles`` package's bytes, at numpy speed.

The package's ``Writer`` keeps an ``Entry`` object per tile and writes its directories one
varint at a time through ``BytesIO`` (~15 µs a tile, a tenth of drawing it). This one
keeps the entries in lists and encodes each directory's varints in whole-array passes;
everything else (run-length entries, content deduplication, leaf directories, the header,
gzip) follows the package's ``writer.py`` step by step, so the archive is byte for byte
the package's (``tests/test_pmtiles_writer.py`` compares them).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np
from pmtiles.tile import Compression, serialize_header, tileid_to_zxy

__all__ = ["ArchiveWriter", "serialize_directory", "varints"]

#: The package's room for the root directory: the first 16 kB less the header.
ROOT_ROOM = 16384 - 127
#: The package's first try at tiles per leaf directory (doubled until the root fits).
LEAF_SIZE = 4096


def varints(values: np.ndarray) -> np.ndarray:
    """The unsigned LEB128 varints of ``values`` (non-negative), concatenated, as uint8."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    size = np.ones(v.size, dtype=np.int64)
    rest = v >> np.uint64(7)
    while rest.any():
        size += rest > 0
        rest >>= np.uint64(7)
    out = np.zeros(int(size.sum()), dtype=np.uint8)
    pos = np.cumsum(size) - size
    for k in range(int(size.max(initial=0))):
        has = np.flatnonzero(size > k)
        low = ((v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = (size[has] > k + 1).astype(np.uint8) << 7
        out[pos[has] + k] = low | more
    return out


def serialize_directory(
    tile_id: np.ndarray, offset: np.ndarray, length: np.ndarray, run_length: np.ndarray
) -> bytes:
    """As ``pmtiles.tile.serialize_directory`` of the entries given column by column."""
    n = tile_id.size
    tile_id = tile_id.astype(np.uint64)
    offset = offset.astype(np.uint64)
    length = length.astype(np.uint64)
    delta = np.diff(tile_id, prepend=np.uint64(0))
    # An offset right after the previous entry's tile is written as 0, others as offset + 1.
    follows = np.zeros(n, dtype=bool)
    follows[1:] = offset[1:] == offset[:-1] + length[:-1]
    coded = np.where(follows, np.uint64(0), offset + np.uint64(1))
    parts = (np.array([n]), delta, run_length, length, coded)
    body = varints(np.concatenate([np.asarray(p, dtype=np.uint64) for p in parts]))
    return gzip.compress(body.tobytes(), mtime=0)


class ArchiveWriter:
    """``pmtiles.writer.Writer``'s interface and bytes; tile data held in memory (a city's
    archive is a few megabytes)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self._ids: list[int] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._runs: list[int] = []
        self._chunks: list[bytes] = []
        self._where: dict[bytes, int] = {}  # content -> its offset (stored once)
        self.offset = 0
        self.addressed_tiles = 0
        self.clustered = True

    def write_tile(self, tileid: int, data: bytes) -> None:
        self.write_tiles([tileid], [data])

    def write_tiles(self, tile_ids: list[int], blobs: list[bytes]) -> None:
        """Tiles in the order given (ascending ids make a clustered archive)."""
        ids, offsets, lengths, runs = self._ids, self._offsets, self._lengths, self._runs
        where = self._where
        for tileid, data in zip(tile_ids, blobs, strict=True):
            if ids and tileid < ids[-1]:
                self.clustered = False
            found = where.get(data)
            if found is None:
                self._chunks.append(data)
                ids.append(tileid)
                offsets.append(self.offset)
                lengths.append(len(data))
                runs.append(1)
                where[data] = self.offset
                self.offset += len(data)
            elif tileid == ids[-1] + runs[-1] and offsets[-1] == found:
                runs[-1] += 1
            else:
                ids.append(tileid)
                offsets.append(found)
                lengths.append(len(data))
                runs.append(1)
        self.addressed_tiles += len(tile_ids)

    def finalize(self, header: dict[str, Any], metadata: Mapping[str, object]) -> None:
        """Header, root directory, metadata, leaf directories, tile data: as the package."""
        ids = np.array(self._ids, dtype=np.uint64)
        order = np.argsort(ids, kind="stable")
        cols = [
            ids[order],
            *(
                np.array(c, dtype=np.uint64)[order]
                for c in (self._offsets, self._lengths, self._runs)
            ),
        ]
        header["addressed_tiles_count"] = self.addressed_tiles
        header["tile_entries_count"] = ids.size
        header["tile_contents_count"] = len(self._where)
        header["min_zoom"] = tileid_to_zxy(int(cols[0][0]))[0]
        header["max_zoom"] = tileid_to_zxy(int(cols[0][-1]))[0]
        root, leaves = _directories(*cols)
        meta = gzip.compress(json.dumps(metadata).encode(), mtime=0)
        header["clustered"] = self.clustered
        header["internal_compression"] = Compression.GZIP
        header["root_offset"] = 127
        header["root_length"] = len(root)
        header["metadata_offset"] = 127 + len(root)
        header["metadata_length"] = len(meta)
        header["leaf_directory_offset"] = 127 + len(root) + len(meta)
        header["leaf_directory_length"] = len(leaves)
        header["tile_data_offset"] = 127 + len(root) + len(meta) + len(leaves)
        header["tile_data_length"] = self.offset
        self.f.write(serialize_header(header))  # type: ignore[arg-type]
        self.f.write(root)
        self.f.write(meta)
        self.f.write(leaves)
        self.f.write(b"".join(self._chunks))


def _directories(
    tile_id: np.ndarray, offset: np.ndarray, length: np.ndarray, run_length: np.ndarray
) -> tuple[bytes, bytes]:
    """``(root, leaves)``: as the package's ``optimize_directories`` (one root if it fits,
    else leaves of 4096 entries, doubled until the root of the leaves fits)."""
    whole = serialize_directory(tile_id, offset, length, run_length)
    if len(whole) < ROOT_ROOM:
        return whole, b""
    size = LEAF_SIZE
    while True:
        leaves: list[bytes] = []
        at: list[int] = []
        done = 0
        for i in range(0, tile_id.size, size):
            part = slice(i, i + size)
            leaf = serialize_directory(tile_id[part], offset[part], length[part], run_length[part])
            at.append(done)
            leaves.append(leaf)
            done += len(leaf)
        firsts = tile_id[::size]
        lens = np.array([len(b) for b in leaves], dtype=np.uint64)
        root = serialize_directory(
            firsts, np.array(at, dtype=np.uint64), lens, np.zeros(firsts.size, dtype=np.uint64)
        )
        if len(root) < ROOT_ROOM:
            return root, b"".join(leaves)
        size *= 2
