"""Where tiles go: a PNG tree (any static host) or one PMTiles archive per layer and tree.

Both keep privacy rule 8's split: zooms up to ``public_max_zoom`` in ``tiles/``, deeper
ones in ``members/tiles/``. Both can take a tile unchanged from the previous build
(``reuse``) instead of having it rendered again.

* ``png``: ``tiles/{layer}/{z}/{x}/{y}.png``; a reused tile is a hard link to the previous
  build's file (a copy across file systems).
* ``pmtiles``: ``tiles/{layer}.pmtiles``, the bytes the ``pmtiles`` package writes
  (``pmtiles_writer``). Tiles are buffered one zoom at a time and written in tile-id
  order (a "clustered" archive); the archive's bytes depend only on the tiles, so builds
  are reproducible.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
from pmtiles.tile import Compression, TileType, deserialize_header

from heatmetro.site_builder.hilbert import tile_ids, tile_zxy
from heatmetro.site_builder.pmtiles_directory import read_directory
from heatmetro.site_builder.pmtiles_writer import ArchiveWriter
from heatmetro.site_builder.raster import runs

__all__ = ["FORMATS", "PmtilesSink", "PngTreeSink", "TileSink", "make_sink"]

FORMATS = ("png", "pmtiles")
_Zxy = tuple[int, int, int]
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC


class TileSink(Protocol):
    def put(self, z: int, x: int, y: int, data: bytes) -> None: ...
    def reuse(self, z: int, x: int, y: int) -> bool: ...
    def take_whole(self, z: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool: ...
    def close(self, bounds: tuple[float, float, float, float]) -> None: ...


def _tree(root: Path, z: int, public_max_zoom: int) -> Path:
    return root / "tiles" if z <= public_max_zoom else root / "members" / "tiles"


class PngTreeSink:
    """Tiles as files of a ``{z}/{x}/{y}.png`` tree.

    Files are created relative to an open descriptor of each ``{tree}/{layer}`` folder,
    with bare ``os`` calls (open, write, close: three system calls a tile, no path
    objects), and each ``{z}/{x}`` folder is made once: creating 2,000+ small files is
    a good part of a snapshot's tile stage.
    """

    def __init__(self, out_root: Path, layer: str, public_max_zoom: int, previous: Path | None):
        self.out_root, self.layer, self.public = out_root, layer, public_max_zoom
        self.previous = previous
        self._roots: dict[bool, int] = {}  # members? -> descriptor of {tree}/{layer}
        # members? -> descriptor of the previous build's {tree}/{layer} (None: not there):
        # a link names its source relative to it, ~3x cheaper than by its whole path.
        self._previous_roots: dict[bool, int | None] = {}
        self._made: set[tuple[int, int]] = set()  # (z, x) folders made; (z, -1): z's

    def _base(self, z: int) -> str:
        return f"tiles/{self.layer}" if z <= self.public else f"members/tiles/{self.layer}"

    def _root(self, z: int, x: int) -> int:
        """Descriptor of the layer's folder in ``z``'s tree, ``{z}/{x}`` made in it."""
        members = z > self.public
        fd = self._roots.get(members)
        if fd is None:
            folder = self.out_root / self._base(z)
            folder.mkdir(parents=True, exist_ok=True)
            fd = self._roots[members] = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        if (z, x) not in self._made:
            for key, rel in (((z, -1), str(z)), ((z, x), f"{z}/{x}")):
                if key not in self._made:
                    try:
                        os.mkdir(rel, dir_fd=fd)
                    except FileExistsError:  # made by a forked worker
                        pass
                    self._made.add(key)
        return fd

    def put(self, z: int, x: int, y: int, data: bytes) -> None:
        root = self._root(z, x)
        fd = os.open(f"{z}/{x}/{y}.png", _CREATE, 0o666, dir_fd=root)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def put_copy(self, z: int, x: int, y: int, data: bytes, of: PngTreeSink) -> None:
        """Tile ``(z, x, y)`` with ``data``, the bytes ``of`` (another layer's sink) has just
        written there: a hard link to its file, as a reused tile is (creating a file costs
        many times more than linking one), else a file of its own."""
        rel = f"{z}/{x}/{y}.png"
        try:
            os.link(rel, rel, src_dir_fd=of._root(z, x), dst_dir_fd=self._root(z, x))
        except FileExistsError:
            raise
        except OSError:  # no hard links here
            self.put(z, x, y, data)

    def _previous_root(self, z: int) -> int | None:
        """Descriptor of the previous build's folder of the layer in ``z``'s tree."""
        members = z > self.public
        if members not in self._previous_roots:
            fd = None
            if self.previous is not None:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    folder = self.previous / self._base(z)
                    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
            self._previous_roots[members] = fd
        return self._previous_roots[members]

    def reuse(self, z: int, x: int, y: int) -> bool:
        previous = self._previous_root(z)
        if previous is None:
            return False
        rel = f"{z}/{x}/{y}.png"
        root = self._root(z, x)
        try:
            os.link(rel, rel, src_dir_fd=previous, dst_dir_fd=root)
        except FileNotFoundError:
            return False
        except OSError:  # another file system, or no hard links: copy
            assert self.previous is not None
            src = self.previous / self._base(z) / rel
            try:
                shutil.copyfile(src, self.out_root / self._base(z) / rel)
            except FileNotFoundError:
                return False
        return True

    def take_whole(self, z: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool:
        """Every tile ``(z, x, y)`` from the previous build, before any other tile is
        written; ``False``, and nothing of the layer left, if one is not there."""
        if all(self.reuse(*t) for t in zip(z.tolist(), x.tolist(), y.tolist(), strict=True)):
            return True
        self.close((0.0, 0.0, 0.0, 0.0))
        self._made.clear()
        for members in (False, True):  # links only: the previous build's files stay
            shutil.rmtree(self.out_root / self._base(self.public + members), ignore_errors=True)
        return False

    def close(self, bounds: tuple[float, float, float, float]) -> None:
        """Every file is complete when written: only the folders' descriptors to close."""
        for fd in self._roots.values():
            os.close(fd)
        self._roots.clear()
        for previous in self._previous_roots.values():
            if previous is not None:
                os.close(previous)
        self._previous_roots.clear()

    def __del__(self) -> None:  # an interrupted build: don't leak the descriptors
        self.close((0.0, 0.0, 0.0, 0.0))


class PmtilesSink:
    """Tiles in ``tiles/{layer}.pmtiles`` and ``members/tiles/{layer}.pmtiles``."""

    def __init__(self, out_root: Path, layer: str, public_max_zoom: int, previous: Path | None):
        self.out_root, self.layer, self.public = out_root, layer, public_max_zoom
        self._writers: dict[bool, tuple[ArchiveWriter, BinaryIO]] = {}
        self._zooms: dict[bool, tuple[int, int]] = {}
        self._zoom: int | None = None
        self._pending: list[tuple[int, int, bytes]] = []  # (x, y, data) of self._zoom
        # Per tree: the previous archive and where each of its tiles (z, x, y) is in it.
        self._readers: dict[bool, tuple[mmap.mmap | None, dict[_Zxy, tuple[int, int]]]] = {}
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
            self._writers[members] = (ArchiveWriter(fh), fh)
        writer = self._writers[members][0]
        xs, ys, blobs = zip(*self._pending, strict=True)
        ids = tile_ids(self._zoom, np.array(xs), np.array(ys))  # all at once: see hilbert
        order = np.argsort(ids, kind="stable").tolist()
        writer.write_tiles(ids[order].tolist(), [blobs[i] for i in order])
        lo, hi = self._zooms.get(members, (self._zoom, self._zoom))
        self._zooms[members] = (min(lo, self._zoom), max(hi, self._zoom))
        self._pending = []

    def put(self, z: int, x: int, y: int, data: bytes) -> None:
        if z != self._zoom:
            self._flush()
            self._zoom = z
        self._pending.append((x, y, data))

    def _index(self, members: bool) -> tuple[mmap.mmap | None, dict[_Zxy, tuple[int, int]]]:
        """The previous archive and where each of its tiles is (read once, not per tile)."""
        if members not in self._readers:
            path = self.archive(members, self._previous) if self._previous else None
            data, where = None, {}
            ids: list[np.ndarray] = []
            starts: list[np.ndarray] = []
            sizes: list[np.ndarray] = []
            if path is not None and path.is_file() and path.stat().st_size:
                with path.open("rb") as fh:
                    data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                header = deserialize_header(data[:127])
                dirs = [(header["root_offset"], header["root_length"])]
                while dirs:
                    offset, length = dirs.pop()
                    d = read_directory(data[offset : offset + length])
                    leaf = d.run_length == 0
                    base = header["leaf_directory_offset"]
                    dirs += zip(
                        (base + d.offset[leaf]).tolist(), d.length[leaf].tolist(), strict=True
                    )
                    run, i = runs(d.run_length[~leaf])
                    ids.append(d.tile_id[~leaf][run] + i)
                    starts.append(header["tile_data_offset"] + d.offset[~leaf][run])
                    sizes.append(d.length[~leaf][run])
                # The root directory is always read: each list holds one array at least.
                spans = zip(
                    np.concatenate(starts).tolist(), np.concatenate(sizes).tolist(), strict=True
                )
                z, x, y = tile_zxy(np.concatenate(ids))
                keys = zip(z.tolist(), x.tolist(), y.tolist(), strict=True)
                where = dict(zip(keys, spans, strict=True))
            self._readers[members] = (data, where)
        return self._readers[members]

    def reuse(self, z: int, x: int, y: int) -> bool:
        data, where = self._index(z > self.public)
        found = where.get((z, x, y))
        if data is None or found is None:
            return False
        self.put(z, x, y, data[found[0] : found[0] + found[1]])
        return True

    def take_whole(self, z: np.ndarray, x: np.ndarray, y: np.ndarray) -> bool:
        """The previous build's archives, whole (a hard link, else a copy), for a layer
        whose tiles ``(z, x, y)`` are all unchanged: an archive's bytes depend only on its
        tiles and bounds. ``False``, and nothing written, if an archive with tiles is not
        there."""
        if self._previous is None or self._writers:
            return False
        trees = sorted({bool(m) for m in (z > self.public).tolist()})
        sources = [self.archive(members, self._previous) for members in trees]
        if not all(src.is_file() for src in sources):
            return False
        for members, src in zip(trees, sources, strict=True):
            dst = self.archive(members)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # another file system, or no hard links: copy
                shutil.copyfile(src, dst)
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
            fh.close()
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
