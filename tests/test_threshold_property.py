"""The heat threshold as Hypothesis properties (``heatmetro.site_builder.window``).

Privacy rule: a drawn cell has ``min_athletes`` distinct athletes who rode it or a cell
within ``threshold_ring`` rings of it (after the per-athlete cap; zones and hidden ends
are cut from the tracks before they are stored). Thinning streets to lines only moves
the heat of cells that passed, never adds any, and draws only cells that pass too.
A cluster snapshot, adding partial results of disjoint athletes, draws the same cells.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import h3.api.basic_int as h3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatmetro.site_builder.window import publish_partials, publishable_heat, thin_to_lines
from heatmetro.state.records import HEAT_DTYPE, group_sum, with_athlete
from tests.conftest import HEATMETRO, REPO, cli_env, write_config

ORIGIN = h3.latlng_to_cell(42.32, -72.63, 13)
AREA = sorted(h3.grid_disk(ORIGIN, 5))  # 91 res-13 cells, ~70 m across


@st.composite
def rides(draw: st.DrawFn) -> np.ndarray:
    """Per-athlete rows (athlete, cell, n): up to 8 athletes, each on some of ``AREA``."""
    parts = []
    for a in range(draw(st.integers(1, 8))):
        cells = draw(st.lists(st.sampled_from(AREA), min_size=1, max_size=30, unique=True))
        arr = np.zeros(len(cells), HEAT_DTYPE)
        arr["cell"] = cells
        arr["n"] = draw(st.lists(st.integers(1, 20), min_size=len(cells), max_size=len(cells)))
        parts.append(with_athlete(arr, a))
    return group_sum(np.concatenate(parts), ("athlete", "cell"), ("n",))


def near_athletes(rows: np.ndarray, cell: int, ring: int) -> set[int]:
    return {
        int(a)
        for a, c in zip(rows["athlete"], rows["cell"], strict=True)
        if h3.grid_distance(int(c), cell) <= ring
    }


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(rows=rides(), k=st.integers(1, 4), cap=st.integers(1, 10), ring=st.integers(0, 2))
def test_every_drawn_cell_has_k_athletes_nearby_and_heat_is_only_moved(
    rows: np.ndarray, k: int, cap: int, ring: int
) -> None:
    drawn = publishable_heat("all", rows, k, cap, threshold_ring=ring)
    ridden = {int(c) for c in rows["cell"]}
    # The cells that pass the rule before thinning, by brute force.
    passed = {c for c in ridden if len(near_athletes(rows, c, ring)) >= k}
    for cell in drawn.cells.tolist():
        assert len(near_athletes(rows, cell, ring)) >= k, f"{cell:x}: fewer than {k} nearby"
        if ring == 0:
            assert cell in passed  # the plain per-cell rule: nothing moves
        else:  # ridden, or between ridden cells (a lane's neighbour)
            assert min(h3.grid_distance(cell, c) for c in ridden) <= ring
    capped = np.minimum(rows["n"], cap)
    expected = sum(int(n) for c, n in zip(rows["cell"], capped, strict=True) if int(c) in passed)
    assert np.isclose(drawn.heat.sum(), expected)  # moved, never made or lost
    assert (drawn.heat > 0).all() and len(set(drawn.cells.tolist())) == len(drawn.cells)
    # The old per-cell rule's cells all passed: a street bright before is not lost.
    per_cell = publishable_heat("all", rows, k, cap, threshold_ring=0)
    assert set(per_cell.cells.tolist()) <= passed


@SETTINGS
@given(rows=rides(), k=st.integers(1, 4), ring=st.integers(1, 2), split=st.integers(0, 8))
def test_partials_of_disjoint_athletes_add_up_to_the_whole(
    rows: np.ndarray, k: int, ring: int, split: int
) -> None:
    """The cluster snapshot's path: each process's partials, added, then thinned."""
    parts = [rows[rows["athlete"] < split], rows[rows["athlete"] >= split]]
    partials = [publishable_heat("all", p, k, 10, threshold_ring=ring, partial=True) for p in parts]
    cols = [np.concatenate([getattr(p, f) for p in partials]) for f in
            ("cells", "heat", "athletes", "nearby_cells", "nearby")]  # fmt: skip
    gathered = publish_partials("all", cols[0], cols[1], cols[2], cols[3], cols[4], k)
    got = thin_to_lines(gathered, np.sort(gathered.nearby_cells))
    want = publishable_heat("all", rows, k, 10, threshold_ring=ring)
    np.testing.assert_array_equal(got.cells, want.cells)
    np.testing.assert_array_equal(got.heat, want.heat)
    np.testing.assert_array_equal(got.athletes, want.athletes)


@pytest.mark.parametrize(("ring", "res"), [(2, 13), (1, 12), (-1, 13)])
def test_a_bad_threshold_ring_is_one_line_naming_it(tmp_path: Path, ring: int, res: int) -> None:
    write_config(tmp_path, threshold_ring=ring, heat_resolution=res)
    proc = subprocess.run(
        [*HEATMETRO, "snapshot", "-c", str(tmp_path / "config.toml")],
        capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=60,
    )  # fmt: skip
    err = proc.stderr.strip()
    assert proc.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "threshold_ring" in err and f"got {ring} at heat_resolution {res}" in err, err
