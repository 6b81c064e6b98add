"""Mapped ``.npz`` arrays equal ``np.load``'s, for every dtype the snapshot caches use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from heatmetro.site_builder.npz_mapped import load_mapped

ROW = np.dtype([("athlete", np.int32), ("cell", np.uint64), ("n", np.uint16), ("w", np.float64)])
dtypes = st.sampled_from(
    [np.dtype(t) for t in (np.uint8, np.uint32, np.int64, np.uint64, np.float64, bool)] + [ROW]
)
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=9))
)


@settings(max_examples=60, deadline=None)
@given(st.lists(arrays, min_size=1, max_size=5), st.booleans())
def test_mapped_arrays_equal_np_load(
    tmp_path_factory: pytest.TempPathFactory, got: list[np.ndarray], fortran: bool
) -> None:
    path = tmp_path_factory.mktemp("npz") / "c.npz"
    named = {f"part/{i}": np.asfortranarray(a) if fortran else a for i, a in enumerate(got)}
    np.savez(path, allow_pickle=False, **named)
    mapped = load_mapped(path)
    with np.load(path, allow_pickle=False) as want:
        assert sorted(mapped) == sorted(want.files)
        for name in want.files:
            a, b = mapped[name], want[name]
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert a.tobytes() == b.tobytes(), name  # bit for bit, NaNs included
    assert all(not a.flags.writeable for a in mapped.values())


def test_a_compressed_or_torn_file_is_refused(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "z.npz", a=np.arange(10))
    with pytest.raises(ValueError, match="compressed"):
        load_mapped(tmp_path / "z.npz")
    np.savez(tmp_path / "t.npz", a=np.arange(1000))
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[:-200])  # the directory and some data gone
    with pytest.raises(Exception):  # noqa: B017, PT011 - zipfile's or ours: any refusal
        load_mapped(tmp_path / "t.npz")
    (tmp_path / "e.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_mapped(tmp_path / "e.npz")


def test_the_views_outlive_the_file_being_replaced(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, a=np.arange(5, dtype=np.uint64))
    old = load_mapped(path)["a"]
    tmp = tmp_path / "new.npz"
    np.savez(tmp, a=np.arange(7, 12, dtype=np.uint64))
    tmp.replace(path)  # as the caches are written
    assert old.tolist() == [0, 1, 2, 3, 4] and load_mapped(path)["a"].tolist() == [7, 8, 9, 10, 11]
