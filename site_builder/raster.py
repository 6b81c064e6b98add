"""Rasterising cells into tiles: which cells touch which tile, and the pixels they light.

Each cell is a disc ("splat") centred on the cell centre in *global* pixel coordinates,
so a pixel's value depends only on where it is and on the cells, never on which tile is
being drawn: no seams. Overlapping splats take the maximum level (they don't add up).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from heatmetro.site_builder.tile_math import TILE_SIZE

__all__ = ["ROW_BYTES", "TILE_BYTES", "ZoomPlan", "plan_zoom", "rasterise", "render_tiles", "runs"]

#: Candidate pixels generated per batch; bounds memory (~50 bytes each) at street zooms.
BATCH_PIXELS = 1 << 20


@dataclass(frozen=True)
class ZoomPlan:
    """Every (cell, tile) pair of one zoom, grouped by tile (tiles sorted by ``(x, y)``).

    Attributes:
        z: the zoom.
        px, py, radius, level: per cell, global pixel centre, splat radius, ramp level.
        pair_cell: cell index of each pair, grouped by tile.
        pair_tx, pair_ty: the pair's tile column (raw: -1 or ``2**z`` across the
            antimeridian) and row.
        tile_key: ``x * 2**z + y`` of each tile with at least one pair (wrapped x).
        tile_start, tile_end: each tile's slice of the pair arrays.
        pair_px, pair_py, pair_radius, pair_level: each pair's splat as drawn, in its
            tile's pixels (exact in float64): gathered once here, so drawing a run of
            tiles reads slices instead of gathering per batch.
        tile_cost: cumulative count, over the tiles, of the pixels in their pairs'
            bounding squares (what a batch of tiles may write at most).
    """

    z: int
    px: np.ndarray
    py: np.ndarray
    radius: np.ndarray
    level: np.ndarray
    pair_cell: np.ndarray
    pair_tx: np.ndarray
    pair_ty: np.ndarray
    tile_key: np.ndarray
    tile_start: np.ndarray
    tile_end: np.ndarray
    pair_px: np.ndarray
    pair_py: np.ndarray
    pair_radius: np.ndarray
    pair_level: np.ndarray
    tile_cost: np.ndarray

    def tile_xy(self, t: int) -> tuple[int, int]:
        k = int(self.tile_key[t])
        n = 1 << self.z
        return k // n, k % n


def runs(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs of the given lengths: each element's run index and its offset in the run.

    ``runs([2, 0, 3])`` is ``([0, 0, 2, 2, 2], [0, 1, 0, 1, 2])``: the vectorised form of
    ``for i, n in enumerate(lengths): for j in range(n)``.
    """
    return expand(np.zeros(lengths.size, dtype=np.int64), lengths)


