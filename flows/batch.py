"""Trim, map to cells and count many activities at once (the ingest hot path).

Each activity done alone costs ~100 small numpy calls, which dominated ingest time.
Here a whole Bytewax batch is concatenated and done in one pass; privacy zones are
applied per activity inside it, and the rare activity with a GPS teleport takes the
one-at-a-time path.

Every result must be identical to the one-at-a-time path (``finish_one``) whatever
else is in the batch — a replay after a crash batches differently. So nothing here
sums across activities: running sums are per activity, everything else is element-wise
or integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h3._cy as h3_cy
import h3.api.basic_int as h3
import numpy as np

from heatmetro.core.config import Config
from heatmetro.core.geo import step_lengths_m
from heatmetro.core.sports import is_ebike
from heatmetro.flows.metro_path import metro_paths
from heatmetro.flows.track_cells import (
    SAMPLE_EDGES,
    SPEED_WINDOW_S,
    insert_grid_paths,
    smoothed_speed,
    track_path,
)
from heatmetro.flows.trim import GPS_NOISE_M, trim
from heatmetro.state.aggregates import StoredActivity, activity_records, batch_records
from heatmetro.state.changes import ActivityChange
from heatmetro.state.path_ops import drop_zone_cells
from heatmetro.state.records import PATH_DTYPE, to_blob
from heatmetro.state.settings import EffectiveZone, points_in_zones


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

    @property
    def max_speed(self) -> float:
        return float(self.base["max_speed_ms"])


def finish_one(job: TrimJob, config: Config) -> ActivityChange:
    """The reference path: one activity, step by step."""
    trimmed = trim(
        job.lat,
        job.lng,
        job.t,
        cut_start_m=job.base["cut_start_m"],
        cut_end_m=job.base["cut_end_m"],
        zones=job.zones,
        max_speed=job.max_speed,
        max_gap_m=config.max_gap_fill_m,
    )
    path = track_path(trimmed, res=config.heat_resolution, zones=job.zones)
    metro = metro_paths(
        trimmed.lat, trimmed.lng, trimmed.t, smoothed_speed(trimmed), trimmed.seg,
        np.zeros(1, np.int64), [job.zones], res=config.metro_resolution,
    )[0]  # fmt: skip
    records = activity_records(_stored(job, path, metro), od_res=config.od_resolution)
    return _change(job, path, metro, records, len(trimmed.lat))


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
        **job.base,
    )


def finish_batch(jobs: list[TrimJob], config: Config) -> list[ActivityChange]:
    """``[finish_one(j) for j in jobs]``, computed together."""
    out: list[ActivityChange | None] = [None] * len(jobs)
    simple = []
    for i, job in enumerate(jobs):
        if len(job.t) < 2:
            out[i] = finish_one(job, config)
        else:
            simple.append(i)
    if simple:
        for i, change in _batch([jobs[i] for i in simple], config).items():
            out[simple[i]] = change
        for i in simple:
            if out[i] is None:  # had a teleport: the careful path
                out[i] = finish_one(jobs[i], config)
    return [c for c in out if c is not None]


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


def _batch(jobs: list[TrimJob], config: Config) -> dict[int, ActivityChange]:
    """The vectorised path; skips activities with teleports (``finish_one`` does those)."""
    k = len(jobs)
    n = np.array([len(j.t) for j in jobs])
    aid = np.repeat(np.arange(k), n)
    lat = np.concatenate([j.lat for j in jobs])
    lng = np.concatenate([j.lng for j in jobs])
    t = np.concatenate([j.t for j in jobs]).astype(np.float64)
    vmax = np.array([j.max_speed for j in jobs])

    # Clean: drop repeated positions, set aside activities with a teleport.
    moved = np.ones(len(lat), dtype=bool)
    moved[1:] = (lat[1:] != lat[:-1]) | (lng[1:] != lng[:-1]) | (aid[1:] != aid[:-1])
    lat, lng, t, aid = lat[moved], lng[moved], t[moved], aid[moved]
    step = step_lengths_m(lat, lng)
    same_act = aid[1:] == aid[:-1]
    fast = same_act & ((step - GPS_NOISE_M) > vmax[aid[1:]] * np.maximum(np.diff(t), 1.0))
    if fast.any():
        ok = ~np.isin(aid, np.unique(aid[1:][fast]))
        lat, lng, t, aid = lat[ok], lng[ok], t[ok], aid[ok]
        step = step_lengths_m(lat, lng)
        same_act = aid[1:] == aid[:-1]
    if len(aid) == 0:
        return {}
    bounds = np.searchsorted(aid, np.arange(k + 1))
    kept_count = np.diff(bounds)

    # Hidden start/end: along-track distance from each activity's first fix.
    along = _per_activity_cumsum(np.append(step, 0.0), bounds)
    last = np.maximum(bounds[1:] - 1, 0)
    total = along[last]
    cut_s = np.array([j.base["cut_start_m"] for j in jobs])
    cut_e = np.array([j.base["cut_end_m"] for j in jobs])
    keep = (along >= cut_s[aid]) & (along <= total[aid] - cut_e[aid])
    keep &= kept_count[aid] >= 2  # never moved: nothing to draw or count (as trim.trim)
    for i, job in enumerate(jobs):
        if job.zones and kept_count[i]:
            a, b = bounds[i], bounds[i + 1]
            keep[a:b] &= ~points_in_zones(lat[a:b], lng[a:b], job.zones)
    starts = keep.copy()
    starts[1:] &= ~keep[:-1] | (step > config.max_gap_fill_m) | ~same_act
    gseg = np.cumsum(starts) - 1  # piece ids, unique across the batch
    first_seg = np.concatenate(([0], np.cumsum(starts)))[bounds[:-1]]  # per activity
    kept = np.flatnonzero(keep)
    lat, lng, t, aid, gseg = lat[kept], lng[kept], t[kept], aid[kept], gseg[kept]
    kstep = step[kept[:-1]] if len(kept) > 1 else np.zeros(0)
    fixes_kept = np.bincount(aid, minlength=k)
    seg = gseg - first_seg[aid]
    kbounds = np.searchsorted(aid, np.arange(k + 1))

    # One sample per hexagon edge of track; smoothed speed per point (per activity).
    same_piece = gseg[1:] == gseg[:-1]
    piece_along = _per_activity_cumsum(np.append(np.where(same_piece, kstep, 0.0), 0.0), kbounds)
    spacing = SAMPLE_EDGES * h3.average_hexagon_edge_length(config.heat_resolution, "m")
    bucket = (piece_along / spacing).astype(np.int64)
    sample = np.ones(len(t), dtype=bool)
    sample[1:] = (bucket[1:] != bucket[:-1]) | ~same_piece
    sample[:-1] |= ~same_piece
    if len(sample):
        sample[-1] = True
    speed = _speeds(t, seg, piece_along, kbounds)
    idx = np.flatnonzero(sample)
    res = config.heat_resolution
    to_cell = h3_cy.latlng_to_cell
    cells = np.fromiter(
        (to_cell(a, b, res) for a, b in zip(lat[idx].tolist(), lng[idx].tolist(), strict=True)),
        dtype=np.uint64,
        count=len(idx),
    )
    # Rounded to float32 now, as the stored path is, so grid-path times interpolate
    # exactly as in the one-by-one path.
    ct = t[idx].astype(np.float32).astype(np.float64)
    cv = speed[idx].astype(np.float32).astype(np.float64)
    cg = gseg[idx]
    change = np.ones(len(cells), dtype=bool)
    change[1:] = (cells[1:] != cells[:-1]) | (cg[1:] != cg[:-1])
    cells, ct, cv, cg = cells[change], ct[change], cv[change], cg[change]
    inner = np.flatnonzero(cg[1:] == cg[:-1])
    nb = h3_cy.are_neighbor_cells
    gaps = [
        i
        for i, a, b in zip(
            inner.tolist(), cells[inner].tolist(), cells[inner + 1].tolist(), strict=True
        )
        if not nb(a, b)
    ]
    if gaps:
        cells, ct, cv, cg = insert_grid_paths(cells, ct, cv, cg, gaps)
    paid = np.searchsorted(first_seg, cg, side="right") - 1  # activity of each path row
    pbounds = np.searchsorted(paid, np.arange(k + 1))

    done = [i for i in range(k) if kept_count[i] > 0]  # the others had a teleport
    paths = []
    for i in done:
        a, b = pbounds[i], pbounds[i + 1]
        path = np.zeros(b - a, PATH_DTYPE)
        path["cell"], path["t"], path["v"] = cells[a:b], ct[a:b], cv[a:b]
        path["seg"] = cg[a:b] - first_seg[i]
        if jobs[i].zones:  # no hexagon may overlap a zone (as track_cells.track_path)
            path = drop_zone_cells(path, config.heat_resolution, jobs[i].zones)
        paths.append(path)
    metro = metro_paths(
        lat, lng, t, speed, gseg, first_seg, [j.zones for j in jobs], res=config.metro_resolution
    )
    records = batch_records(
        [_stored(jobs[i], p, metro[i]) for i, p in zip(done, paths, strict=True)],
        od_res=config.od_resolution,
    )
    return {
        i: _change(jobs[i], p, metro[i], r, int(fixes_kept[i]))
        for i, p, r in zip(done, paths, records, strict=True)
    }


def _speeds(t: np.ndarray, seg: np.ndarray, along: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``track_cells.smoothed_speed`` for each activity slice (same arithmetic)."""
    out = np.full(len(t), np.nan)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if b - a < 2:
            continue
        tt = t[a:b]
        toff = tt + seg[a:b] * 1e7
        lo = np.searchsorted(toff, toff - SPEED_WINDOW_S)
        hi = np.searchsorted(toff, toff + SPEED_WINDOW_S, side="right") - 1
        dt = tt[hi] - tt[lo]
        al = along[a:b]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[a:b] = np.where(dt > 0, (al[hi] - al[lo]) / dt, np.nan)
    return out
