"""Clean, trim, map to cells and count many activities at once (the ingest hot path).

Each activity done alone costs ~100 small numpy calls, which dominated ingest time.
Here a whole Bytewax batch is concatenated and done in one pass: GPS faults are
cleaned (``clean``), then the privacy rules cut the hidden start/end along the track
and the zones (applied per activity), the track splits where fixes were removed or a
gap is too long, and one point per hexagon edge of track is mapped to an H3 cell, with
the grid path filled in between cells that are not neighbours.

This is the only implementation. Each result must be the same whatever else is in the
batch (a replay after a crash batches differently), so nothing sums across activities:
running sums are per activity, everything else is element-wise or integer. The tests
hold it against a plain one-activity-at-a-time reference (``tests/reference_trim.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.config import Config
from heatmetro.core.geo import between_end_circles, haversine_m, step_lengths_m
from heatmetro.core.h3_vector import latlng_to_cells
from heatmetro.core.limits import MAX_TRACK_M
from heatmetro.core.sports import is_ebike
from heatmetro.flows.clean import FAULTS, clean_batch
from heatmetro.flows.grid_fill import fill_grid_paths
from heatmetro.flows.map_match import match_streets
from heatmetro.flows.metro_path import metro_paths
from heatmetro.flows.zone_cells import drop_zone_cells
from heatmetro.state.aggregates import StoredActivity, batch_records
from heatmetro.state.changes import ActivityChange
from heatmetro.state.records import PATH_DTYPE, to_blob
from heatmetro.state.settings import EffectiveZone, points_in_zones

SAMPLE_EDGES = 1.0  # one sample per hexagon edge of track keeps every crossed cell within a step
SPEED_WINDOW_S = 15.0


@dataclass(frozen=True, slots=True)
class TrimJob:
    """A contributing activity version, with everything trimming needs."""

    base: dict[str, Any]  # ActivityChange fields known before trimming
    lat: np.ndarray
    lng: np.ndarray
    t: np.ndarray
    zones: tuple[EffectiveZone, ...]
    source: str
    position: int
    # For the personal store (flows/personal.py): the activity's visibility and hide_map,
    # and the public store's status when it does not contribute ("hidden", "opted_out").
    visibility: str = "everyone"
    hide_map: bool = False
    withheld: str = ""

    @property
    def max_speed(self) -> float:
        return float(self.base["max_speed_ms"])


def _per_activity_cumsum(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Running sums that restart at each activity (``bounds`` = start offsets + end)."""
    along = np.empty(0)
    parts = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        along = np.zeros(b - a)
        if b - a > 1:
            np.cumsum(values[a : b - 1], out=along[1:])
        parts.append(along)
    return np.concatenate(parts) if parts else along


def _beyond_end_circles(
    lat: np.ndarray,
    lng: np.ndarray,
    t: np.ndarray,
    bounds: np.ndarray,
    cut_s: np.ndarray,
    cut_e: np.ndarray,
) -> np.ndarray:
    """Per fix: whether it lies between its activity's end circles (``between_end_circles``
    with radii ``cut_s`` and ``cut_e``).

    Metres along the track are not enough: a phone left recording at home before a ride
    adds hundreds of metres of jitter without leaving the spot, and the cut would fall
    right there. So the hidden ends reach at least as far as those circles, whatever
    the track did inside them (a later pass near home is a privacy zone's job).
    """
    parts = [
        between_end_circles(lat[a:b], lng[a:b], float(s), float(e), t[a:b])
        for a, b, s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), cut_s, cut_e, strict=True)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _stored(job: TrimJob, path: np.ndarray, metro: np.ndarray) -> StoredActivity:
    b = job.base
    return StoredActivity(
        b["activity_id"], path, metro, b["start_s"], b["utc_offset_s"], b["commute"],
        b["max_speed_ms"], ebike=is_ebike(b["sport_type"]),
    )  # fmt: skip


def _change(
    job: TrimJob,
    path: np.ndarray,
    metro: np.ndarray,
    records: tuple[np.ndarray, ...],
    kept: int,
    faults: np.ndarray,
    streets: bytes = b"",
    overlong: int = 0,
) -> ActivityChange:
    heat, edges, hexes, od = records
    return ActivityChange(
        status="active" if len(path) else "empty",
        path=to_blob(path),
        heat=to_blob(heat),
        edges=to_blob(edges),
        hexagons=to_blob(hexes),
        od=to_blob(od),
        metro_path=to_blob(metro),
        fixes_kept=kept,
        streets=streets,
        overlong_fixes=overlong,
        **job.base,
        **dict(zip(FAULTS, faults.tolist(), strict=True)),
    )


