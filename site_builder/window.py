"""What one snapshot reads from the store: the 12-month window, already privacy-filtered.

The writers (tiles, pages, Metro files) take a ``WindowData`` and never touch the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h3.api.basic_int as h3
import numpy as np
from h3 import H3BaseException


@dataclass(frozen=True)
class LayerHeat:
    """Published heat of one layer at the heat resolution.

    Attributes:
        layer: ``all``, ``ride``, ``run``, ``water`` or ``winter``.
        cells: H3 cells (uint64), sorted, each with ``min_athletes`` distinct athletes in
            the cell or within ``threshold_ring`` rings of it: ridden ones, or with
            ``thin_to_lines`` the middles of the ridden ones' heat.
        heat: per cell, the sum over athletes of ``min(activities, max_per_athlete)``
            (after ``thin_to_lines``: the heat of the cells that handed theirs to it).
        athletes: per cell, how many distinct athletes rode it (0 for a cell drawn
            between the lanes of a street by ``thin_to_lines``).
    """

    layer: str
    cells: np.ndarray
    heat: np.ndarray
    athletes: np.ndarray
    # Partial results only (``publishable_heat(partial=True)``): distinct athletes near
    # each cell of ``nearby_cells``, for the cluster snapshot to add up before thresholds.
    nearby_cells: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    nearby: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))


@dataclass(frozen=True)
class WindowData:
    """Everything a snapshot publishes from, for the window ``first_month..month``.

    ``edges``, ``hexagons`` and ``od`` hold, per layer, the records of
    ``heatmetro.state.records`` (``EDGE_DTYPE``, ``HEX_DTYPE``, ``OD_DTYPE``) with a leading
    ``athlete`` int32 field (an index local to this snapshot, never an identifier),
    one row per athlete, local month and key: a ``month`` field (months since year 0,
    see ``heatmetro.core.months.month_index``) and, on edges, ``ride`` (the record is of the ride layer,
    so planners can tell rides from e-bike rides). They are NOT thresholded yet: the Metro writer counts
    distinct athletes, suppresses below ``min_athletes`` and rounds.
    """

    month: str
    first_month: str
    heat: dict[str, LayerHeat]
    edges: dict[str, np.ndarray]
    hexagons: dict[str, np.ndarray]
    od: dict[str, np.ndarray]
    athletes: int
    activities: int
    counts: dict[str, int] = field(default_factory=dict)


def publishable_heat(
    layer: str,
    per_athlete: np.ndarray,
    min_athletes: int,
    max_per_athlete: int,
    *,
    threshold_ring: int,
    partial: bool = False,
) -> LayerHeat:
    """Cap each athlete's weight per cell, then keep the ridden cells with enough distinct
    athletes in their neighbourhood: the cell and the cells within ``threshold_ring`` rings.

    ``per_athlete`` has one row per (athlete, cell) with the athlete's activity count.
    Ring 0 is the plain per-cell rule. Ring 1 (7 cells, the area of one cell a resolution
    coarser but centred on the cell) lets a street ridden by ``min_athletes`` people whose
    tracks are metres apart read as one line, where few single cells hold all of them.

    ``partial``: no threshold; ``nearby_cells``/``nearby`` then hold this input's distinct
    athletes around every cell of the neighbourhoods, so that partial results over
    disjoint sets of athletes add up (the cluster snapshot, ``publish_partials``).
    """
    if len(per_athlete) == 0:
        empty = np.zeros(0, np.uint64)
        return LayerHeat(layer, empty, np.zeros(0), np.zeros(0, np.uint32))
    capped = np.minimum(per_athlete["n"], max_per_athlete).astype(np.float64)
    cells, inv = np.unique(per_athlete["cell"], return_inverse=True)
    heat = np.bincount(inv, weights=capped, minlength=len(cells))
    athletes = np.bincount(inv, minlength=len(cells)).astype(np.uint32)
    near_cells, near = nearby_athletes(per_athlete["athlete"], cells, inv, threshold_ring)
    if partial:
        return LayerHeat(layer, cells, heat, athletes, near_cells, near)
    keep = near[np.searchsorted(near_cells, cells)] >= min_athletes
    published = LayerHeat(layer, cells[keep], heat[keep], athletes[keep])
    if not threshold_ring:
        return published
    return thin_to_lines(published, near_cells[near >= min_athletes])


def publish_partials(
    layer: str,
    cells: np.ndarray,
    heat: np.ndarray,
    athletes: np.ndarray,
    near_cells: np.ndarray,
    near: np.ndarray,
    min_athletes: int,
) -> LayerHeat:
    """The threshold of ``publishable_heat`` over partial results of disjoint athletes,
    before ``thin_to_lines`` (which needs every region's cells).

    Each argument array may repeat a cell (one row per part); counts of distinct athletes
    add up because no athlete is in two parts. ``nearby_cells`` of the result: the cells
    that met the threshold, ridden or not (``thin_to_lines``'s ``open_cells``).
    """
    uniq, inv = np.unique(cells, return_inverse=True)
    # Heat sums are sums of small integers: exact in float64 whatever the order.
    h = np.bincount(inv, weights=heat, minlength=len(uniq))
    a = np.bincount(inv, weights=athletes, minlength=len(uniq)).astype(np.uint32)
    nu, ninv = np.unique(near_cells, return_inverse=True)
    n = np.bincount(ninv, weights=near, minlength=len(nu))
    keep = n[np.searchsorted(nu, uniq)] >= min_athletes
    met = n >= min_athletes
    return LayerHeat(layer, uniq[keep], h[keep], a[keep], nu[met], n[met].astype(np.uint32))


def neighbourhood_across_m(heat_resolution: int, threshold_ring: int) -> int:
    """How far across, in metres, the cells a threshold counts over are (on average)."""
    spacing = np.sqrt(3.0) * h3.average_hexagon_edge_length(heat_resolution, "m")
    return round(float((2 * threshold_ring + 1) * spacing))


_CHUNK_ROWS = 1 << 20  # rows expanded at once (x7 or x19 neighbours): bounds peak memory


def nearby_athletes(
    athlete: np.ndarray, cells: np.ndarray, inv: np.ndarray, ring: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct athletes within ``ring`` rings of each cell near a ridden one.

    Args:
        athlete: per row, the athlete (rows are distinct (athlete, cell) pairs).
        cells: the distinct ridden cells, sorted; ``inv`` maps each row to one.
        ring: 0 (the cell alone), 1 or 2.

    Returns:
        The cells within ``ring`` of a ridden cell (sorted) and, per cell, the number of
        distinct athletes who rode it or a cell within ``ring`` rings of it.
    """
    if ring == 0:
        return cells, np.bincount(inv, minlength=len(cells)).astype(np.uint32)
    disks = _disks(cells, ring)
    near_cells, flat = np.unique(disks, return_inverse=True)
    disk_idx = flat.reshape(disks.shape).astype(np.int64)
    counts = np.zeros(len(near_cells), np.int64)
    order = np.argsort(athlete, kind="stable")
    ath = athlete[order].astype(np.int64)
    row_cell = inv.reshape(-1)[order]
    # Chunks end at an athlete's last row, so no athlete is counted twice in a cell.
    step = max(1, _CHUNK_ROWS // disks.shape[1])
    lo = 0
    while lo < len(ath):
        hi = min(lo + step, len(ath))
        hi = int(np.searchsorted(ath, ath[hi - 1], side="right"))
        keys = ath[lo:hi, None] * len(near_cells) + disk_idx[row_cell[lo:hi]]
        distinct = np.unique(keys)
        counts += np.bincount(distinct % len(near_cells), minlength=len(near_cells))
        lo = hi
    return near_cells, counts.astype(np.uint32)


def _disks(cells: np.ndarray, ring: int) -> np.ndarray:
    """Per cell, the cells within ``ring`` rings (pentagons' shorter disks padded with the
    cell itself; repeats do not change a distinct count)."""
    width = 1 + 3 * ring * (ring + 1)
    out = np.repeat(cells[:, None], width, axis=1)
    for i, c in enumerate(cells.tolist()):
        disk = h3.grid_disk(c, ring)
        out[i, : len(disk)] = disk
    return out


THIN_RING = 2  # each cell looks this many rings around it for the middle of the heat


def thin_to_lines(lh: LayerHeat, open_cells: np.ndarray) -> LayerHeat:
    """Draw each street as a line through the middle of its heat, not as the band of
    every lane and GPS error beside it.

    Each published cell gives its heat to the cell holding the middle of its
    neighbourhood: the centre of the published cells within ``THIN_RING`` rings of it,
    weighted by their distinct athletes. Across a street those middles fall on one line;
    along it they move smoothly from cell to cell, so the line is unbroken. Inside an
    area ridden all over, the middle is the cell itself: nothing moves. Heat is moved,
    never made, so a coarser zoom (parents, heat summed) sees the same heat.

    Args:
        lh: the published cells (ridden, threshold met).
        open_cells: sorted cells that met the threshold whether ridden or not (a middle
            may fall between two lanes); a cell whose middle is not one keeps its heat.

    Returns:
        The drawn cells: each met the threshold and lies within the published cells'
        neighbourhoods. A pure function of its inputs, so a cluster snapshot gets the
        same once it has gathered them.
    """
    n = len(lh.cells)
    if n == 0:
        return lh
    disks = _disks(lh.cells, THIN_RING)
    pos = np.searchsorted(lh.cells, disks)
    pos[pos == n] = 0
    known = lh.cells[pos] == disks  # the published cells of each disk (the centre is one)
    xyz = _unit_vectors(lh.cells)
    w = np.where(known, lh.athletes[pos].astype(np.float64), 0.0)
    middle = np.zeros_like(xyz)
    for j in range(disks.shape[1]):  # column by column: no (cells, disk, 3) array
        middle += w[:, j, None] * xyz[pos[:, j]]
    res = h3.get_resolution(int(lh.cells[0]))
    target = _cells_at(middle, res)
    at = np.minimum(np.searchsorted(open_cells, target), len(open_cells) - 1)
    target = np.where(open_cells[at] == target, target, lh.cells)  # no middle: stay
    # Cells near each other whose middles are not neighbours: join the middles along the
    # grid, so that a street drawn unbroken stays so (the cells between must meet the
    # threshold too).
    voter, cell = [np.arange(n)], [target]
    a, b = np.nonzero(known & (pos > np.arange(n)[:, None]))
    b = pos[a, b]
    moved = target[a] != target[b]
    a, b = a[moved], b[moved]
    txyz = _unit_vectors(np.concatenate([target[a], target[b]]))
    area = np.array([h3.cell_area(c, "rads^2") for c in lh.cells.tolist()]).reshape(-1)
    step = np.sqrt(2.0 * area / np.sqrt(3.0))  # centre spacing of hexagons of that area
    far = _norm(txyz[: len(a)] - txyz[len(a) :]) > 1.5 * step[a]
    for i, j in zip(a[far].tolist(), b[far].tolist(), strict=True):
        try:
            between = h3.grid_path_cells(int(target[i]), int(target[j]))[1:-1]
        except H3BaseException:  # across a pentagon's distortion: no join
            continue
        path = np.array(between, dtype=np.uint64).reshape(-1)
        at = np.minimum(np.searchsorted(open_cells, path), len(open_cells) - 1)
        path = path[open_cells[at] == path]
        voter.append(np.full(len(path), i))
        cell.append(path)
    voters, cells = np.concatenate(voter), np.concatenate(cell)
    # Each published cell's heat is shared by its middle and the joins it made.
    share = lh.heat[voters] / np.bincount(voters, minlength=n)[voters]
    drawn, inv = np.unique(cells, return_inverse=True)
    heat = np.bincount(inv.reshape(-1), weights=share, minlength=len(drawn))
    own = np.minimum(np.searchsorted(lh.cells, drawn), n - 1)
    athletes = np.where(lh.cells[own] == drawn, lh.athletes[own], 0).astype(np.uint32)
    return LayerHeat(lh.layer, drawn, heat, athletes)


def _cells_at(points: np.ndarray, res: int) -> np.ndarray:
    """The res-``res`` cell holding each point (vectors, any length, from the centre)."""
    lat = np.degrees(np.arcsin(points[:, 2] / _norm(points)))
    lng = np.degrees(np.arctan2(points[:, 1], points[:, 0]))
    cells = [h3.latlng_to_cell(a, b, res) for a, b in zip(lat.tolist(), lng.tolist(), strict=True)]
    return np.array(cells, dtype=np.uint64).reshape(-1)


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt((v * v).sum(axis=-1))


def _unit_vectors(cells: np.ndarray) -> np.ndarray:
    """Cell centres as unit vectors (distances compare the same anywhere on the globe)."""
    latlng = np.radians(np.array([h3.cell_to_latlng(c) for c in cells.tolist()]).reshape(-1, 2))
    lat, lng = latlng[:, 0], latlng[:, 1]
    return np.stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)], axis=1)
