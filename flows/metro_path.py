"""Trimmed points -> the Metro path: the cells (Metro resolution) a track really went through.

A crossing between two Metro cells must follow real movement. A track running along a
cell border wobbles across it with GPS noise; counting every wobble would publish trips
in both directions on a one-way street. So the path uses hysteresis: a fix moves the
track into a cell only once it lies at least ``CROSSING_MARGIN_M`` inside that cell's
hexagon; fixes nearer a border keep the cell the track was last firmly in. Consecutive
firm cells that are not neighbours (a track cutting a corner, or running along a border)
are joined along the H3 grid, in the order the track went.

Why hysteresis and not the heading of a smoothed track or net crossings over a stretch:
it needs no window length or smoothing constant tied to speed or sampling rate, it is
one vectorised test per fix (the firm cells are a plain filter, so batching can never
change the result), and its single number has a plain meaning: a fix must be
``CROSSING_MARGIN_M`` metres past a border to count. 15 m is three standard deviations
of ordinary phone GPS noise (~5 m), so a fix on a border lands that far on the wrong side
about once in a thousand fixes, while a res-10 hexagon (inner radius ~65 m) still has a
firm core ~100 m across that every real pass through it crosses. A genuine return along
the same street later reaches the cores again and counts.

The cells are computed from the trimmed points at the Metro resolution, not as parents
of the heat path (H3 children do not nest exactly in their parents).
"""

from __future__ import annotations

import math

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.geo import EARTH_RADIUS_M
from heatmetro.core.h3_vector import latlng_to_cells
from heatmetro.flows.grid_fill import fill_grid_paths
from heatmetro.flows.zone_cells import drop_zone_cells
from heatmetro.state.records import PATH_DTYPE
from heatmetro.state.settings import EffectiveZone

CROSSING_MARGIN_M = 15.0
_M_PER_DEG = math.pi / 180.0 * EARTH_RADIUS_M


def depth_m(lat: np.ndarray, lng: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Per fix, how far (m) it lies inside its own cell's hexagon (distance to the border).

    Each distinct cell's boundary is projected flat about its centre (exact to well under
    a metre at these sizes); a point inside a convex polygon is as far from its border as
    from the nearest edge line.
    """
    uniq, inv = np.unique(cells, return_inverse=True)
    bounds = [h3.cell_to_boundary(c) for c in uniq.tolist()]
    centres = np.array([h3.cell_to_latlng(c) for c in uniq.tolist()], dtype=np.float64)
    n_edges = max((len(b) for b in bounds), default=1)
    # Edges as (start vertex, end vertex); short polygons repeat their first edge.
    start = np.zeros((len(uniq), n_edges, 2))
    end = np.zeros((len(uniq), n_edges, 2))
    for i, b in enumerate(bounds):
        ring = [*b, b[0]]
        for e in range(n_edges):
            k = e if e < len(b) else 0
            start[i, e], end[i, e] = ring[k], ring[k + 1]
    coslat = np.cos(np.radians(centres[:, 0]))[:, None]

    def flat(ll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dlng = (ll[..., 1] - centres[:, None, 1] + 180.0) % 360.0 - 180.0
        return dlng * coslat * _M_PER_DEG, (ll[..., 0] - centres[:, None, 0]) * _M_PER_DEG

    ax, ay = flat(start)
    bx, by = flat(end)
    nx, ny = -(by - ay), bx - ax  # perpendicular to each edge ...
    norm = np.hypot(nx, ny)
    norm[norm == 0] = 1.0
    inward = np.where(nx * -ax + ny * -ay >= 0, 1.0, -1.0) / norm  # ... towards the centre
    nx, ny = nx * inward, ny * inward
    dlng = (lng - centres[inv, 1] + 180.0) % 360.0 - 180.0
    px = (dlng * coslat[inv, 0] * _M_PER_DEG)[:, None]
    py = ((lat - centres[inv, 0]) * _M_PER_DEG)[:, None]
    return np.min(nx[inv] * (px - ax[inv]) + ny[inv] * (py - ay[inv]), axis=1)


def metro_paths(
    lat: np.ndarray,
    lng: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    piece: np.ndarray,
    first_piece: np.ndarray,
    zones: list[tuple[EffectiveZone, ...]],
    *,
    res: int,
    margin_m: float = CROSSING_MARGIN_M,
) -> list[np.ndarray]:
    """The ``PATH_DTYPE`` Metro path of each activity of a batch of trimmed points.

    Args:
        lat, lng, t, v: the trimmed fixes of all activities, activity after activity
            (``t`` seconds since the activity's start, ``v`` smoothed speed in m/s).
        piece: per fix its piece number, increasing and unique across the batch.
        first_piece: per activity, its first piece number (``piece`` restarts there).
        zones: per activity, its privacy zones (cells that may overlap one are dropped).
        res: the Metro resolution.
        margin_m: how far past a border a fix must be to move the track there.

    Each activity's path depends only on its own fixes, so batching never changes it.
    """
    k = len(first_piece)
    cells = latlng_to_cells(lat, lng, res)
    firm = np.flatnonzero(depth_m(lat, lng, cells) >= margin_m) if len(cells) else cells
    cells, g = cells[firm], np.asarray(piece, dtype=np.int64)[firm]
    # Stored as float32, so round now: grid-path times interpolate the stored values.
    ct = t[firm].astype(np.float32).astype(np.float64)
    cv = v[firm].astype(np.float32).astype(np.float64)
    change = np.ones(len(cells), dtype=bool)
    change[1:] = (cells[1:] != cells[:-1]) | (g[1:] != g[:-1])
    cells, ct, cv, g = fill_grid_paths(cells[change], ct[change], cv[change], g[change])
    owner = np.searchsorted(first_piece, g, side="right") - 1
    bounds = np.searchsorted(owner, np.arange(k + 1))
    out = []
    for i in range(k):
        a, b = bounds[i], bounds[i + 1]
        path = np.zeros(b - a, PATH_DTYPE)
        path["cell"], path["t"], path["v"] = cells[a:b], ct[a:b], cv[a:b]
        path["piece"] = g[a:b] - first_piece[i]
        out.append(drop_zone_cells(path, res, zones[i]))
    return out
