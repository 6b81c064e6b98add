"""Array helpers every layer uses."""

from __future__ import annotations

import numpy as np

__all__ = ["distinct"]


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a 1-D numeric array: ``np.unique(values)``.

    By a sort: since numpy 2.3, ``np.unique`` without ``return_*`` uses a hash table,
    ~16x slower than sorting on a million mostly distinct H3 cells (what the snapshot
    feeds it); faster only on inputs with many repeats.
    """
    out = np.sort(np.asarray(values).reshape(-1))
    if out.size < 2:
        return out
    first = np.empty(out.size, dtype=bool)
    first[0] = True
    np.not_equal(out[1:], out[:-1], out=first[1:])
    return out[first]
