"""The kept rows' text (``heatmetro.site_builder.metro_text_cache``) as a Hypothesis property.

A file's rows are kept from the last build for every edge no layer recounted and
formatted for the others. Whatever changed (rows gone, added, edges with more or fewer
rows, files that were or become empty), the text must be what formatting every row
gives, and a cache file solved with other sums (another token) must not be used.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.metro_cache import edge_hashes
from heatmetro.site_builder.metro_text_cache import TextCache

Rows = list[tuple[int, int, int]]  # (layer, edge, version of its text)


class Source:
    """The Metro cache as the text cache sees it: its file's token, the recounted edges."""

    def __init__(self, token: str | None, touched: set[int]) -> None:
        self.token = token
        self._touched = np.sort(edge_hashes(np.array(sorted(touched), np.uint64),
                                            np.zeros(len(touched), np.uint64)))  # fmt: skip

    def touched(self) -> np.ndarray | None:
        return self._touched

    def kept(self, *_: object, **__: object) -> None:
        return None


def arrays(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    edge = edge_hashes(np.array([e for _, e, _ in rows], np.uint64), np.zeros(len(rows), np.uint64))
    place = edge ^ np.array([layer for layer, _, _ in rows], np.uint64)
    return edge, place


def text(rows: Rows, at: np.ndarray) -> list[bytes]:
    return [f"{rows[i][0]},{rows[i][1]},{rows[i][2]}\n".encode() for i in at.tolist()]


@st.composite
def builds(draw: st.DrawFn) -> tuple[Rows, Rows, set[int]]:
    """Rows of a file before and after; edges whose rows changed are recounted (and maybe
    some whose rows did not)."""
    edges = range(draw(st.integers(0, 6)))
    before = {(layer, e): draw(st.integers(0, 2)) for layer in (1, 2) for e in edges}
    changed = set(draw(st.lists(st.sampled_from(list(edges)), unique=True)) if edges else [])
    after = {k: (draw(st.integers(0, 2)) if k[1] in changed else n) for k, n in before.items()}

    def rows(counts: dict[tuple[int, int], int], version: int) -> Rows:
        return [(layer, e, version if e in changed else 0)
                for (layer, e), n in sorted(counts.items()) for _ in range(n)]  # fmt: skip

    return rows(before, 0), rows(after, 1), changed


@settings(max_examples=150, deadline=None)
@given(build=builds())
def test_kept_rows_are_the_text_of_every_row(build: tuple[Rows, Rows, set[int]]) -> None:
    before, after, changed = build
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metro_text_cache.npz"
        first = TextCache(path, Source("t1", set()), "s", reuse=True)
        first.body("f", *arrays(before), lambda at: text(before, at))
        first.save()
        again = TextCache(path, Source("t1", changed), "s", reuse=True)
        got = b"".join(again.body("f", *arrays(after), lambda at: text(after, at)))
        assert got == b"".join(text(after, np.arange(len(after))))
        unchanged = [r for r in after if r[1] not in changed]
        assert again.kept == len(unchanged)
        other = TextCache(path, Source("t2", changed), "s", reuse=True)
        assert b"".join(other.body("f", *arrays(after), lambda at: text(after, at))) == got
        assert other.kept == 0
        # The spliced text saved from its pieces reads back whole: every row kept.
        again.save()
        third = TextCache(path, Source("t1", set()), "s", reuse=True)
        assert b"".join(third.body("f", *arrays(after), lambda at: text(after, at))) == got
        assert third.kept == len(after)
