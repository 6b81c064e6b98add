"""Vectorised H3: one call per array instead of one h3-py call per cell.

Backed by h3ronpy (Rust bindings of h3o, a port of the H3 C library). Cells and grid
paths are exactly what the h3-py loops they replace give; cell centres agree to within
a centimetre (``tests/test_h3_vector.py`` holds them against h3-py with
Hypothesis, near pentagons, the antimeridian and the poles too).

Grid paths are computed here rather than per pair in h3-py because a res-13 track has a
grid gap at almost every fix: this is H3's own ``gridPathCells`` (local IJK -> cube
coordinates -> linear interpolation -> cube rounding) run on whole arrays, with the
way back from local IJ to a cell done in numpy inside the anchor's base cell (h3o
across a base cell's border). Pairs that touch a pentagon's base cell, where local
coordinates are distorted, go to h3-py one by one so that the rare hard cases keep
H3's own answer.
"""

from __future__ import annotations

from typing import Any

import h3.api.basic_int as h3
import h3ronpy
import numpy as np
from h3ronpy import vector as _vector

from heatmetro.core.arrays import distinct
from heatmetro.core.errors import HeatmetroError

_PENTAGON_BASE_CELLS = np.array([4, 14, 24, 38, 49, 58, 63, 72, 83, 97, 107, 117], dtype=np.uint64)
_BASE_CELL_SHIFT = np.uint64(45)
_BASE_CELL_MASK = np.uint64(0x7F)


class H3InputError(HeatmetroError, ValueError):
    """Coordinates that H3 cannot index (NaN or infinite; H3 wraps any finite value)."""


def _numpy(arr: object, dtype: type) -> np.ndarray:
    """An arro3 array without nulls as a numpy array of ``dtype``."""
    return np.asarray(arr, dtype=dtype)


