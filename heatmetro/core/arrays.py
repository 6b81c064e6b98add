"""Array helpers every layer uses."""

from __future__ import annotations

import numpy as np

__all__ = ["concat_rows", "distinct", "opaque_rows", "take_rows"]


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


def take_rows(records: np.ndarray, which: np.ndarray) -> np.ndarray:
    """``records[which]`` (an index or a mask) of a 1-D record array, copied as whole
    rows of opaque bytes: numpy copies a record dtype field by field (2-5x slower)."""
    return opaque_rows(records)[which].view(records.dtype)


def concat_rows(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)`` of 1-D arrays (at least one), record arrays of one dtype
    as whole rows (see ``take_rows``)."""
    dtype = parts[0].dtype
    if any(p.dtype != dtype for p in parts):  # numpy's rules for mixed dtypes
        return np.concatenate(parts)
    return np.concatenate([opaque_rows(p) for p in parts]).view(dtype)


def opaque_rows(records: np.ndarray) -> np.ndarray:
    """A record array's rows as opaque bytes (copied whole, not field by field); other
    arrays as they are."""
    if records.dtype.fields is None:  # plain values: already copied as they are
        return records
    return records.view(np.dtype((np.void, records.dtype.itemsize)))