def finish_batch(jobs: list[TrimJob], config: Config) -> list[ActivityChange]:
    """The store changes of ``jobs``; each the same whatever else is in the batch."""
    if not jobs:
        return []
    k = len(jobs)
    n = np.array([len(j.t) for j in jobs])
    aid = np.repeat(np.arange(k), n)
    lat = np.concatenate([j.lat for j in jobs]).astype(np.float64)
    lng = np.concatenate([j.lng for j in jobs]).astype(np.float64)
    t = np.concatenate([j.t for j in jobs]).astype(np.float64)
    vmax = np.array([j.max_speed for j in jobs])

    # Clean: the usable fixes, where the track splits, and the faults seen.
    cleaned = clean_batch(lat, lng, t, aid, vmax)
    lat, lng, t, aid = (x[cleaned.idx] for x in (lat, lng, t, aid))
    split = cleaned.new_piece
    step = step_lengths_m(lat, lng)
    same_act = aid[1:] == aid[:-1]
    bounds = np.searchsorted(aid, np.arange(k + 1))
    kept_count = np.diff(bounds)

    # Hidden start/end, of every piece: where the track splits (a pause of minutes, a
    # vehicle, a receiver's guess far off before a jump) the athlete may have been home,
    # and the ends of the activity alone would then leave it drawn. Along-track distance
    # from each piece's first fix, and the circles around its ends.
    # The activity's own ends as ever, so that nothing is drawn that was hidden before
    # (a later piece passing back by the start is still inside the start's circle).
    cut_s = np.array([j.base["cut_start_m"] for j in jobs])
    cut_e = np.array([j.base["cut_end_m"] for j in jobs])
    keep = np.ones(len(t), dtype=bool)
    pbounds = np.append(np.flatnonzero(split), len(t)) if len(t) else np.zeros(1, np.int64)
    pieces_of = aid[pbounds[:-1]] if len(t) else np.zeros(0, np.int64)
    for starts_at, whose in ((bounds, np.arange(k)), (pbounds, pieces_of)):  # activities, pieces
        of = np.searchsorted(starts_at, np.arange(len(t)), side="right") - 1
        along = _per_activity_cumsum(np.append(step, 0.0), starts_at)
        total = along[np.maximum(starts_at[1:] - 1, 0)] if len(along) else np.zeros(0)
        keep &= (along >= cut_s[whose][of]) & (along <= total[of] - cut_e[whose][of])
        keep &= _beyond_end_circles(lat, lng, t, starts_at, cut_s[whose], cut_e[whose])
    keep &= kept_count[aid] >= 2  # never moved: nothing to draw or count
    for i, job in enumerate(jobs):
        if job.zones and kept_count[i]:
            a, b = bounds[i], bounds[i + 1]
            keep[a:b] &= ~points_in_zones(lat[a:b], lng[a:b], job.zones)
    starts = keep.copy()
    starts[1:] &= ~keep[:-1] | (step > config.max_gap_fill_m) | ~same_act | split[1:]
    # The track drawn stops at MAX_TRACK_M: the grid between fixes is filled, so the cells
    # (the work and the memory) grow with the length drawn, not with the fixes.
    drawn = np.append(np.where(keep[1:] & ~starts[1:], step, 0.0), 0.0)
    overlong = keep & (_per_activity_cumsum(drawn, bounds) > MAX_TRACK_M)
    keep &= ~overlong
    overlong_fixes = np.bincount(aid[overlong], minlength=k)
    piece_id = np.cumsum(starts) - 1  # piece ids, unique across the batch
    first_piece_id = np.concatenate(([0], np.cumsum(starts)))[bounds[:-1]]  # per activity
    kept = np.flatnonzero(keep)
    lat, lng, t, aid, piece_id = lat[kept], lng[kept], t[kept], aid[kept], piece_id[kept]
    kstep = step[kept[:-1]] if len(kept) > 1 else np.zeros(0)
    fixes_kept = np.bincount(aid, minlength=k)
    piece = piece_id - first_piece_id[aid]
    kbounds = np.searchsorted(aid, np.arange(k + 1))

    # One sample per hexagon edge of track; smoothed speed per point (per activity).
    same_piece = piece_id[1:] == piece_id[:-1]
    piece_along = _per_activity_cumsum(np.append(np.where(same_piece, kstep, 0.0), 0.0), kbounds)
    spacing = SAMPLE_EDGES * h3.average_hexagon_edge_length(config.heat_resolution, "m")
    bucket = (piece_along / spacing).astype(np.int64)
    sample = np.ones(len(t), dtype=bool)
    sample[1:] = (bucket[1:] != bucket[:-1]) | ~same_piece
    sample[:-1] |= ~same_piece
    if len(sample):
        sample[-1] = True
    speed = _speeds(lat, lng, t, piece, kbounds)
    idx = np.flatnonzero(sample)
    cells = latlng_to_cells(lat[idx], lng[idx], config.heat_resolution)
    # Rounded to float32 now, as the stored path is, so grid-path times interpolate
    # exactly as in the one-by-one path.
    ct = t[idx].astype(np.float32).astype(np.float64)
    cv = speed[idx].astype(np.float32).astype(np.float64)
    cg = piece_id[idx]
    change = np.ones(len(cells), dtype=bool)
    change[1:] = (cells[1:] != cells[:-1]) | (cg[1:] != cg[:-1])
    cells, ct, cv, cg = fill_grid_paths(cells[change], ct[change], cv[change], cg[change])
    paid = np.searchsorted(first_piece_id, cg, side="right") - 1  # activity of each path row
    pbounds = np.searchsorted(paid, np.arange(k + 1))

    paths = []
    for i in range(k):
        a, b = pbounds[i], pbounds[i + 1]
        path = np.zeros(b - a, PATH_DTYPE)
        path["cell"], path["t"], path["v"] = cells[a:b], ct[a:b], cv[a:b]
        path["piece"] = cg[a:b] - first_piece_id[i]
        if jobs[i].zones:  # no hexagon may overlap a zone
            path = drop_zone_cells(path, config.heat_resolution, jobs[i].zones)
        paths.append(path)
    # Metro cells from the same trimmed points, at the Metro resolution, with hysteresis.
    metro = metro_paths(
        lat,
        lng,
        t,
        speed,
        piece_id,
        first_piece_id,
        [j.zones for j in jobs],
        res=config.metro_resolution,
    )
    records = batch_records(
        [_stored(j, p, m) for j, p, m in zip(jobs, paths, metro, strict=True)],
        od_res=config.od_resolution,
    )
    # With a base map: the same trimmed points matched to the streets, per activity.
    ends = zip(kbounds[:-1].tolist(), kbounds[1:].tolist(), strict=True)
    streets = [
        match_streets(config, j.base["layer"], lat[a:b], lng[a:b], t[a:b], piece[a:b], j.zones)
        for j, (a, b) in zip(jobs, ends, strict=True)
    ]
    return [
        _change(
            j, p, m, r, int(fixes_kept[i]), cleaned.faults[i], streets[i], int(overlong_fixes[i])
        )
        for i, (j, p, m, r) in enumerate(zip(jobs, paths, metro, records, strict=True))
    ]


