"""Heat tiles: the PNG pyramid of one layer, drawn from published H3 cell counts.

The cells given here already passed the privacy threshold (rule 7), so every one may be
drawn. Coarser zooms draw PARENT cells (``cell_to_parent`` of those published cells, heat
summed), never anything re-read from the store. Zooms up to ``public_max_zoom`` go to
``tiles/``, deeper ones to ``members/tiles/`` (rule 8).

Drawing, per zoom:

* each cell is a disc ("splat") centred on the cell centre, radius = the hexagon's
  circumradius in pixels (>= 1 px), in *global* pixel coordinates, so a pixel's value depends
  only on where it is and on the cells, never on which tile is being drawn: no seams;
* intensity is histogram-equalised (rank CDF of the zoom's cell heats) into [0.25, 1], so
  a quiet town and a busy city both read, and the faintest published street stays visible;
* overlapping splats take the maximum (they don't add up), then a "hot" ramp colours it.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from h3.api import basic_int as h3i
from PIL import Image

from heatmetro.core.cells import cell_centres
from heatmetro.site_builder.tile_math import (
    TILE_SIZE,
    cell_radius_m,
    lnglat_to_global_px,
    lnglat_to_tile,
    resolution_for_zoom,
    splat_radius_px,
    tile_bounds,
)

__all__ = [
    "TileStats",
    "encode_png",
    "equalise",
    "heat_ramp",
    "levels_to_rgba",
    "lnglat_to_global_px",
    "lnglat_to_tile",
    "tile_bounds",
    "write_heat_tiles",
]

#: Lowest intensity any published cell gets: the quietest street must still be seen.
MIN_INTENSITY = 0.25
#: Alpha of the faintest heat pixel; the top of the ramp is opaque.
MIN_ALPHA = 150
#: Colour stops of the "hot" ramp by intensity: dark red, red, orange, yellow, near-white.
_RAMP_STOPS: tuple[tuple[float, int, int, int], ...] = (
    (0.25, 110, 0, 0),
    (0.40, 190, 10, 0),
    (0.55, 240, 60, 0),
    (0.70, 255, 140, 0),
    (0.85, 255, 215, 40),
    (1.00, 255, 255, 225),
)
#: Candidate pixels generated per batch; bounds memory (~50 bytes each) at street zooms.
_BATCH_PIXELS = 1 << 20
_LAYER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class TileStats:
    """What :func:`write_heat_tiles` wrote.

    Attributes:
        tiles_per_zoom: tiles written per zoom, every zoom ``min_zoom..max_zoom`` present.
        bounds: ``(south, west, north, east)`` of the drawn cell centres in degrees
            (Leaflet's ``fitBounds`` order); all zero for empty input.
        seconds: wall time spent.
    """

    tiles_per_zoom: dict[int, int]
    bounds: tuple[float, float, float, float]
    seconds: float


@dataclass(frozen=True)
class _Level:
    """Cells of one H3 resolution with everything drawing needs (shared by zooms)."""

    lat: np.ndarray
    lng: np.ndarray
    radius_m: np.ndarray
    level: np.ndarray  # uint8 ramp index 64..255 (0 is "no heat")


def heat_ramp() -> np.ndarray:
    """The colour lookup table: ``(256, 4)`` uint8 RGBA indexed by ``round(255 * intensity)``.

    Index 0 is exactly transparent ``(0, 0, 0, 0)``; indices below ``255 * MIN_INTENSITY``
    are never drawn but still get the darkest colour so the table has no holes.
    """
    t = np.arange(256, dtype=np.float64) / 255.0
    stops = np.array(_RAMP_STOPS, dtype=np.float64)
    lut = np.empty((256, 4), dtype=np.uint8)
    for channel in range(3):
        lut[:, channel] = np.rint(np.interp(t, stops[:, 0], stops[:, channel + 1]))
    frac = np.clip((t - MIN_INTENSITY) / (1.0 - MIN_INTENSITY), 0.0, 1.0)
    lut[:, 3] = np.rint(MIN_ALPHA + (255 - MIN_ALPHA) * frac)
    lut[0] = 0
    return lut


_LUT = heat_ramp()
# The same table with each RGBA entry as one uint32: gathering 4-byte words is ~10x faster
# than gathering a (256, 4) table, and viewing back gives the bytes in the same order.
_LUT32 = np.ascontiguousarray(_LUT).view(np.uint32).reshape(256)
_PALETTE_RGB = _LUT[:, :3].tobytes()
_PALETTE_ALPHA = _LUT[:, 3].tobytes()


def equalise(heat: np.ndarray) -> np.ndarray:
    """Histogram-equalised intensity of each cell in ``[MIN_INTENSITY, 1]``.

    A cell's intensity is the fraction of cells whose heat is <= its own (the empirical
    CDF), so equal heats get equal intensities and the busiest cell gets 1. Ranks rather
    than raw counts keep a quiet town and a busy city both readable on one map.

    Args:
        heat: heat per cell (any real values).

    Returns:
        float64 intensities, same shape as ``heat``.
    """
    if heat.size == 0:
        return np.zeros(0, dtype=np.float64)
    _, inverse, counts = np.unique(heat, return_inverse=True, return_counts=True)
    cdf = np.cumsum(counts) / heat.size
    return MIN_INTENSITY + (1.0 - MIN_INTENSITY) * cdf[inverse.reshape(-1)]


def _sum_by_cell(cells: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique sorted cells with their heat summed (parents of many children, duplicates)."""
    unique, inverse = np.unique(cells, return_inverse=True)
    return unique, np.bincount(inverse.reshape(-1), weights=heat, minlength=unique.size)


