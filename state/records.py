"""Record layouts shared by the store, the dataflow and the snapshot.

Everything stored per activity or per athlete-month is a compact numpy structured array,
saved as raw little-endian bytes in a SQLite BLOB (``to_blob`` / ``from_blob``).

* ``PATH_DTYPE``: an activity's privacy-trimmed track as the ordered H3 cells (heat
  resolution) it passed through. ``t`` is seconds since ``start_date`` when the track
  entered the cell; ``v`` the track's smoothed GPS speed there (m/s, NaN when unknown);
  ``piece`` numbers the pieces the track was split into (privacy zones,
  long gaps). Raw GPS points are never stored, only this.
* ``HEAT_DTYPE``: per athlete-month-layer, how many of the athlete's activities went
  through each heat cell.
* ``EDGE_DTYPE``: per athlete-month-layer, crossings of Metro edges. An edge is a pair of
  adjacent cells ``a < b`` (as integers); ``fwd`` is 1 when travel went from ``a`` to ``b``.
  ``hour``/``weekend`` are local time of the crossing; ``commute`` is the activity's flag;
  ``ebike`` marks an e-bike ride (EBikeRide, EMountainBikeRide).
* ``HEX_DTYPE``: per athlete-month-layer, trips through each OD-resolution cell.
* ``OD_DTYPE``: per athlete-month-layer, trips from origin cell ``o`` to destination ``d``
  (OD resolution, first and last cell of the trimmed track).

The snapshot concatenates athlete-month arrays and adds the athlete as a small integer
index (``athlete`` field, see ``with_athlete``); no identifier leaves the store.
"""

from __future__ import annotations

import numpy as np

PATH_DTYPE = np.dtype([("cell", "<u8"), ("t", "<f4"), ("v", "<f4"), ("piece", "<u2")])
HEAT_DTYPE = np.dtype([("cell", "<u8"), ("n", "<u4")])
EDGE_DTYPE = np.dtype(
    [
        ("a", "<u8"),
        ("b", "<u8"),
        ("fwd", "u1"),
        ("hour", "u1"),
        ("weekend", "u1"),
        ("commute", "u1"),
        ("ebike", "u1"),
        ("trips", "<u4"),
        ("speed_sum", "<f8"),
        ("speed_n", "<u4"),
    ]
)
HEX_DTYPE = np.dtype([("cell", "<u8"), ("trips", "<u4"), ("speed_sum", "<f8"), ("speed_n", "<u4")])
OD_DTYPE = np.dtype([("o", "<u8"), ("d", "<u8"), ("trips", "<u4")])

# Keys that identify one row of each aggregate (everything but the summed fields).
EDGE_KEY = ("a", "b", "fwd", "hour", "weekend", "commute", "ebike")
HEX_KEY = ("cell",)
OD_KEY = ("o", "d")

LAYERS = ("all", "ride", "run", "water", "winter")
SPORT_LAYERS = LAYERS[1:]


def to_blob(arr: np.ndarray) -> bytes:
    """Raw bytes of a structured array (its dtype is implied by the column it goes in)."""
    return np.ascontiguousarray(arr).tobytes()


def from_blob(blob: bytes | None, dtype: np.dtype) -> np.ndarray:
    """Inverse of ``to_blob``; ``None`` or empty gives an empty array."""
    if not blob:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(blob, dtype=dtype).copy()


def with_athlete(arr: np.ndarray, athlete: int) -> np.ndarray:
    """Copy of ``arr`` with a leading ``athlete`` int32 field set to ``athlete``."""
    dtype = np.dtype([("athlete", "<i4"), *[(n, arr.dtype[n]) for n in arr.dtype.names or ()]])
    out = np.zeros(len(arr), dtype=dtype)
    out["athlete"] = athlete
    for name in arr.dtype.names or ():
        out[name] = arr[name]
    return out


def group_sum(arr: np.ndarray, key: tuple[str, ...], sums: tuple[str, ...]) -> np.ndarray:
    """Rows of ``arr`` merged on ``key`` with ``sums`` added up, sorted by key (deterministic).

    Works column by column: fancy-indexing whole structured arrays is several times
    slower in numpy than indexing their plain columns.
    """
    n = len(arr)
    if n == 0:
        return arr.copy()
    cols = {k: arr[k] for k in key}
    if n == 1:
        return arr.copy()
    order = np.lexsort(tuple(cols[k] for k in reversed(key)))
    sorted_keys = {k: c[order] for k, c in cols.items()}
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for c in sorted_keys.values():
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change)
    out = np.zeros(len(starts), dtype=arr.dtype)
    for k, c in sorted_keys.items():
        out[k] = c[starts]
    for s in sums:
        out[s] = np.add.reduceat(arr[s][order], starts)
    for name in arr.dtype.names or ():
        if name not in cols and name not in sums:
            out[name] = arr[name][order][starts]
    return out
