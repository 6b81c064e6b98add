"""A splice of rows written a piece at a time is the splice put together whole: the
window cache writer writes a rebuild's thinning votes that way (``SplicedRows``)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.core.spliced_rows import SplicedRows
from heatmetro.site_builder.window import VOTE_DTYPE


def _rows(ids: list[int]) -> np.ndarray:
    rows = np.zeros(len(ids), VOTE_DTYPE)
    rows["cell"] = ids
    rows["share"] = np.asarray(ids, dtype=np.float64) / 7.0
    return rows


@st.composite
def splices(draw: st.DrawFn) -> tuple[list[int], list[bool], list[int], list[int]]:
    n = draw(st.integers(0, 60))
    drop = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    kept = n - sum(drop)
    at = sorted(draw(st.lists(st.integers(0, kept), max_size=30)))
    return list(range(n)), drop, at, [1000 + j for j in range(len(at))]


def _by_hand(base: list[int], drop: list[bool], at: list[int], block: list[int]) -> list[int]:
    """Block row j after at[j] kept rows, block rows in order: the splice by its words."""
    kept = [b for b, d in zip(base, drop, strict=True) if not d]
    out: list[int] = []
    j = 0
    for rank, row in enumerate(kept):
        while j < len(at) and at[j] <= rank:
            out.append(block[j])
            j += 1
        out.append(row)
    return out + block[j:]


@settings(max_examples=300, deadline=None)
@given(splices(), st.integers(1, 9))
def test_pieces_are_the_whole_splice(
    splice: tuple[list[int], list[bool], list[int], list[int]], piece_rows: int
) -> None:
    base, drop, at, block = splice
    rows = SplicedRows(_rows(base), np.array(drop, dtype=bool), np.array(at), _rows(block))
    want = _by_hand(base, drop, at, block)
    whole = rows.whole()
    assert whole["cell"].tolist() == want
    pieces = list(rows.pieces(piece_rows))
    assert all(p.flags.c_contiguous and p.dtype == VOTE_DTYPE for p in pieces)
    joined = np.concatenate(pieces) if pieces else np.zeros(0, VOTE_DTYPE)
    assert joined.tobytes() == whole.tobytes()
    assert len(rows) == len(want) and rows.nbytes == whole.nbytes
