"""Rows of an array with some left out and a block put in, made a piece at a time.

A rebuild's thinning votes (``site_builder.window.Thinned``) are the last build's ~1.5
million rows, mapped from the cache file, with the rows of the changed cells replaced.
Put together whole they are two fresh copies of ~70 MB, and on these machines the kernel
zeroing those new pages costs more than the copying (0.14-0.38 s of system time in the
cache writer of a rebuild). The cache writer needs them only to write them out: it
takes them a piece at a time (``pieces``), each made in a buffer of ~3 MB that the
allocator hands back for the next one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from heatmetro.core.arrays import opaque_rows

__all__ = ["PIECE_ROWS", "SplicedRows"]

#: Rows per piece: ~3 MB of 45-byte votes, small enough to be reused, not mapped anew.
PIECE_ROWS = 1 << 16


class SplicedRows:
    """``base`` without the rows where ``drop`` is set, with ``block``'s rows put in:
    block row ``j`` comes after ``at[j]`` of the rows kept (``at`` non-decreasing).

    ``whole()`` is the array; ``pieces()`` the same rows, in order, a piece at a time.
    """

    def __init__(self, base: np.ndarray, drop: np.ndarray, at: np.ndarray, block: np.ndarray):
        if base.dtype != block.dtype or len(drop) != len(base) or len(at) != len(block):
            msg = (
                f"spliced rows: {len(base)} rows of {base.dtype}, a mask of {len(drop)}, "
                f"{len(block)} rows of {block.dtype} put in at {len(at)} places"
            )
            raise ValueError(msg)
        self.base, self.drop, self.block = base, drop, block
        self.at = np.asarray(at, dtype=np.int64)
        self.dtype = base.dtype
        self._kept = len(base) - int(np.count_nonzero(drop))

    def __len__(self) -> int:
        return self._kept + len(self.block)

    @property
    def nbytes(self) -> int:
        return len(self) * self.dtype.itemsize

    def whole(self) -> np.ndarray:
        """Every row in one new array."""
        raw = opaque_rows(self.base)
        out = np.empty(len(self), raw.dtype)
        new = np.zeros(len(out), dtype=bool)
        new[self.at + np.arange(len(self.block))] = True
        out[new] = opaque_rows(self.block)
        out[~new] = raw[~self.drop]
        return out.view(self.dtype)

    def pieces(self, rows: int = PIECE_ROWS) -> Iterator[np.ndarray]:
        """The rows of ``whole()`` in order, in contiguous pieces: per ``rows`` rows of
        ``base``, its kept rows with the block rows that go among them."""
        base, block, at = opaque_rows(self.base), opaque_rows(self.block), self.at
        rank = 0  # rows kept before this piece's base rows
        for start in range(0, len(base), rows):
            keep = np.flatnonzero(~self.drop[start : start + rows])
            # The block rows before kept row ``r`` are those with ``at <= r``.
            j0, j1 = np.searchsorted(at, [rank, rank + len(keep)], side="left").tolist()
            if len(keep) + j1 - j0:
                out = np.empty(len(keep) + j1 - j0, base.dtype)
                new = np.zeros(len(out), dtype=bool)
                new[at[j0:j1] - rank + np.arange(j1 - j0)] = True
                out[new] = block[j0:j1]
                out[~new] = base[start + keep]
                yield out.view(self.dtype)
            rank += len(keep)
        tail = int(np.searchsorted(at, rank, side="left"))  # after every kept row
        if tail < len(block):
            yield np.ascontiguousarray(block[tail:]).view(self.dtype)
