"""Where tiles go: a PNG tree (any static host) or one PMTiles archive per layer and tree.

Both keep privacy rule 8's split: zooms up to ``public_max_zoom`` in ``tiles/``, deeper
ones in ``members/tiles/``. Both can take a tile unchanged from the previous build
(``reuse``) instead of having it rendered again.

* ``png``: ``tiles/{layer}/{z}/{x}/{y}.png``; a reused tile is a hard link to the previous
  build's file (a copy across file systems).
* ``pmtiles``: ``tiles/{layer}.pmtiles``, written with the ``pmtiles`` package. Tiles are
  buffered one zoom at a time and written in tile-id order (a "clustered" archive);
  the archive's bytes depend only on the tiles, so builds are reproducible.
"""

from __future__ import annotations

import mmap
import os
import shutil
from pathlib import Path
from typing import Protocol

from pmtiles.tile import (
    Compression,
    TileType,
    deserialize_directory,
    deserialize_header,
    zxy_to_tileid,
)
from pmtiles.writer import Writer

__all__ = ["FORMATS", "PmtilesSink", "PngTreeSink", "TileSink", "make_sink"]

FORMATS = ("png", "pmtiles")


class TileSink(Protocol):
    def put(self, z: int, x: int, y: int, data: bytes) -> None: ...
    def reuse(self, z: int, x: int, y: int) -> bool: ...
    def close(self, bounds: tuple[float, float, float, float]) -> None: ...


def _tree(root: Path, z: int, public_max_zoom: int) -> Path:
    return root / "tiles" if z <= public_max_zoom else root / "members" / "tiles"


class PngTreeSink:
    """Tiles as files of a ``{z}/{x}/{y}.png`` tree."""

    def __init__(self, out_root: Path, layer: str, public_max_zoom: int, previous: Path | None):
        self.out_root, self.layer, self.public = out_root, layer, public_max_zoom
        self.previous = previous
        self._made: set[Path] = set()

    def _rel(self, z: int, x: int, y: int) -> Path:
        base = Path("tiles") if z <= self.public else Path("members", "tiles")
        return base / self.layer / str(z) / str(x) / f"{y}.png"

    def _target(self, z: int, x: int, y: int) -> Path:
        path = self.out_root / self._rel(z, x, y)
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        return path

    def put(self, z: int, x: int, y: int, data: bytes) -> None:
        self._target(z, x, y).write_bytes(data)

    def reuse(self, z: int, x: int, y: int) -> bool:
        if self.previous is None:
            return False
        src = self.previous / self._rel(z, x, y)
        dst = self._target(z, x, y)
        try:
            os.link(src, dst)
        except FileNotFoundError:
            return False
        except OSError:  # another file system, or no hard links: copy
            try:
                shutil.copyfile(src, dst)
            except FileNotFoundError:
                return False
        return True

    def close(self, bounds: tuple[float, float, float, float]) -> None:
        """Nothing to finish: every file is complete when written."""


class PmtilesSink:
    """Tiles in ``tiles/{layer}.pmtiles`` and ``members/tiles/{layer}.pmtiles``."""

    def __init__(self, out_root: Path, layer: str, public_max_zoom: int, previous: Path | None):
        self.out_root, self.layer, self.public = out_root, layer, public_max_zoom
        self._writers: dict[bool, tuple[Writer, object]] = {}
        self._zooms: dict[bool, tuple[int, int]] = {}
        self._zoom: int | None = None
        self._pending: list[tuple[int, bytes]] = []
        self._readers: dict[bool, tuple[mmap.mmap | None, dict[int, tuple[int, int]]]] = {}
        self._previous = previous

    def archive(self, members: bool, root: Path | None = None) -> Path:
        base = (root or self.out_root) / ("members/tiles" if members else "tiles")
        return base / f"{self.layer}.pmtiles"

    def _flush(self) -> None:
        if self._zoom is None or not self._pending:
            return
        members = self._zoom > self.public
        if members not in self._writers:
            path = self.archive(members)
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = path.open("wb")
            self._writers[members] = (Writer(fh), fh)
        writer = self._writers[members][0]
        for tile_id, data in sorted(self._pending):
            writer.write_tile(tile_id, data)
        lo, hi = self._zooms.get(members, (self._zoom, self._zoom))
        self._zooms[members] = (min(lo, self._zoom), max(hi, self._zoom))
        self._pending = []

    def put(self, z: int, x: int, y: int, data: bytes) -> None:
        if z != self._zoom:
            self._flush()
            self._zoom = z
        self._pending.append((zxy_to_tileid(z, x, y), data))

    def _index(self, members: bool) -> tuple[mmap.mmap | None, dict[int, tuple[int, int]]]:
        """The previous archive and where each of its tiles is (read once, not per tile)."""
        if members not in self._readers:
            path = self.archive(members, self._previous) if self._previous else None
            data, where = None, {}
            if path is not None and path.is_file() and path.stat().st_size:
                with path.open("rb") as fh:
                    data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                header = deserialize_header(data[:127])
                dirs = [(header["root_offset"], header["root_length"])]
                while dirs:
                    offset, length = dirs.pop()
                    for e in deserialize_directory(data[offset : offset + length]):
                        if e.run_length == 0:  # a leaf directory
                            dirs.append((header["leaf_directory_offset"] + e.offset, e.length))
                            continue
                        start = header["tile_data_offset"] + e.offset
                        for i in range(e.run_length):
                            where[e.tile_id + i] = (start, e.length)
            self._readers[members] = (data, where)
        return self._readers[members]

    def reuse(self, z: int, x: int, y: int) -> bool:
        data, where = self._index(z > self.public)
        found = where.get(zxy_to_tileid(z, x, y))
        if data is None or found is None:
            return False
        self.put(z, x, y, data[found[0] : found[0] + found[1]])
        return True

    def close(self, bounds: tuple[float, float, float, float]) -> None:
        """Write the archives' directories and headers."""
        self._flush()
        south, west, north, east = bounds
        for members, (writer, fh) in sorted(self._writers.items()):
            lo, hi = self._zooms[members]
            header = {
                "tile_type": TileType.PNG,
                "tile_compression": Compression.NONE,
                "min_lon_e7": int(round(west * 1e7)),
                "min_lat_e7": int(round(south * 1e7)),
                "max_lon_e7": int(round(east * 1e7)),
                "max_lat_e7": int(round(north * 1e7)),
                "center_zoom": lo,
                "center_lon_e7": int(round((west + east) / 2 * 1e7)),
                "center_lat_e7": int(round((south + north) / 2 * 1e7)),
            }
            meta = {"name": f"heatmetro {self.layer}", "attribution": "heatmetro"}
            writer.finalize(header, meta)
            fh.close()  # type: ignore[attr-defined]
        self._writers.clear()


def make_sink(
    fmt: str, out_root: Path, layer: str, public_max_zoom: int, previous: Path | None
) -> TileSink:
    """The sink for ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "png":
        return PngTreeSink(out_root, layer, public_max_zoom, previous)
    if fmt == "pmtiles":
        return PmtilesSink(out_root, layer, public_max_zoom, previous)
    msg = f"tiles_format = {fmt!r}: expected one of {', '.join(FORMATS)}"
    raise ValueError(msg)