def plan_zoom(
    px: np.ndarray, py: np.ndarray, radius: np.ndarray, level: np.ndarray, z: int
) -> ZoomPlan:
    """Every (cell, tile) whose splat bounding box touches the tile, grouped by tile.

    Within a tile the order of the pairs is fixed by the input but otherwise arbitrary:
    nothing drawn or digested depends on it (maxima and order-free sums).
    """
    n = 1 << z
    inv = 1.0 / TILE_SIZE  # exact: the same floors as dividing
    tx0 = np.floor((px - radius) * inv).astype(np.int64)
    tx1 = np.floor((px + radius) * inv).astype(np.int64)
    ty0 = np.clip(np.floor((py - radius) * inv).astype(np.int64), 0, n - 1)
    ty1 = np.clip(np.floor((py + radius) * inv).astype(np.int64), 0, n - 1)
    nx, ny = tx1 - tx0 + 1, ty1 - ty0 + 1
    # Most splats lie in one tile; only those crossing a border are expanded.
    multi = np.flatnonzero((nx > 1) | (ny > 1))
    if multi.size:
        single = np.flatnonzero((nx == 1) & (ny == 1))
        m, j = runs(nx[multi] * ny[multi])
        crossing = multi[m]
        cell = np.concatenate([single, crossing])
        tx_raw = np.concatenate([tx0[single], tx0[crossing] + j % nx[crossing]])
        ty = np.concatenate([ty0[single], ty0[crossing] + j // nx[crossing]])
    else:
        cell, tx_raw, ty = np.arange(px.size, dtype=np.int64), tx0, ty0
    wx = tx_raw & (n - 1)  # wraps -1 and n across the antimeridian (n is a power of 2)
    order = _tile_order(wx, ty)
    cell, tx_raw, ty = cell[order], tx_raw[order], ty[order]
    key = wx[order] * n + ty
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.zeros(0, int)
    end = np.r_[start[1:], key.size].astype(np.int64)
    pair_radius = radius[cell]
    side = 2.0 * np.ceil(pair_radius) + 2.0
    cost = np.cumsum(np.add.reduceat(side * side, start)) if key.size else np.zeros(0)
    return ZoomPlan(
        z, px, py, radius, level, cell, tx_raw, ty, key[start], start, end,
        pair_px=px[cell] - tx_raw * TILE_SIZE, pair_py=py[cell] - ty * TILE_SIZE,
        pair_radius=pair_radius, pair_level=level[cell], tile_cost=cost,
    )  # fmt: skip


def _tile_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A stable order by ``(x, y)``: a radix sort of 16-bit ranks when the tiles span few
    enough (a city), else a merge sort of the 64-bit keys."""
    if x.size == 0:
        return np.zeros(0, dtype=np.int64)
    x0, y0 = int(x.min()), int(y.min())
    height = int(y.max()) - y0 + 1
    if (int(x.max()) - x0 + 1) * height <= 1 << 16:
        rank = ((x - x0) * height + (y - y0)).astype(np.uint16)
        return np.argsort(rank, kind="stable")
    return np.argsort(x * (int(y.max()) + 1) + y, kind="stable")


#: Bytes of one tile as PNG scanlines: 256 rows of a filter byte (0) and 256 levels.
ROW_BYTES = TILE_SIZE + 1
TILE_BYTES = TILE_SIZE * ROW_BYTES
#: Tiles drawn per batch at most: bounds the reused buffer (16 x 66 kB: it stays in a core's cache).
BATCH_TILES = 16
# Far above the rounding error of pixel coordinates (< 1e-9 px below zoom 30), far below
# a pixel: widens the candidate rows so that rounding never hides a row from the exact test.
_HAIR = 1e-6
#: Candidate rows are laid out as a (rows, pairs) grid when it holds at most this many
#: times the rows there are (splats of one size); else each pair's rows are expanded.
GRID_SPARE = 2
# One spare tile buffer per process, reused by the next call: a fresh buffer would be paged
# in (zeroed by the kernel) on every batch, which costs more than drawing into it.
_SPARE: list[np.ndarray] = []


def render_tiles(plan: ZoomPlan, tiles: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(tile index, scanlines)`` for the given tiles of ``plan`` that have heat.

    ``scanlines`` is a ``(256, 257)`` uint8 array laid out as a PNG image's filtered
    rows: a filter byte 0 ("none"), then the row's 256 ramp indices (0 = no heat), so
    ``scanlines[:, 1:]`` are the levels and the PNG encoder compresses the array as it is.
    It is valid until the next tile is asked for (the buffer is reused). Tiles are
    rasterised in batches up to a tile count and a pixel budget (bounding memory at
    street zooms).
    """
    tiles = np.asarray(tiles, dtype=np.int64)
    if tiles.size == 0:
        return
    if bool((np.diff(tiles) == 1).all()):
        # A run of tiles (a full build's jobs): their pairs are one slice of the plan.
        first, last = int(tiles[0]), int(tiles[-1])
        lo = int(plan.tile_start[first])
        pair_bounds = plan.tile_start[first : last + 1] - lo
        pair_bounds = np.r_[pair_bounds, plan.tile_end[last] - lo]
        take: slice | np.ndarray = slice(lo, int(plan.tile_end[last]))
        t_of = np.repeat(np.arange(tiles.size), np.diff(pair_bounds))
        before = float(plan.tile_cost[first - 1]) if first else 0.0
        cost = plan.tile_cost[first : last + 1] - before
    else:
        n_pairs = plan.tile_end[tiles] - plan.tile_start[tiles]
        t_of, off = runs(n_pairs)
        take = plan.tile_start[tiles][t_of] + off
        pair_bounds = np.r_[0, np.cumsum(n_pairs)]
        own = np.diff(np.r_[0.0, plan.tile_cost])[tiles]
        cost = np.cumsum(own)
    px, py = plan.pair_px[take], plan.pair_py[take]
    radius, level = plan.pair_radius[take], plan.pair_level[take]
    spare = _SPARE.pop() if _SPARE else None
    if spare is not None and len(spare) >= BATCH_TILES:
        buf = spare
    else:
        buf = np.zeros((BATCH_TILES, TILE_SIZE, ROW_BYTES), np.uint8)
    flat = buf.reshape(-1)
    lit = np.zeros(0, dtype=np.int64)
    try:
        b0 = 0
        while b0 < tiles.size:
            spent = float(cost[b0 - 1]) if b0 else 0.0
            b1 = int(np.searchsorted(cost, spent + BATCH_PIXELS, side="right"))
            b1 = min(max(b0 + 1, b1), b0 + BATCH_TILES)
            sel = slice(int(pair_bounds[b0]), int(pair_bounds[b1]))
            lit = rasterise(
                flat, px=px[sel], py=py[sel], radius=radius[sel], level=level[sel],
                local_tile=t_of[sel] - b0,
            )  # fmt: skip
            for t in lit.tolist():
                yield int(tiles[b0 + t]), buf[t]
            buf[lit] = 0  # only drawn tiles need clearing for the next batch
            lit = lit[:0]
            b0 = b1
    finally:
        buf[lit] = 0  # the caller stopped early
        _SPARE[:] = [buf]


def rasterise(
    buf: np.ndarray,
    *,
    px: np.ndarray,
    py: np.ndarray,
    radius: np.ndarray,
    level: np.ndarray,
    local_tile: np.ndarray,
) -> np.ndarray:
    """Max-composite splats into ``buf`` (flat tiles of ``TILE_BYTES`` scanlines); returns
    the sorted local indices of the tiles drawn into.

    Coordinates are relative to each pair's tile. A pixel is lit when its centre
    ``(x + 0.5, y + 0.5)`` lies within the radius of the cell centre, row by row: row
    ``y`` is in the disc when ``(y + 0.5 - py)**2 <= r**2``, and then spans the pixels
    from ``ceil(px - w - 0.5)`` to ``floor(px + w - 0.5)`` with ``w = sqrt(r**2 - dy**2)``.
    Each row's span is computed from the cell alone and only then clipped to the tile,
    so the same pixel gets the same answer from either side of a tile border (no seams).
    ``maximum.at`` is used because, unlike fancy assignment, it is defined for repeated
    indices. Work is per candidate row and per lit pixel, in a few whole-array passes.
    """
    if level.size and not level.all():  # level 0 is "no heat": never drawn
        live = np.flatnonzero(level)
        px, py, radius, level, local_tile = (
            px[live],
            py[live],
            radius[live],
            level[live],
            local_tile[live],
        )
    if not px.size:
        return np.zeros(0, dtype=np.int64)
    # Candidate rows: every y with |y + 0.5 - py| <= r, widened by a hair against rounding
    # (the exact test below decides), clipped to the tile.
    y0 = np.maximum(np.ceil(py - radius - (0.5 + _HAIR)), 0.0).astype(np.int64)
    y1 = np.minimum(np.floor(py + radius - (0.5 - _HAIR)), TILE_SIZE - 1.0).astype(np.int64)
    rows = np.maximum(y1 - y0 + 1, 0)
    most = int(rows.max(initial=0))
    if most * rows.size <= GRID_SPARE * int(rows.sum()):
        # Splats of one zoom have about one radius, so every pair has about ``most``
        # candidate rows: a (most, pairs) grid, its spare rows dropped with the rest below.
        # (rows, pairs), not (pairs, rows): numpy's inner loops run along the long axis.
        j = np.arange(most)[:, None]
        w2 = radius * radius - (((y0 + 0.5) + j) - py) ** 2  # (y + 0.5) - py: y + 0.5 exact
        w = np.sqrt(np.maximum(w2, 0.0))
        x0 = np.maximum(np.ceil(px - w - 0.5).astype(np.int64), 0)
        x1 = np.minimum(np.floor(px + w - 0.5).astype(np.int64), TILE_SIZE - 1)
        n_px = x1 - x0 + 1
        in_disc = (n_px > 0) & (w2 >= 0.0) & (j < rows)
        drawn = np.flatnonzero(in_disc)
        row, pair = np.divmod(drawn, px.size)
        used = in_disc.any(axis=0)  # pairs that light a pixel
        y = y0[pair] + row
        x0, n_px = x0.reshape(-1)[drawn], n_px.reshape(-1)[drawn]
    else:  # mixed radii: expand each pair's own rows
        pair, y = expand(y0, rows)
        w2 = (radius * radius)[pair] - (y + 0.5 - py[pair]) ** 2
        cx = px[pair]
        w = np.sqrt(np.maximum(w2, 0.0))
        x0 = np.maximum(np.ceil(cx - w - 0.5).astype(np.int64), 0)
        x1 = np.minimum(np.floor(cx + w - 0.5).astype(np.int64), TILE_SIZE - 1)
        n_px = x1 - x0 + 1
        drawn = np.flatnonzero((n_px > 0) & (w2 >= 0.0))
        pair, y, x0, n_px = pair[drawn], y[drawn], x0[drawn], n_px[drawn]
        used = np.zeros(px.size, dtype=bool)
        used[pair] = True
    base = local_tile * TILE_BYTES + 1  # +1: each row's filter byte
    start = base[pair] + y * ROW_BYTES + x0
    max_spans(buf, start, n_px, level[pair])
    lit = np.zeros(int(local_tile.max()) + 1, dtype=bool)
    lit[local_tile[used]] = True
    return np.flatnonzero(lit)


#: Spans up to this many pixels are drawn a length at a time (see ``max_spans``).
SHORT_SPAN = 16


def max_spans(buf: np.ndarray, start: np.ndarray, length: np.ndarray, level: np.ndarray) -> None:
    """``buf[start[i] : start[i] + length[i]] = max(that, level[i])`` for every span.

    Street splats are a few pixels wide, so the spans are grouped by length (a radix
    sort of small integers) and each group's pixels are one broadcast ``start + [0..L)``;
    longer spans, rare, go through ``span_pixels``. Max is order-free: same pixels.
    """
    short = length <= SHORT_SPAN
    if not short.all():
        long_ = np.flatnonzero(~short)
        np.maximum.at(buf, *span_pixels(start[long_], length[long_], level[long_]))
        keep = np.flatnonzero(short)
        start, length, level = start[keep], length[keep], level[keep]
    order = np.argsort(length.astype(np.uint8), kind="stable")  # a radix sort
    start, level = start[order], level[order]
    o = 0
    for n, count in enumerate(np.bincount(length, minlength=1).tolist()):
        if count and n:
            # (n, spans), not (spans, n): numpy's inner loops run along the long axis.
            pixels = np.arange(n)[:, None] + start[o : o + count]
            levels = np.broadcast_to(level[o : o + count], pixels.shape)
            np.maximum.at(buf, pixels.reshape(-1), levels.reshape(-1))
        o += count


def span_pixels(
    start: np.ndarray, length: np.ndarray, level: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel of the spans ``start[i] .. start[i] + length[i] - 1`` (each ``length >= 1``)
    and the span's uint8 level for each: ``np.repeat`` done as cumulative sums of steps
    placed where each span begins (``np.repeat`` copies element by element)."""
    if not length.size:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    first = np.cumsum(length) - length
    total = int(first[-1] + length[-1])
    jump = start.copy()  # from the last pixel of the span before to this span's first
    jump[1:] -= start[:-1] + length[:-1] - 1
    step = np.ones(total, dtype=np.int64)
    step[first] = jump
    change = level.copy()  # wraps mod 256, as the sum does
    change[1:] -= level[:-1]
    value = np.zeros(total, dtype=np.uint8)
    value[first] = change
    # In place: a fresh array per pass would cost more than the sums themselves.
    return np.cumsum(step, out=step), np.cumsum(value, dtype=np.uint8, out=value)


def expand(start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs ``start[i], start[i] + 1, ..., start[i] + length[i] - 1``, concatenated:
    ``(i of each element, element)``.

    Faster than ``np.repeat`` (which copies element by element) for many short runs: the
    run index is a cumulative sum of steps placed where runs begin, then whole-array
    gathers.
    """
    total = int(length.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    used = np.flatnonzero(length)
    first = np.cumsum(length[used]) - length[used]
    step = np.zeros(total, dtype=np.int64)
    step[first[1:]] = np.diff(used)
    step[0] = used[0]
    run = np.cumsum(step)
    shift = np.zeros(length.size, dtype=np.int64)
    shift[used] = start[used] - first
    return run, shift[run] + np.arange(total, dtype=np.int64)
