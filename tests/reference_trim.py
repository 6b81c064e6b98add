"""Reference (tests only): GPS cleaning and privacy trimming of ONE activity, written as
plainly as possible (loops, one fix at a time).

The product has one implementation, vectorised over a batch (``heatmetro.flows.clean``
and ``heatmetro.flows.batch``). This is the oracle the tests hold it to, bit for bit:
the same rules, the same constants, written independently.

Order matters: clean first (so a teleport cannot stretch the hidden distance), then cut
the hidden start/end along the track, then remove privacy zones and split there, then
split at gaps too long to bridge.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np

from heatmetro.core.config import Config
from heatmetro.core.geo import haversine_m, step_lengths_m
from heatmetro.core.sports import is_ebike
from heatmetro.flows.batch import TrimJob
from heatmetro.flows.clean import (
    COLD_JUMP_M,
    COLD_ROUNDS,
    COLD_RUN_S,
    COLD_SPOT_M,
    FAULTS,
    GPS_NOISE_M,
    M_PER_DEG,
    MEDIAN_PER_SIGMA,
    MIN_RUN_S,
    NOISE_CAP_M,
    NOISE_K,
    PAUSE_SPLIT_S,
    SETTLE_GAP_S,
    SETTLE_SPREAD,
    SETTLE_STEP_M,
    WINDOW_NOISE_M,
    WINDOW_S,
)
from heatmetro.state.aggregates import StoredActivity, activity_records
from heatmetro.state.changes import ActivityChange
from heatmetro.state.records import to_blob
from heatmetro.state.settings import EffectiveZone, points_in_zones


@dataclass(frozen=True, slots=True)
class TrimmedPoints:
    lat: np.ndarray
    lng: np.ndarray
    t: np.ndarray
    piece: np.ndarray  # piece number; a new piece starts after a zone or a long gap
    step: np.ndarray  # metres from each point to the next (meaningful within a piece)


KEPT, SPIKE, BAD_END, VEHICLE = range(4)


def _dist(lat: np.ndarray, lng: np.ndarray, i: int, j: int) -> float:
    return float(haversine_m(lat[i : i + 1], lng[i : i + 1], lat[j : j + 1], lng[j : j + 1])[0])


def noise_sigma(la: np.ndarray, ln: np.ndarray, tt: np.ndarray) -> float:
    """The median distance of a fix from its neighbours' time-weighted midpoint, as sigma."""
    dev: list[float] = []
    for i in range(1, len(tt) - 1):
        span = tt[i + 1] - tt[i - 1]
        w = (tt[i] - tt[i - 1]) / span if span > 0 else 0.5
        dy = la[i] - (la[i - 1] + w * (la[i + 1] - la[i - 1]))
        dx = (ln[i] - (ln[i - 1] + w * (ln[i + 1] - ln[i - 1]))) * np.cos(np.radians(la[i]))
        dev.append(float(M_PER_DEG * np.sqrt(dx * dx + dy * dy)))
    if not dev:
        return 0.0
    dev.sort()
    mid = 0.5 * (dev[(len(dev) - 1) // 2] + dev[len(dev) // 2])
    return min(mid / MEDIAN_PER_SIGMA, NOISE_CAP_M)


def clean(
    lat: np.ndarray, lng: np.ndarray, t: np.ndarray, vmax: float
) -> tuple[list[int], list[bool], dict[str, int]]:
    """Indexes of the usable fixes, whether each starts a piece, and the faults counted."""
    faults: dict[str, Any] = dict.fromkeys(FAULTS, 0)
    n = len(lat)
    fix = [i for i in range(n) if i == 0 or (lat[i], lng[i]) != (lat[i - 1], lng[i - 1])]
    fix = [i for j, i in enumerate(fix) if j == 0 or t[i] != t[fix[j - 1]]]  # a frozen clock
    la, ln, tt = lat[fix], lng[fix], t[fix]
    m = len(fix)
    if m == 0:
        return [], [], faults
    step = step_lengths_m(la, ln)
    extra = NOISE_K * noise_sigma(la, ln, tt)  # the activity's own noise widens each slack
    # Runs of fixes each reachable from the one before.
    runs: list[list[int]] = [[0]]
    for j in range(1, m):
        if (step[j - 1] - GPS_NOISE_M - extra) > vmax * max(tt[j] - tt[j - 1], 1.0):
            runs.append([j])
        else:
            runs[-1].append(j)
    long = [len(runs) == 1 or tt[r[-1]] - tt[r[0]] >= MIN_RUN_S for r in runs]
    code = [KEPT] * m  # why each (deduplicated) fix was dropped
    kept: list[int] = []
    split: set[int] = set()
    jump_at: list[int] = []
    dropped: list[int] = []
    prev: list[int] | None = None
    for run, ok in zip(runs, long, strict=True):
        if not ok:
            dropped.extend(run)
            continue
        if prev is None:
            for j in dropped:
                code[j] = BAD_END
        else:
            e, s = prev[-1], run[0]
            if _dist(la, ln, e, s) - WINDOW_NOISE_M - extra <= vmax * max(tt[s] - tt[e], 1.0):
                for j in dropped:
                    code[j] = SPIKE
            else:
                for j in dropped:
                    code[j] = VEHICLE
                split.add(s)
                if not dropped:
                    jump_at.append(s)
        dropped = []
        kept.extend(run)
        prev = run
    for j in dropped:
        code[j] = BAD_END if kept else VEHICLE
    # Pieces: split at vehicles and at long pauses.
    pieces: list[list[int]] = []
    for j in kept:
        if not pieces:
            pieces.append([j])
        elif j in split:
            pieces.append([j])
        elif tt[j] - tt[pieces[-1][-1]] > PAUSE_SPLIT_S:
            faults["pause_splits"] += 1
            pieces.append([j])
        else:
            pieces[-1].append(j)
    # Sustained speed over +-WINDOW_S/2 (milliseconds from the piece's start).
    out: list[int] = []
    new: list[bool] = []
    kj: list[int] = []  # each kept fix's deduplicated position
    half = int(WINDOW_S * 500)
    for piece in pieces:
        keys = [int(np.minimum(np.rint((tt[j] - tt[piece[0]]) * 1000.0), 2**40 - 1)) for j in piece]
        # A vehicle's stub at either end: fast from the piece's first (last) fix.
        s, e = piece[0], piece[-1]
        head = [
            q for q, j in enumerate(piece)
            if tt[j] - tt[s] <= WINDOW_S / 2
            and _dist(la, ln, s, j) - WINDOW_NOISE_M - extra > vmax * (tt[j] - tt[s])
        ]  # fmt: skip
        tail = [
            q for q, j in enumerate(piece)
            if tt[e] - tt[j] <= WINDOW_S / 2
            and _dist(la, ln, j, e) - WINDOW_NOISE_M - extra > vmax * (tt[e] - tt[j])
        ]  # fmt: skip
        head_to = max(head, default=-1)
        tail_from = min(tail, default=len(piece))
        fast = []
        for q in range(len(piece)):
            lo = piece[bisect.bisect_left(keys, keys[q] - half)]
            hi = piece[bisect.bisect_right(keys, keys[q] + half) - 1]
            span = tt[hi] - tt[lo]
            over = span > 0 and (_dist(la, ln, lo, hi) - WINDOW_NOISE_M - extra) > vmax * span
            fast.append(over or q <= head_to or q >= tail_from)
        # Fixes between two fast ones less than MIN_RUN_S apart are the vehicle's too.
        flagged = [q for q in range(len(piece)) if fast[q]]
        for p, r in zip(flagged, flagged[1:], strict=False):
            if tt[piece[r]] - tt[piece[p]] <= MIN_RUN_S:
                for q in range(p + 1, r):
                    fast[q] = True
        starts_piece = True
        was_fast = False
        for q, j in enumerate(piece):
            if fast[q]:
                code[j] = VEHICLE
            else:
                out.append(fix[j])
                kj.append(j)
                new.append(starts_piece or was_fast or len(out) == 1)
                starts_piece = False
            was_fast = fast[q]
    # Ends before the first (after the last) settled run: a receiver without its fix yet.
    # (Within the activity's own spread if it records sparsely: 3 times its median.)
    steps = [
        step_lengths_m(la[[kj[q - 1], kj[q]]], ln[[kj[q - 1], kj[q]]])[0] for q in range(1, len(kj))
    ]
    gaps = [tt[kj[q]] - tt[kj[q - 1]] for q in range(1, len(kj))]
    max_step = (
        max(SETTLE_STEP_M, SETTLE_SPREAD * float(np.median(steps))) if steps else SETTLE_STEP_M
    )
    max_gap = max(SETTLE_GAP_S, SETTLE_SPREAD * float(np.median(gaps))) if gaps else SETTLE_GAP_S
    settled_runs: list[list[int]] = []
    for q in range(len(kj)):
        if q == 0 or new[q] or steps[q - 1] > max_step or gaps[q - 1] > max_gap:
            settled_runs.append([q])
        else:
            settled_runs[-1].append(q)
    settled = [r for r in settled_runs if tt[kj[r[-1]]] - tt[kj[r[0]]] >= MIN_RUN_S]
    if settled:
        lo, hi = settled[0][0], settled[-1][-1]
        # A guess that settled: a stretch within COLD_SPOT_M of its first fix, ended by a
        # jump of COLD_JUMP_M within COLD_RUN_S of the start (alike at the end).
        median_step = float(np.median(steps)) if steps else 0.0
        max_jump = max(COLD_JUMP_M, SETTLE_SPREAD * median_step)
        lands = [q for q in range(1, len(kj)) if steps[q - 1] > max_jump]

        def away(q: int, r: int) -> float:  # fix r from fix q (argument order as in clean)
            return float(haversine_m(la[kj[r]], ln[kj[r]], la[kj[q]], ln[kj[q]]))

        for _ in range(COLD_ROUNDS):
            to = next((i for i in lands if lo < i <= hi), None)
            fro = next((i for i in reversed(lands) if lo < i <= hi), None)
            guess_head = (
                to is not None
                and tt[kj[to]] - tt[kj[lo]] <= COLD_RUN_S
                and all(away(lo, q) <= COLD_SPOT_M for q in range(lo, to))
            )
            guess_tail = (
                fro is not None
                and tt[kj[hi]] - tt[kj[fro - 1]] <= COLD_RUN_S
                and all(away(hi, q) <= COLD_SPOT_M for q in range(fro, hi + 1))
            )
            if guess_head:
                assert to is not None
                lo = to
            elif guess_tail:
                assert fro is not None
                hi = fro - 1
            else:
                break
        for q in [*range(lo), *range(hi + 1, len(kj))]:
            code[kj[q]] = BAD_END
        out, new = out[lo : hi + 1], new[lo : hi + 1]
        new[0] = True
    faults["spike_fixes"] = code.count(SPIKE)
    faults["bad_end_fixes"] = code.count(BAD_END)
    faults["vehicle_fixes"] = code.count(VEHICLE)
    # A jump next to a vehicle stretch is that stretch, not another one.
    jumps = sum(1 for j in jump_at if VEHICLE not in (code[j - 1], code[j]))
    # A spike recorded on the bus does not end the bus's stretch.
    seq = [c for c in code if c != SPIKE]
    faults["vehicle_stretches"] = jumps + sum(
        1 for i, c in enumerate(seq) if c == VEHICLE and (i == 0 or seq[i - 1] != VEHICLE)
    )
    return out, new, faults


def trim(
    lat: np.ndarray,
    lng: np.ndarray,
    t: np.ndarray,
    *,
    cut_start_m: float,
    cut_end_m: float,
    zones: tuple[EffectiveZone, ...],
    max_speed: float,
    max_gap_m: float,
) -> TrimmedPoints:
    """Clean and privacy-trim one activity's points."""
    return trim_with_faults(
        lat, lng, t, cut_start_m=cut_start_m, cut_end_m=cut_end_m, zones=zones,
        max_speed=max_speed, max_gap_m=max_gap_m,
    )[0]  # fmt: skip


def _between_ends(
    lat: np.ndarray, lng: np.ndarray, t: np.ndarray, cut_start_m: float, cut_end_m: float
) -> np.ndarray:
    """Per fix of one piece: not within its hidden start or end (metres along it, and
    the circles around its ends)."""
    n = len(lat)
    step = step_lengths_m(lat, lng)
    along = np.zeros(n)
    np.cumsum(step, out=along[1:])
    keep = (along >= cut_start_m) & (along <= along[-1] - cut_end_m)

    # ... and nothing before the track leaves the circle of cut_start_m around its first
    # fix: after its last stay of 5 minutes in it before it is first 1 km (or twice the
    # radius) from it (a phone at home overnight that wandered out once is still at
    # home); likewise at the end.
    def home_until(dist: list[float], times: list[float], radius: float) -> int:
        """The index of the last fix at home."""
        far = next((i for i, d in enumerate(dist) if d >= max(2 * radius, 1000.0)), len(dist))
        inside = [dist[i] < radius for i in range(far)]
        if all(inside):
            return far - 1
        home = inside.index(False) - 1
        i = home + 1
        while i < far:  # each later stretch inside the circle
            if not inside[i]:
                i += 1
                continue
            j = i
            while j + 1 < far and inside[j + 1]:
                j += 1
            if times[j] - times[i] >= 300.0 and j < len(dist) - 1:
                home = j
            i = j + 1
        return home

    from_start = [float(haversine_m(lat[0], lng[0], lat[i], lng[i])) for i in range(n)]
    to_end = [float(haversine_m(lat[i], lng[i], lat[-1], lng[-1])) for i in range(n - 1, -1, -1)]
    first_away = home_until(from_start, [float(x) for x in t], cut_start_m) + 1
    last_away = n - 2 - home_until(to_end, [-float(x) for x in t[::-1]], cut_end_m)
    keep &= (np.arange(n) >= first_away) & (np.arange(n) <= last_away)
    return keep


def trim_with_faults(
    lat: np.ndarray,
    lng: np.ndarray,
    t: np.ndarray,
    *,
    cut_start_m: float,
    cut_end_m: float,
    zones: tuple[EffectiveZone, ...],
    max_speed: float,
    max_gap_m: float,
) -> tuple[TrimmedPoints, dict[str, int]]:
    idx, new_piece, faults = clean(lat, lng, t, max_speed)
    lat, lng, t = lat[idx], lng[idx], t[idx]
    if len(lat) < 2:  # never moved (a bike left at its dock): nothing to draw or count
        empty = np.zeros(0)
        return TrimmedPoints(empty, empty, empty, np.zeros(0, np.int64), empty), faults
    n = len(lat)
    step = step_lengths_m(lat, lng)
    # The activity's ends, and every piece's (where the track splits the athlete may
    # have been home).
    keep = _between_ends(lat, lng, t, cut_start_m, cut_end_m)
    bounds = [*np.flatnonzero(np.asarray(new_piece, dtype=bool)).tolist(), n]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        keep[a:b] &= _between_ends(lat[a:b], lng[a:b], t[a:b], cut_start_m, cut_end_m)
    if zones:
        keep &= ~points_in_zones(lat, lng, zones)
    # A new piece starts at the first kept point after a removed one, after a long gap,
    # or where cleaning split the track.
    starts = keep.copy()
    starts[1:] &= ~keep[:-1] | (step > max_gap_m) | np.asarray(new_piece[1:], dtype=bool)
    piece = np.cumsum(starts) - 1
    kept = np.flatnonzero(keep)
    # Kept neighbours of one piece are neighbours in the input too, so their step is known.
    kept_step = step[kept[:-1]] if len(kept) > 1 else np.zeros(0)
    return TrimmedPoints(lat[kept], lng[kept], t[kept], piece[kept], kept_step), faults


def finish_one(job: TrimJob, config: Config) -> ActivityChange:
    """The store change of one activity, step by step."""
    from tests.reference_cells import track_path
    from tests.reference_metro import metro_path

    trimmed, faults_counted = trim_with_faults(
        job.lat.astype(np.float64),
        job.lng.astype(np.float64),
        job.t.astype(np.float64),
        cut_start_m=job.base["cut_start_m"],
        cut_end_m=job.base["cut_end_m"],
        zones=job.zones,
        max_speed=job.max_speed,
        max_gap_m=config.max_gap_fill_m,
    )
    path = track_path(trimmed, res=config.heat_resolution, zones=job.zones)
    metro = metro_path(trimmed, res=config.metro_resolution, zones=job.zones)
    b: dict[str, Any] = job.base
    stored = StoredActivity(
        b["activity_id"], path, metro, b["start_s"], b["utc_offset_s"], b["commute"],
        b["max_speed_ms"], ebike=is_ebike(b["sport_type"]),
    )  # fmt: skip
    heat, edges, hexes, od = activity_records(stored, od_res=config.od_resolution)
    return ActivityChange(
        status="active" if len(path) else "empty",
        path=to_blob(path),
        heat=to_blob(heat),
        edges=to_blob(edges),
        hexagons=to_blob(hexes),
        od=to_blob(od),
        metro_path=to_blob(metro),
        fixes_kept=len(trimmed.lat),
        **{**b, **faults_counted},
    )