def _speeds(
    lat: np.ndarray, lng: np.ndarray, t: np.ndarray, piece: np.ndarray, bounds: np.ndarray
) -> np.ndarray:
    """Speed (m/s) at each point over about +-15 s of its own piece; NaN if unknown.

    Cell-centre distances over cell-entry times are too coarse for speeds (a track
    running along a cell border zig-zags between cells), so speed comes from the points:
    the straight lines from the window's first point to this one and on to its last,
    over the window's time. Not the sum of every step: a phone's few metres of noise a
    second add up along the track (a walk at 5 km/h read 17-20), while two ~15 s
    chords barely feel them and still follow a turn at the point. Offsetting time by
    piece keeps each window inside its piece (``t`` rises).
    """
    out = np.full(len(t), np.nan)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if b - a < 2:
            continue
        tt = t[a:b]
        toff = tt + piece[a:b] * 1e7
        lo = np.searchsorted(toff, toff - SPEED_WINDOW_S)
        hi = np.searchsorted(toff, toff + SPEED_WINDOW_S, side="right") - 1
        dt = tt[hi] - tt[lo]
        la, ln = lat[a:b], lng[a:b]
        way = haversine_m(la[lo], ln[lo], la, ln) + haversine_m(la, ln, la[hi], ln[hi])
        with np.errstate(divide="ignore", invalid="ignore"):
            out[a:b] = np.where(dt > 0, way / dt, np.nan)
    return out
