"""The H3 grid path between consecutive cells of a track that are not neighbours."""

from __future__ import annotations

import h3.api.basic_int as h3
import numpy as np


def insert_grid_paths(
    cells: np.ndarray, t: np.ndarray, v: np.ndarray, piece: np.ndarray, gaps: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arrays with the H3 grid path inserted after each index in ``gaps``.

    ``t`` and ``v`` must already hold float32 values (what the path stores), so that
    interpolated times are the same whichever batch an activity was in. Each gap spans
    at most ``max_gap_fill_m`` (longer steps split the track), so the work is linear.
    """
    fills = [
        _grid_fill(
            int(cells[k]),
            float(t[k]),
            int(cells[k + 1]),
            float(t[k + 1]),
            int(piece[k]),
            float(v[k]),
        )
        for k in gaps
    ]
    counts = [len(f) for f in fills]
    if not sum(counts):
        return cells, t, v, piece
    pos = np.repeat(np.asarray(gaps) + 1, counts)
    rows = np.array(
        [r for f in fills for r in f],
        dtype=[("c", "<u8"), ("t", "<f8"), ("v", "<f8"), ("g", "<i8")],
    )
    return (
        np.insert(cells, pos, rows["c"]),
        np.insert(t, pos, rows["t"]),
        np.insert(v, pos, rows["v"]),
        np.insert(piece, pos, rows["g"]),
    )


def _grid_fill(
    a: int, ta: float, b: int, tb: float, piece: int, v: float
) -> list[tuple[int, float, float, int]]:
    """Cells strictly between ``a`` and ``b`` on the H3 grid, with interpolated times."""
    try:
        line = h3.grid_path_cells(a, b)
    except Exception:  # noqa: BLE001 - no grid path across some pentagon distortions
        return []
    n = len(line) - 1
    return [(line[k], ta + (tb - ta) * k / n, v, piece) for k in range(1, n)]
