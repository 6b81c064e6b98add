"""A fast, well-spread 64-bit hash of whole arrays: the digests of the snapshot's caches.

splitmix64's finaliser, vectorised. Not cryptographic: it decides whether cached work
(a tile, an athlete's Metro records) is reused, and a collision among the handful of
values compared is what the 128-bit digests built from it make negligible.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOLDEN", "mix64"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
#: 2**64 / golden ratio: spreads small integers (positions, zooms) before mixing.
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser of each value (uint64, wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))
