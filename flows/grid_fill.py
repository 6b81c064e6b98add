"""The H3 grid path between consecutive cells of a track that are not neighbours."""

from __future__ import annotations

import numpy as np

from heatmetro.core.h3_vector import grid_path_interiors


def fill_grid_paths(
    cells: np.ndarray, t: np.ndarray, v: np.ndarray, piece: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arrays with ``h3.grid_path_cells`` inserted between consecutive distinct cells
    of one piece that are not neighbours (each inserted cell gets an interpolated time,
    the speed and the piece of the cell before it).

    ``cells`` must not repeat a cell within a piece twice in a row. ``t`` and ``v`` must
    already hold float32 values (what the path stores), so that interpolated times are
    the same whichever batch an activity was in. Each step spans at most
    ``max_gap_fill_m`` (longer steps split the track), so the work is linear.
    """
    inner = np.flatnonzero(piece[1:] == piece[:-1])
    fill, counts = grid_path_interiors(cells[inner], cells[inner + 1])
    if not len(fill):
        return cells, t, v, piece
    pair = np.repeat(np.arange(len(inner)), counts)
    k = np.arange(len(fill)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    n = (counts + 1)[pair]
    ta, tb = t[inner][pair], t[inner + 1][pair]
    fill_t = ta + (tb - ta) * k.astype(np.float64) / n.astype(np.float64)
    # Row of each inserted cell in the output: after its pair's first cell, in order.
    is_new = np.zeros(len(cells) + len(fill), dtype=bool)
    is_new[inner[pair] + 1 + np.arange(len(fill))] = True
    return (
        _merge(is_new, cells, fill),
        _merge(is_new, t, fill_t),
        _merge(is_new, v, v[inner][pair]),
        _merge(is_new, piece, piece[inner][pair]),
    )


def _merge(is_new: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    out = np.empty(len(is_new), dtype=old.dtype)
    out[~is_new] = old
    out[is_new] = new
    return out