def _with_nulls(arr: Any, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """An arro3 array that may hold nulls: its values (0 for null) and a validity mask."""
    if not arr.null_count:
        return np.asarray(arr, dtype=dtype), np.ones(len(arr), dtype=bool)
    values = arr.to_pylist()  # rare (pentagon distortion): a plain list is fine
    valid = np.array([v is not None for v in values], dtype=bool)
    return np.array([v or 0 for v in values], dtype=dtype), valid


def latlng_to_cells(lat: np.ndarray, lng: np.ndarray, res: int) -> np.ndarray:
    """``h3.latlng_to_cell`` of every point (degrees), as ``uint64``."""
    lat = np.ascontiguousarray(lat, dtype=np.float64)
    lng = np.ascontiguousarray(lng, dtype=np.float64)
    if lat.size == 0:
        return np.zeros(0, dtype=np.uint64)
    bad = ~(np.isfinite(lat) & np.isfinite(lng))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        msg = f"cannot index point {k} at res {res}: lat={lat[k]!r}, lng={lng[k]!r}"
        raise H3InputError(msg)
    return _numpy(_vector.coordinates_to_cells(lat, lng, res), np.uint64)


def cells_to_latlng(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``h3.cell_to_latlng`` of every cell: centre latitudes and longitudes in degrees.

    Not bit-identical to h3-py: h3o's floating point differs in the last bits, so a centre
    may move by ~0.01 mm in a town at res 13 (up to ~1 cm at res 15 by a pole). Fine for
    drawing; code whose output must not change by a bit keeps h3-py's centres.
    """
    cells = np.ascontiguousarray(cells, dtype=np.uint64)
    if cells.size == 0:
        return np.zeros(0), np.zeros(0)
    batch = _vector.cells_to_coordinates(cells)
    return _numpy(batch.column("lat"), np.float64), _numpy(batch.column("lng"), np.float64)


def grid_disks(cells: np.ndarray, k: int) -> np.ndarray:
    """``h3.grid_disk(cell, k)`` of every cell, as rows of a ``(n, 1 + 3k(k+1))`` array.

    A disk with fewer cells (a pentagon's) is padded with the cell itself, which changes
    no set or distinct count built from the rows. Each row is sorted: h3-py and h3o list
    a disk's cells in different orders, and callers must not depend on either. Cells of a
    pentagon's base cell go to h3-py one by one (distorted disks); the rest take one h3o
    call.
    """
    cells = np.ascontiguousarray(cells, dtype=np.uint64).reshape(-1)
    width = 1 + 3 * k * (k + 1)
    out = np.repeat(cells[:, None], width, axis=1)
    if cells.size == 0:
        return out
    slow = _touches_pentagon(cells)
    fast = np.flatnonzero(~slow)
    if fast.size:
        flat = _numpy(h3ronpy.grid_disk(cells[fast], k, flatten=True), np.uint64)
        if flat.size == fast.size * width:
            out[fast] = flat.reshape(fast.size, width)
        else:  # a distorted disk after all: the careful way for the whole batch
            slow[:] = True
    for i in np.flatnonzero(slow).tolist():
        disk = h3.grid_disk(int(cells[i]), k)
        out[i, : len(disk)] = disk
    out.sort(axis=1)
    return out


# A plane of this many cells (a byte and an int32 each) at most: ~80 MB.
PLANE_CELLS = 16_000_000
_IJ_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1))  # IJ unit vectors


def grid_distances_in_plane(cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cells within ``k`` rings of ``cells`` (sorted) and each one's grid distance to
    the nearest of them, or None where this way does not apply.

    Inside one base cell (not a pentagon's) H3's local IJ coordinates are a flat hexagonal
    lattice whose six neighbours differ by the IJ unit vectors, so the rings are found by
    breadth first search on a dense array over the cells' bounding box: no H3 call per
    ring, no sort. None (the caller's own search then decides) when the cells or their
    rings leave the first cell's base cell, touch a pentagon's, or the box would exceed
    ``PLANE_CELLS``.
    """
    cells = distinct(np.asarray(cells, dtype=np.uint64))
    if cells.size == 0 or not 0 <= k < 255 or _touches_pentagon(cells).any():
        return None
    base = (cells >> _BASE_CELL_SHIFT) & _BASE_CELL_MASK
    if (base != base[0]).any():
        return None
    local = h3ronpy.cells_to_localij(
        cells, np.repeat(cells[:1], cells.size), set_failing_to_invalid=True
    )
    i, ok_i = _with_nulls(local.column("i"), np.int64)
    j, ok_j = _with_nulls(local.column("j"), np.int64)
    if not (ok_i & ok_j).all():
        return None
    i0, j0 = int(i.min()) - k, int(j.min()) - k
    height, width = int(i.max()) - i0 + k + 1, int(j.max()) - j0 + k + 1
    if height * width > PLANE_CELLS:
        return None
    # The margin of k around the box keeps every step of the search inside it.
    dist = np.full(height * width, 255, dtype=np.uint8)
    owner = np.empty(height * width, dtype=np.int32)
    steps = np.array([di * width + dj for di, dj in _IJ_NEIGHBOURS], dtype=np.int64)
    frontier = (i - i0) * width + (j - j0)
    dist[frontier] = 0
    rings = [frontier]
    for d in range(1, k + 1):
        around = (frontier[:, None] + steps).reshape(-1)
        around = around[dist[around] == 255]
        if around.size == 0:
            break
        dist[around] = d
        # One of each: whichever write to owner[x] won, exactly one position holds it.
        at = np.arange(around.size, dtype=np.int32)
        owner[around] = at
        frontier = around[owner[around] == at]
        rings.append(frontier)
    flat = np.concatenate(rings)
    n = flat.size
    found, valid = _local_ij_to_cells(
        np.repeat(cells[:1], n), flat // width + i0, flat % width + j0,
        np.repeat(i[:1], n), np.repeat(j[:1], n),
    )  # fmt: skip
    if not valid.all():  # a ring crosses into another base cell
        return None
    order = np.argsort(found)
    return found[order], dist[flat].astype(np.int64)[order]


def _touches_pentagon(cells: np.ndarray) -> np.ndarray:
    base = (cells >> _BASE_CELL_SHIFT) & _BASE_CELL_MASK
    return np.isin(base, _PENTAGON_BASE_CELLS)


def _local_cube(
    cells: np.ndarray, anchors: np.ndarray
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Cube coordinates (x, y, z) of ``cells`` in each anchor's local IJK frame, and
    where they exist (not across a pentagon's distortion).

    H3's ``ijkToCube`` of the normalised IJK of local IJ ``(i, j)`` is ``(-i, j, i - j)``.
    """
    batch = h3ronpy.cells_to_localij(cells, anchors, set_failing_to_invalid=True)
    i, ok_i = _with_nulls(batch.column("i"), np.int64)
    j, ok_j = _with_nulls(batch.column("j"), np.int64)
    return (-i, j, i - j), ok_i & ok_j


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C's ``round``: halves go away from zero (numpy's ``rint`` goes to even)."""
    trunc = np.trunc(x)
    return trunc + np.where(np.abs(x - trunc) >= 0.5, np.sign(x), 0.0)


def grid_path_interiors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair ``(a[k], b[k])`` of distinct cells of one resolution, the cells of
    ``h3.grid_path_cells(a[k], b[k])`` strictly between its ends.

    Returns the interiors of all pairs concatenated, and how many cells each pair has
    (0 for neighbours, and where H3 has no grid path across a pentagon's distortion).
    """
    a = np.ascontiguousarray(a, dtype=np.uint64)
    b = np.ascontiguousarray(b, dtype=np.uint64)
    counts = np.zeros(len(a), dtype=np.int64)
    if len(a) == 0:
        return np.zeros(0, dtype=np.uint64), counts
    hard = _touches_pentagon(a) | _touches_pentagon(b)
    easy = np.flatnonzero(~hard)
    ea, eb, m = a[easy], b[easy], len(easy)
    cube, ok = _local_cube(np.concatenate([ea, eb]), np.concatenate([ea, ea]))
    ok = ok[:m] & ok[m:]
    hard[easy[~ok]] = True  # no local frame: H3 decides these one by one
    xa, ya, za = (c[:m] for c in cube)
    xb, yb, zb = (c[m:] for c in cube)
    dist = np.maximum(np.maximum(np.abs(xb - xa), np.abs(yb - ya)), np.abs(zb - za))
    sel = np.flatnonzero(ok & (dist > 1))
    inner, ok_pair = _interpolate(
        ea[sel], dist[sel], (xa[sel], ya[sel], za[sel]), (xb[sel], yb[sel], zb[sel])
    )
    hard[easy[sel[~ok_pair]]] = True
    far = easy[sel[ok_pair]]
    counts[far] = dist[sel[ok_pair]] - 1
    slow = {p: _h3py_interior(int(a[p]), int(b[p])) for p in np.flatnonzero(hard).tolist()}
    if not slow:
        return inner, counts
    # Rare (pentagons): splice the one-by-one interiors in among the vectorised ones.
    for p, cells in slow.items():
        counts[p] = len(cells)
    out = np.zeros(int(counts.sum()), dtype=np.uint64)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    n_far = counts[far]
    within = np.arange(len(inner)) - np.repeat(np.cumsum(n_far) - n_far, n_far)
    out[np.repeat(offsets[far], n_far) + within] = inner
    for p, cells in slow.items():
        out[offsets[p] : offsets[p + 1]] = cells
    return out, counts


def _h3py_interior(a: int, b: int) -> np.ndarray:
    if h3.are_neighbor_cells(a, b):
        return np.zeros(0, dtype=np.uint64)
    try:
        line = h3.grid_path_cells(a, b)
    except Exception:  # noqa: BLE001 - no grid path across some pentagon distortions
        return np.zeros(0, dtype=np.uint64)
    return np.array(line[1:-1], dtype=np.uint64)


def _interpolate(
    anchors: np.ndarray,
    dist: np.ndarray,
    start: tuple[np.ndarray, ...],
    end: tuple[np.ndarray, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """The interior cells of each grid path as H3's ``gridPathCells`` finds them, for the
    pairs whose every cell exists in the start's local frame; and which pairs those are."""
    n_inner = dist - 1
    total = int(n_inner.sum())
    pair = np.repeat(np.arange(len(dist)), n_inner)
    step_no = (np.arange(total) - np.repeat(np.cumsum(n_inner) - n_inner, n_inner) + 1).astype(
        np.float64
    )
    inv = 1.0 / dist.astype(np.float64)
    # The C library's operations, in its order: start + step * n, step = diff * (1 / distance).
    x, y, z = (
        s.astype(np.float64)[pair] + ((e - s).astype(np.float64) * inv)[pair] * step_no
        for s, e in zip(start, end, strict=True)
    )
    rx, ry, rz = _round_half_away(x), _round_half_away(y), _round_half_away(z)
    dx, dy, dz = np.abs(rx - x), np.abs(ry - y), np.abs(rz - z)
    fix_x = (dx > dy) & (dx > dz)
    fix_y = ~fix_x & (dy > dz)
    rx = np.where(fix_x, -ry - rz, rx)
    ry = np.where(fix_y, -rx - rz, ry)
    if total == 0:
        return np.zeros(0, dtype=np.uint64), np.ones(len(dist), dtype=bool)
    # Cube (x, y, z) -> IJK (-x, y, 0) -> local IJ (-x, y) (normalising shifts i and j alike).
    i, j = (-rx).astype(np.int64), ry.astype(np.int64)
    owner = anchors[pair]
    cells, valid = _local_ij_to_cells(owner, i, j, (-start[0])[pair], start[1][pair])
    if not valid.all():  # across a base cell's border: h3o's full local frame decides
        miss = np.flatnonzero(~valid)
        found = h3ronpy.localij_to_cells(
            owner[miss],
            i[miss].astype(np.int32),
            j[miss].astype(np.int32),
            set_failing_to_invalid=True,
        )
        cells[miss], valid[miss] = _with_nulls(found, np.uint64)
    ok_pair = np.bincount(pair[~valid], minlength=len(dist)) == 0
    return cells[ok_pair[pair]], ok_pair


# Local IJ offset (di + 1) * 3 + (dj + 1) of a child from its parent's centre child -> the
# H3 digit (IJK unit vectors: K = (-1, -1), J = (0, 1), JK = (-1, 0), I = (1, 0),
# IK = (0, -1), IJ = (1, 1)); 7 = not a unit vector.
_DIGIT_OF_OFFSET = np.array([1, 3, 7, 5, 0, 2, 7, 4, 6], dtype=np.uint64)


def _round7(n: np.ndarray) -> np.ndarray:
    """``lround(n / 7)`` for integers: exact, and n / 7 is never a tie."""
    return (2 * n + 7) // 14


def _local_ij_to_cells(
    anchors: np.ndarray, i: np.ndarray, j: np.ndarray, anchor_i: np.ndarray, anchor_j: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """H3's ``localIjToCell`` for cells in their anchor's own base cell (not a pentagon's).

    In its own base cell a cell's local IJK are its digits' sum (``_h3ToFaceIjk``), so the
    digits come back by stepping up one resolution at a time (``_upAp7``/``_upAp7r``, then
    the offset from the parent's centre child), as the C library does. A cell shares every
    coarser digit with its anchor from the first resolution where their coordinates meet,
    so each cell stops there (after 2-3 steps for a nearby cell). Cells that never meet
    their anchor lie in another base cell: ``valid`` is False for them.
    """
    out = anchors.copy()
    valid = np.zeros(len(anchors), dtype=bool)
    res_of = ((anchors >> np.uint64(52)) & np.uint64(0xF)).astype(np.int64)
    for res in np.flatnonzero(np.bincount(res_of, minlength=16)).tolist():
        rows = np.flatnonzero(res_of == res)
        # int32 is ample (|3 i| < 2**25 at res 15) and halves the memory the loop sweeps.
        xi, xj, ai, aj = (v[rows].astype(np.int32) for v in (i, j, anchor_i, anchor_j))
        clean = np.ones(len(rows), dtype=bool)  # no digit out of range so far
        for r in range(res, 0, -1):
            if r % 2:  # class III resolution: parent by _upAp7, centre child by _downAp7
                pi, pj = _round7(3 * xi - xj), _round7(xi + 2 * xj)
                ci, cj = 2 * pi + pj, 3 * pj - pi
                ai, aj = _round7(3 * ai - aj), _round7(ai + 2 * aj)
            else:  # class II: _upAp7r, _downAp7r
                pi, pj = _round7(2 * xi + xj), _round7(3 * xj - xi)
                ci, cj = 3 * pi - pj, pi + 2 * pj
                ai, aj = _round7(2 * ai + aj), _round7(3 * aj - ai)
            di, dj = xi - ci, xj - cj
            digit = _DIGIT_OF_OFFSET[np.clip((di + 1) * 3 + (dj + 1), 0, 8)]
            clean &= (np.abs(di) <= 1) & (np.abs(dj) <= 1) & (digit != 7)
            shift = np.uint64(3 * (15 - r))
            out[rows] = (out[rows] & ~(np.uint64(7) << shift)) | (digit << shift)
            met = (pi == ai) & (pj == aj)
            valid[rows[met & clean]] = True
            go = ~met
            rows, xi, xj, ai, aj, clean = rows[go], pi[go], pj[go], ai[go], aj[go], clean[go]
            if not len(rows):
                break
    return out, valid