def _levels(
    cells: np.ndarray, heat: np.ndarray, heat_resolution: int, resolutions: set[int]
) -> dict[int, _Level]:
    """Drawing inputs for every resolution needed, coarsening step by step.

    Parents are taken from the previous (finer, already aggregated) resolution rather than
    from the heat-resolution cells each time: fewer h3 calls, the same parents.
    """
    out: dict[int, _Level] = {}
    cur_cells, cur_heat, cur_res = cells, heat, heat_resolution
    for res in sorted(resolutions, reverse=True):
        if res < cur_res:
            parents = np.fromiter(
                (h3i.cell_to_parent(c, res) for c in cur_cells.tolist()),
                dtype=np.uint64,
                count=cur_cells.size,
            )
            cur_cells, cur_heat = _sum_by_cell(parents, cur_heat)
            cur_res = res
        lat, lng = cell_centres(cur_cells)
        out[res] = _Level(
            lat=lat,
            lng=lng,
            radius_m=cell_radius_m(cur_cells),
            level=np.rint(255.0 * equalise(cur_heat)).astype(np.uint8),
        )
    return out


def _cell_tile_pairs(
    px: np.ndarray, py: np.ndarray, radius: np.ndarray, z: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (cell, tile) whose splat bounding box touches the tile, sorted by tile.

    Returns ``(cell index, raw tile x, tile y, tile key)``. Raw x may be -1 or ``2**z`` for a
    splat crossing the antimeridian; the key uses the wrapped x so such pixels land in the
    tile on the other side of the world.
    """
    n = 1 << z
    tx0 = np.floor((px - radius) / TILE_SIZE).astype(np.int64)
    tx1 = np.floor((px + radius) / TILE_SIZE).astype(np.int64)
    ty0 = np.clip(np.floor((py - radius) / TILE_SIZE).astype(np.int64), 0, n - 1)
    ty1 = np.clip(np.floor((py + radius) / TILE_SIZE).astype(np.int64), 0, n - 1)
    nx = tx1 - tx0 + 1
    per_cell = nx * (ty1 - ty0 + 1)
    cell = np.repeat(np.arange(px.size, dtype=np.int64), per_cell)
    j = np.arange(cell.size, dtype=np.int64) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    tx_raw = tx0[cell] + j % nx[cell]
    ty = ty0[cell] + j // nx[cell]
    key = np.mod(tx_raw, n) * n + ty
    order = np.argsort(key, kind="stable")  # stable: deterministic order within a tile
    return cell[order], tx_raw[order], ty[order], key[order]


def _render_zoom(
    px: np.ndarray, py: np.ndarray, radius: np.ndarray, level: np.ndarray, z: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(x, y, levels)`` for every tile with heat at zoom ``z``, sorted by ``(x, y)``.

    ``levels`` is a ``(256, 256)`` uint8 array of ramp indices (0 = no heat).

    Splats are rasterised in batches of whole tiles (bounding memory at street zooms): each
    (cell, tile) pair writes the part of its disc inside that tile, as horizontal spans.
    """
    n = 1 << z
    cell, tx_raw, ty, key = _cell_tile_pairs(px, py, radius, z)
    # Upper bound of the pixels a pair writes: its disc's bounding square.
    cost = (2 * np.ceil(radius[cell]).astype(np.int64) + 2) ** 2
    tile_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    tile_end = np.r_[tile_start[1:], key.size]
    tile_cost = np.cumsum(np.add.reduceat(cost, tile_start))
    b0 = 0
    while b0 < tile_start.size:
        # Grow the batch by whole tiles up to the pixel budget (at least one tile).
        spent_before = int(tile_cost[b0 - 1]) if b0 else 0
        fit = int(np.searchsorted(tile_cost, spent_before + _BATCH_PIXELS, side="right"))
        b1 = max(b0 + 1, fit)
        sel = slice(int(tile_start[b0]), int(tile_end[b1 - 1]))
        c = cell[sel]
        buf = np.zeros((b1 - b0) * TILE_SIZE * TILE_SIZE, dtype=np.uint8)
        local_tile = _runs(tile_end[b0:b1] - tile_start[b0:b1])[0]
        _rasterise(
            buf,
            px=px[c] - (tx_raw[sel] * TILE_SIZE),  # tile-local, still exact in float64
            py=py[c] - (ty[sel] * TILE_SIZE),
            radius=radius[c],
            level=level[c],
            local_tile=local_tile,
        )
        tiles = buf.reshape(b1 - b0, TILE_SIZE, TILE_SIZE)
        lit = buf.reshape(b1 - b0, -1).any(axis=1)
        for t in np.flatnonzero(lit).tolist():
            k = int(key[tile_start[b0 + t]])
            yield k // n, k % n, tiles[t]
        b0 = b1


def _runs(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs of the given lengths: each element's run index and its offset in the run.

    ``_runs([2, 0, 3])`` is ``([0, 0, 2, 2, 2], [0, 1, 0, 1, 2])``: the vectorised form of
    ``for i, n in enumerate(lengths): for j in range(n)``.
    """
    run = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    return run, np.arange(run.size, dtype=np.int64) - starts[run]


def _rasterise(
    buf: np.ndarray,
    *,
    px: np.ndarray,
    py: np.ndarray,
    radius: np.ndarray,
    level: np.ndarray,
    local_tile: np.ndarray,
) -> None:
    """Max-composite splats into ``buf`` (tiles of 256x256, flattened), one span per row.

    Coordinates are relative to each pair's tile. A pixel is lit when its centre
    ``(x + 0.5, y + 0.5)`` lies within the radius of the cell centre; each row's span is
    computed from the cell alone and only then clipped to the tile, so the same pixel gets
    the same answer from either side of a tile border (no seams). ``maximum.at`` is used
    because, unlike fancy assignment, it is defined for repeated indices.
    """
    half = np.ceil(radius).astype(np.int64) + 1  # rows -half..half cover radius + 0.5
    rows_per = 2 * half + 1
    pair, dy = _runs(rows_per)
    y = np.floor(py).astype(np.int64)[pair] - half[pair] + dy
    dy2 = (y + 0.5 - py[pair]) ** 2
    keep = (y >= 0) & (y < TILE_SIZE) & (dy2 <= radius[pair] ** 2)
    pair, y = pair[keep], y[keep]
    w = np.sqrt(radius[pair] ** 2 - dy2[keep])
    x0 = np.maximum(np.ceil(px[pair] - w - 0.5).astype(np.int64), 0)
    x1 = np.minimum(np.floor(px[pair] + w - 0.5).astype(np.int64), TILE_SIZE - 1)
    length = np.maximum(x1 - x0 + 1, 0)
    row, dx = _runs(length)
    x = x0[row] + dx
    index = (local_tile[pair[row]] * TILE_SIZE + y[row]) * TILE_SIZE + x
    np.maximum.at(buf, index, level[pair[row]])


def levels_to_rgba(levels: np.ndarray) -> np.ndarray:
    """Colour a ``(256, 256)`` array of ramp indices: ``(256, 256, 4)`` uint8 RGBA."""
    return _LUT32[levels].view(np.uint8).reshape(*levels.shape, 4)


def encode_png(levels: np.ndarray, *, palette: bool = False) -> bytes:
    """PNG bytes of a tile, with fixed settings and no metadata: equal input, equal bytes.

    Args:
        levels: ``(256, 256)`` uint8 ramp indices.
        palette: write an indexed PNG (the ramp as palette, its alphas as ``tRNS``) instead
            of RGBA. It decodes to exactly the same RGBA pixels, is about half the size and
            about 4x faster to encode, since zlib sees one byte per pixel instead of four.
    """
    out = io.BytesIO()
    if palette:
        image = Image.fromarray(levels, "P")
        image.putpalette(_PALETTE_RGB)
        image.save(out, format="PNG", optimize=False, compress_level=6, transparency=_PALETTE_ALPHA)
    else:
        image = Image.fromarray(levels_to_rgba(levels), "RGBA")
        image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _write_tile(path: Path, levels: np.ndarray, palette: bool) -> None:
    path.write_bytes(encode_png(levels, palette=palette))


def write_heat_tiles(
    cells: np.ndarray,
    heat: np.ndarray,
    *,
    layer: str,
    out_root: Path,
    min_zoom: int,
    public_max_zoom: int,
    max_zoom: int,
    heat_resolution: int,
    palette: bool = False,
) -> TileStats:
    """Write the heat tile pyramid of one layer.

    Tiles go to ``out_root/tiles/{layer}/{z}/{x}/{y}.png`` for ``min_zoom..public_max_zoom``
    and ``out_root/members/tiles/{layer}/{z}/{x}/{y}.png`` above; only tiles with heat.

    Args:
        cells: uint64 H3 cells at ``heat_resolution``, already privacy-thresholded.
        heat: heat (activity counts) per cell.
        layer: layer name (``all``, ``ride``, ...), used as a directory name.
        out_root: the site being built.
        min_zoom: first zoom written.
        public_max_zoom: last zoom written under the public ``tiles/`` tree.
        max_zoom: last zoom written (under ``members/tiles/`` when above the public one).
        heat_resolution: H3 resolution of ``cells``.
        palette: write indexed PNGs (same pixels once decoded, half the bytes, ~4x faster
            to encode); see :func:`encode_png`. Default RGBA.

    Returns:
        Tiles written per zoom, the drawn bounds and the time taken.

    Raises:
        ValueError: on mismatched arrays, an unsafe layer name or inconsistent zooms.
    """
    started = time.perf_counter()
    cells = np.asarray(cells, dtype=np.uint64).reshape(-1)
    heat = np.asarray(heat, dtype=np.float64).reshape(-1)
    if cells.size != heat.size:
        msg = f"tiles {layer}: {cells.size} cells but {heat.size} heat values"
        raise ValueError(msg)
    if not _LAYER_NAME.fullmatch(layer):
        msg = f"tiles: layer name {layer!r} is not a safe directory name"
        raise ValueError(msg)
    if not 0 <= min_zoom <= max_zoom or not 0 <= heat_resolution <= 15:
        msg = f"tiles {layer}: bad zooms {min_zoom}..{max_zoom} or resolution {heat_resolution}"
        raise ValueError(msg)
    zooms = range(min_zoom, max_zoom + 1)
    counts = dict.fromkeys(zooms, 0)
    if cells.size == 0:
        return TileStats(tiles_per_zoom=counts, bounds=(0.0, 0.0, 0.0, 0.0), seconds=0.0)

    cells, heat = _sum_by_cell(cells, heat)  # tolerate duplicates: they are one cell
    res_of = {z: resolution_for_zoom(z, heat_resolution) for z in zooms}
    levels = _levels(cells, heat, heat_resolution, set(res_of.values()) | {heat_resolution})
    top = levels[heat_resolution]
    bounds = (
        float(top.lat.min()),
        float(top.lng.min()),
        float(top.lat.max()),
        float(top.lng.max()),
    )

    # PNG encoding is most of the time and Pillow releases the GIL while it compresses:
    # encode on threads. The bytes do not depend on the order, so the output stays
    # deterministic. Only a few tiles per worker wait, bounding memory at street zooms.
    workers = min(4, os.cpu_count() or 1)
    pending: deque[Future[None]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for z in zooms:
            lvl = levels[res_of[z]]
            root = out_root / "tiles" if z <= public_max_zoom else out_root / "members" / "tiles"
            zdir = root / layer / str(z)
            px, py = lnglat_to_global_px(lvl.lng, lvl.lat, z)
            radius = splat_radius_px(lvl.radius_m, lvl.lat, z)
            made: set[int] = set()
            for x, y, tile in _render_zoom(px, py, radius, lvl.level, z):
                if x not in made:
                    (zdir / str(x)).mkdir(parents=True, exist_ok=True)
                    made.add(x)
                pending.append(pool.submit(_write_tile, zdir / str(x) / f"{y}.png", tile, palette))
                counts[z] += 1
                while len(pending) > 4 * workers:
                    pending.popleft().result()  # also surfaces write errors
        while pending:
            pending.popleft().result()
    return TileStats(tiles_per_zoom=counts, bounds=bounds, seconds=time.perf_counter() - started)
