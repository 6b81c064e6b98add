"""GPS clean-up of many activities at once: which fixes are usable, where tracks split.

Phone GPS mixes honest movement with faults. Each fault becomes (README, "Messy GPS"):

* repeated positions: dropped (not a fault, a still receiver); so are fixes at the time of
  the one before (a frozen clock), which would make impossible speeds;
* a *spike* (a few fixes far off, then back on the track): those fixes are dropped and
  the track goes on unbroken;
* bad first/last fixes (a cold start far away): dropped, the rest kept; also those at
  a plausible speed but before the receiver settles (a network location, then the GPS
  fix minutes later and hundreds of metres away);
* a *vehicle* stretch (faster than the sport allows, e.g. a walk on a bus): not drawn,
  the track splits there, the honest parts before and after are kept;
* a clock jump or a pause longer than ``PAUSE_SPLIT_S``: the track splits;
* a still device jittering for hours: its jitter stays within its spot (only the
  occasional jump is dropped as a spike).

How, in a fixed number of numpy passes over the whole batch (no loop over fixes, runs
or activities, no recursion; sorting is the costliest step, so O(n log n)):

0. Each activity's GPS noise sigma is estimated (``noise_sigma_m``: the median distance of
   a fix from its neighbours' time-weighted midpoint); every slack below grows by
   ``NOISE_K`` sigma, so a cheap phone's honest jitter (5-10 m) is not taken for faults.
1. A *step* between consecutive fixes is *impossible* when it is longer than the
   sport's top speed allows (``GPS_NOISE_M`` + ``NOISE_K`` sigma of slack). Impossible
   steps cut the activity into *runs*: chains where each fix is reachable from the one
   before.
2. A run lasting less than ``MIN_RUN_S`` is dropped (unless it is the activity's only
   run): spikes, cold starts and each fix of a fast vehicle are such runs. Two kept runs
   are joined if the second is reachable from the first, with two fixes' noise of slack
   (the dropped fixes between were a spike; a lone noisy step splits nothing); if not,
   the track splits there (a vehicle). Dropped runs before the first or after the last
   kept run are bad ends.
3. A vehicle slow enough to pass step 1 (the slack is generous between frequent or noisy
   fixes) is caught over time: a fix whose +-``WINDOW_S / 2`` neighbourhood in its piece
   moves faster than the sport allows is dropped, splitting the track there. A vehicle's
   stub left on a piece's first (last) fixes is judged from that end; fixes between two
   dropped ones less than ``MIN_RUN_S`` apart go with them (noise makes verdicts flicker).
4. Fixes before an activity's first *settled* run (``MIN_RUN_S`` of fixes each within
   ``SETTLE_STEP_M`` and ``SETTLE_GAP_S`` of the last, or 3 times the activity's own
   median step and interval if larger), or after its last, are bad ends:
   the hidden start's circle is drawn around the first fix kept, so it must be where the
   activity was, not where a cold receiver guessed (an activity without a settled run is
   left as it is: a sparse recorder). A guess may settle too (a network fix jittering for
   a minute): a stretch that stays within ``COLD_SPOT_M`` and that a jump of
   ``COLD_JUMP_M`` ends within ``COLD_RUN_S`` of the start is dropped too (up to
   ``COLD_ROUNDS`` in a row), alike at the end; a moving stretch never is. A still
   stretch that lasts longer before its jump splits the track there (the caller hides
   every piece's ends: a stale fix settled for minutes, or home before the jump).

Nothing sums across activities, so an activity is cleaned the same in any batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from heatmetro.core.geo import EARTH_RADIUS_M, haversine_m, step_lengths_m
from heatmetro.core.limits import PAUSE_SPLIT_S

GPS_NOISE_M = 10.0  # jitter a still receiver shows; not counted as movement between fixes
WINDOW_NOISE_M = 2 * GPS_NOISE_M  # two fixes' worth of noise over a window
NOISE_K = 5.0  # extra slack per metre of the activity's own noise (sigma): 5 sigma per step
NOISE_CAP_M = 10.0  # sigma estimates above this are capped (slack stays below a 100 m spike)
# Median distance of a fix from the line between its neighbours, per metre of sigma:
# independent noise puts it at sigma * sqrt(1.5) per axis (Rayleigh, median 1.177 scale).
MEDIAN_PER_SIGMA = math.sqrt(1.5) * math.sqrt(2.0 * math.log(2.0))
M_PER_DEG = math.radians(EARTH_RADIUS_M)
MIN_RUN_S = 30.0  # a chain of plausible fixes shorter than this between impossible steps is a fault
WINDOW_S = 30.0  # the span over which sustained speed is judged
# A settled receiver's consecutive fixes: closer than this, and closer in time (step 4).
SETTLE_STEP_M = 50.0
SETTLE_GAP_S = 15.0
SETTLE_SPREAD = 3.0  # ... or this many times the activity's own median step and interval
# A stretch within COLD_SPOT_M of its first fix that a jump of COLD_JUMP_M ends, within
# COLD_RUN_S of the start (or the end), is a cold receiver's guess (COLD_ROUNDS of them).
COLD_JUMP_M = 100.0
COLD_SPOT_M = 100.0
COLD_RUN_S = 300.0
COLD_ROUNDS = 3
_KEY_MS = 1 << 40  # times within a piece, in ms, stay below this (35 years)

_SPIKE, _BAD_END, _VEHICLE = 1, 2, 3  # why a fix was dropped
FAULTS = ("spike_fixes", "bad_end_fixes", "vehicle_fixes", "vehicle_stretches", "pause_splits")


@dataclass(frozen=True, slots=True)
class Cleaned:
    """The usable fixes of a batch and where their pieces start."""

    idx: np.ndarray  # indexes of the kept fixes in the input, in order
    new_piece: np.ndarray  # bool per kept fix: a piece starts here (always at an activity's first)
    faults: np.ndarray  # (k, len(FAULTS)) int64 counts per activity


def clean_batch(
    lat: np.ndarray, lng: np.ndarray, t: np.ndarray, aid: np.ndarray, vmax: np.ndarray
) -> Cleaned:
    """Clean the fixes of ``k = len(vmax)`` activities, concatenated in ``aid`` order.

    ``aid`` is each fix's activity (non-decreasing); ``t`` rises within an activity (the
    contract checks it); ``vmax`` is each activity's top speed in m/s.
    """
    k = len(vmax)
    faults = np.zeros((k, len(FAULTS)), dtype=np.int64)
    # Repeated positions add nothing.
    moved = np.ones(len(lat), dtype=bool)
    moved[1:] = (lat[1:] != lat[:-1]) | (lng[1:] != lng[:-1]) | (aid[1:] != aid[:-1])
    i0 = np.flatnonzero(moved)
    # Nor does a fix at the time of the one before: a frozen clock (or a fast recorder's
    # rounded times). Kept, the steps with no time between them would read as one
    # moment, and every speed over them (a Metro edge's) would be impossible; the first
    # fix of the frozen time is where the clock stopped, and the next fix with a later
    # time measures the true speed from it.
    ticked = np.ones(len(i0), dtype=bool)
    ticked[1:] = (t[i0[1:]] != t[i0[:-1]]) | (aid[i0[1:]] != aid[i0[:-1]])
    i0 = i0[ticked]
    la, ln, tt, a = lat[i0], lng[i0], t[i0], aid[i0]
    m = len(i0)
    if m == 0:
        return Cleaned(i0, np.zeros(0, dtype=bool), faults)

    # 0. Each activity's own noise widens every slack below (cheap phones: sigma 5-10 m).
    extra = NOISE_K * noise_sigma_m(la, ln, tt, a, k)

    # 1. Runs: broken at impossible steps and between activities.
    same = a[1:] == a[:-1]
    step = step_lengths_m(la, ln)
    dt = np.diff(tt)
    slack = GPS_NOISE_M + extra[a[1:]]
    impossible = same & ((step - slack) > vmax[a[1:]] * np.maximum(dt, 1.0))
    first = np.ones(m, dtype=bool)
    first[1:] = impossible | ~same
    rstart = np.flatnonzero(first)
    rend = np.append(rstart[1:] - 1, m - 1)
    ract = a[rstart]
    rfixes = rend - rstart + 1

    # 2. Short runs dropped; kept runs joined or split.
    runs_of = np.bincount(ract, minlength=k)
    long = (tt[rend] - tt[rstart] >= MIN_RUN_S) | (runs_of[ract] == 1)
    keep1 = np.repeat(long, rfixes)
    lr = np.flatnonzero(long)
    pa, nx = lr[:-1], lr[1:]
    inner = ract[pa] == ract[nx]  # consecutive kept runs of one activity
    e, s = rend[pa[inner]], rstart[nx[inner]]
    gap = haversine_m(la[e], ln[e], la[s], ln[s])
    # Two fixes' noise of slack: one noisy step between two good runs is no vehicle.
    reachable = (gap - WINDOW_NOISE_M - extra[a[s]]) <= vmax[a[s]] * np.maximum(tt[s] - tt[e], 1.0)
    # Why each dropped fix went: what lies between two kept runs is a spike if the
    # second is reachable from the first, else a vehicle; the rest are bad ends, or a
    # vehicle when no run of the activity was long enough.
    why = np.where(reachable, _SPIKE, _VEHICLE)
    marks = np.bincount(e + 1, why, minlength=m + 1) - np.bincount(s, why, minlength=m + 1)
    code = np.cumsum(marks[:m]).astype(np.int64)  # ranges between kept runs never overlap
    any_kept = np.bincount(ract, weights=long, minlength=k) > 0
    code[~keep1 & (code == 0)] = np.where(any_kept[a], _BAD_END, _VEHICLE)[~keep1 & (code == 0)]
    split1 = np.zeros(m, dtype=bool)
    split1[s[~reachable]] = True
    jumps = s[~reachable & (s == e + 1)]  # two kept runs, nothing between, unreachable

    k1 = np.flatnonzero(keep1)
    tt1, a1, split1 = tt[k1], a[k1], split1[k1]
    piece_first = np.ones(len(k1), dtype=bool)
    act_change = a1[1:] != a1[:-1]
    pause = ~act_change & (np.diff(tt1) > PAUSE_SPLIT_S)
    faults[:, 4] = np.bincount(a1[1:], weights=pause & ~split1[1:], minlength=k)
    piece_first[1:] = act_change | pause | split1[1:]

    # 3. Sustained speed over a window centred on each fix, within its piece; and a
    # vehicle's tail (or head) left on a piece's first (last) fixes, its steps each within
    # step 1's noise slack, caught over the span from the piece's end.
    v = _too_fast_over_window(la[k1], ln[k1], tt1, piece_first, vmax[a1], extra[a1])
    v |= _fast_piece_ends(la[k1], ln[k1], tt1, piece_first, vmax[a1], extra[a1])
    v = _fill_short_gaps(v, tt1, piece_first)
    code[k1[v]] = _VEHICLE
    after = np.zeros(len(v), dtype=bool)
    after[1:] = v[:-1]  # a kept fix right after a dropped stretch starts a new piece
    keep2 = ~v
    new_piece = (piece_first | after)[keep2]
    idx2 = k1[keep2]

    # 4. Ends before the first (after the last) settled run: a cold start's fixes at a
    # plausible speed (a network location, then the GPS fix minutes later) would
    # otherwise anchor the hidden start hundreds of metres from where it was.
    loose, held = _unsettled_ends(la[idx2], ln[idx2], tt[idx2], a[idx2], new_piece)
    new_piece |= held
    code[idx2[loose]] = _BAD_END
    new_piece, idx2 = new_piece[~loose], idx2[~loose]
    a2 = a[idx2]
    new_piece[1:] |= a2[1:] != a2[:-1]
    if len(new_piece):
        new_piece[0] = True

    # Counts: fixes by reason; a vehicle stretch is a run of consecutive vehicle fixes,
    # spikes within it aside (a spike recorded on the bus), or an unreachable jump with
    # none between.
    for col, c in ((0, _SPIKE), (1, _BAD_END), (2, _VEHICLE)):
        faults[:, col] = np.bincount(a, weights=code == c, minlength=k)
    not_spike = code != _SPIKE
    veh, av = code[not_spike] == _VEHICLE, a[not_spike]
    begins = veh.copy()
    begins[1:] &= ~veh[:-1] | (av[1:] != av[:-1])
    # A jump next to a vehicle stretch is that stretch, not another one.
    jumps = jumps[(code[jumps - 1] != _VEHICLE) & (code[jumps] != _VEHICLE)]
    faults[:, 3] = np.bincount(av[begins], minlength=k) + np.bincount(a[jumps], minlength=k)
    return Cleaned(i0[idx2], new_piece, faults)


def _unsettled_ends(
    lat: np.ndarray, lng: np.ndarray, t: np.ndarray, aid: np.ndarray, new_piece: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per kept fix, whether it lies before its activity's first settled run or after its
    last (none for an activity without one); and whether a piece starts there because a
    still stretch at either end, longer than a guess, ends in a jump (see below).

    A *settled* run is a chain of fixes each within ``SETTLE_STEP_M`` and
    ``SETTLE_GAP_S`` of the one before (and in one piece) lasting ``MIN_RUN_S`` or more:
    a receiver that has its fix. A device that records sparsely ("smart recording": a fix
    every 5-10 s, 60 m apart at speed) gets ``SETTLE_SPREAD`` times its own median step
    and interval if larger, else it would never settle and lose all but a moment of each
    ride. Dropping an end before a settled run only ever hides more, never less: the
    circle of the hidden start is drawn around the first fix kept.
    """
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    k = int(aid[-1]) + 1
    same = aid[1:] == aid[:-1]
    step, dt = step_lengths_m(lat, lng), np.diff(t)
    typical_step = _median_per_activity(step[same], aid[1:][same], k)
    typical_dt = _median_per_activity(dt[same], aid[1:][same], k)
    max_step = np.maximum(SETTLE_STEP_M, SETTLE_SPREAD * typical_step)[aid[1:]]
    max_dt = np.maximum(SETTLE_GAP_S, SETTLE_SPREAD * typical_dt)[aid[1:]]
    brk = np.ones(n, dtype=bool)
    brk[1:] = new_piece[1:] | ~same | (step > max_step) | (dt > max_dt)
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:] - 1, n - 1)
    settled = t[ends] - t[starts] >= MIN_RUN_S
    first = _first_per_activity(aid[starts], starts, settled, k, n)
    last = -_first_per_activity(aid[ends][::-1], -ends[::-1], settled[::-1], k, 1)
    # A guess may settle too (a network fix jittering for a minute, hundreds of metres
    # off): a stretch that stays within COLD_SPOT_M of its first fix and ends in a jump of
    # COLD_JUMP_M or more, within COLD_RUN_S of the start, is no start; alike at the end.
    # (A moving stretch is a ride, whatever jumps follow: a messy recording keeps it.)
    pos = np.arange(n)
    lands = np.zeros(n, dtype=bool)  # a jump lands on this fix (from the one before)
    lands[1:] = same & (step > np.maximum(COLD_JUMP_M, SETTLE_SPREAD * typical_step)[aid[1:]])
    next_land = np.append(np.minimum.accumulate(np.where(lands, pos, n)[::-1])[::-1][1:], n)
    last_land = np.maximum.accumulate(np.where(lands, pos, 0))  # 0: none (fix 0 never lands)
    for _ in range(COLD_ROUNDS):  # chains of guesses: a few rounds, each O(n)
        has = (last >= 0) & (first <= last)
        f, g = np.minimum(first, n - 1), np.maximum(last, 0)
        to = np.minimum(next_land[f], n - 1)  # the jump that ends the first stretch
        start_guess = has & (next_land[f] <= g) & (t[to] - t[f] <= COLD_RUN_S)
        fro = np.maximum(last_land[g], 1)  # the jump that starts the last stretch
        end_guess = has & (last_land[g] > f) & (t[g] - t[fro - 1] <= COLD_RUN_S)
        away = haversine_m(lat, lng, lat[f[aid]], lng[f[aid]])
        head = (pos >= f[aid]) & (pos < to[aid])
        start_guess &= _max_per_activity(away, head, aid, k) <= COLD_SPOT_M
        away = haversine_m(lat, lng, lat[g[aid]], lng[g[aid]])
        tail = (pos >= fro[aid]) & (pos <= g[aid])
        end_guess &= _max_per_activity(away, tail, aid, k) <= COLD_SPOT_M
        if not (start_guess.any() or end_guess.any()):
            break
        first = np.where(start_guess, to, first)
        last = np.where(end_guess & ~start_guess, fro - 1, last)
    # A still stretch that a jump ends, longer than a guess: a stale fix that settled for
    # many minutes, or the athlete at home before the receiver jumped (which, no one can
    # tell). Either may be home: the track splits at the jump, and each piece's ends are
    # hidden (the caller's rule), so neither place is drawn.
    has = (last >= 0) & (first <= last)
    f, g = np.minimum(first, n - 1), np.maximum(last, 0)
    to, fro = np.minimum(next_land[f], n - 1), np.maximum(last_land[g], 1)
    away = haversine_m(lat, lng, lat[f[aid]], lng[f[aid]])
    head = (pos >= f[aid]) & (pos < to[aid])
    still_head = has & (next_land[f] <= g) & (_max_per_activity(away, head, aid, k) <= COLD_SPOT_M)
    away = haversine_m(lat, lng, lat[g[aid]], lng[g[aid]])
    tail = (pos >= fro[aid]) & (pos <= g[aid])
    still_tail = has & (last_land[g] > f) & (_max_per_activity(away, tail, aid, k) <= COLD_SPOT_M)
    held = np.zeros(n, dtype=bool)
    held[to[still_head]] = True
    held[fro[still_tail]] = True
    has = (last[aid] >= 0) & (first[aid] <= last[aid])
    return (last[aid] >= 0) & (~has | (pos < first[aid]) | (pos > last[aid])), held


def _max_per_activity(values: np.ndarray, where: np.ndarray, act: np.ndarray, k: int) -> np.ndarray:
    """Per activity, the largest of ``values`` where ``where`` (0 where none)."""
    out = np.zeros(k)
    np.maximum.at(out, act[where], values[where])
    return out


def _first_per_activity(
    act: np.ndarray, values: np.ndarray, keep: np.ndarray, k: int, none: int
) -> np.ndarray:
    """Per activity, the first of ``values`` (in order) where ``keep``; ``none`` if none."""
    out = np.full(k, none, dtype=np.int64)
    acts, at = np.unique(act[keep], return_index=True)
    out[acts] = values[keep][at]
    return out


def _median_per_activity(values: np.ndarray, act: np.ndarray, k: int) -> np.ndarray:
    """The median of ``values`` per activity (0 for one without any): one sort, O(n log n)."""
    out = np.zeros(k)
    if len(values) == 0:
        return out
    order = np.lexsort((values, act))
    values = values[order]
    cnt = np.bincount(act, minlength=k)
    start = np.cumsum(cnt) - cnt
    has = np.flatnonzero(cnt)
    lo, hi = start[has] + (cnt[has] - 1) // 2, start[has] + cnt[has] // 2
    out[has] = (values[lo] + values[hi]) / 2
    return out


def noise_sigma_m(
    lat: np.ndarray, lng: np.ndarray, t: np.ndarray, aid: np.ndarray, k: int
) -> np.ndarray:
    """Each activity's GPS noise (sigma, metres, capped at ``NOISE_CAP_M``), from the median
    distance of its fixes from where their neighbours place them (time-weighted midpoint).

    A median, so spikes, cold starts and turns (a minority of fixes) do not move it; one
    sort over (activity, distance), O(n log n). 0 for activities of fewer than 3 fixes.
    """
    sigma = np.zeros(k)
    if len(t) < 3:
        return sigma
    inner = aid[:-2] == aid[2:]  # aid never decreases: both neighbours are of this activity
    span = t[2:] - t[:-2]
    w = np.where(span > 0, (t[1:-1] - t[:-2]) / np.where(span > 0, span, 1.0), 0.5)
    dy = lat[1:-1] - (lat[:-2] + w * (lat[2:] - lat[:-2]))
    dx = (lng[1:-1] - (lng[:-2] + w * (lng[2:] - lng[:-2]))) * np.cos(np.radians(lat[1:-1]))
    dev = M_PER_DEG * np.sqrt(dx * dx + dy * dy)
    median = _median_per_activity(dev[inner], aid[1:-1][inner], k)
    return np.minimum(median / MEDIAN_PER_SIGMA, NOISE_CAP_M)


def _fill_short_gaps(fast: np.ndarray, t: np.ndarray, piece_first: np.ndarray) -> np.ndarray:
    """``fast`` plus the fixes between two fast ones of a piece at most MIN_RUN_S apart.

    Near a vehicle, noise makes the window's verdict flicker; a fix left between two
    flagged ones would be a piece of its own, seconds long.
    """
    n = len(t)
    if n == 0:
        return fast
    pos = np.arange(n)
    piece = np.cumsum(piece_first) - 1
    before = np.maximum.accumulate(np.where(fast, pos, -1))
    after = np.minimum.accumulate(np.where(fast, pos, n)[::-1])[::-1]
    inside = (before >= 0) & (after < n)
    b, a = np.where(inside, before, 0), np.where(inside, after, 0)
    return fast | (inside & (piece[b] == piece) & (piece[a] == piece) & (t[a] - t[b] <= MIN_RUN_S))


def _fast_piece_ends(
    lat: np.ndarray,
    lng: np.ndarray,
    t: np.ndarray,
    piece_first: np.ndarray,
    vmax: np.ndarray,
    extra: np.ndarray,
) -> np.ndarray:
    """Fixes of a piece's first (last) ``WINDOW_S / 2`` up to the last (from the first) one
    that is too far from the piece's first (last) fix for the time between.

    The centred window averages such a stub with the honest fixes after it; measured
    from the piece's end it is seen whole. Honest movement never trips it (its speed
    stays under vmax and its noise under the slack), so it only ever cuts vehicle fixes
    and the honest ones within ``WINDOW_S / 2`` of them.
    """
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype=bool)
    first = np.flatnonzero(piece_first)
    last = np.append(first[1:] - 1, n - 1)
    piece = np.cumsum(piece_first) - 1
    pos = np.arange(n)
    slack = WINDOW_NOISE_M + extra
    s, e = first[piece], last[piece]
    since, until = t - t[s], t[e] - t
    head = (since <= WINDOW_S / 2) & (haversine_m(lat[s], lng[s], lat, lng) - slack > vmax * since)
    tail = (until <= WINDOW_S / 2) & (haversine_m(lat, lng, lat[e], lng[e]) - slack > vmax * until)
    head_to = np.maximum.reduceat(np.where(head, pos, -1), first)
    tail_from = np.minimum.reduceat(np.where(tail, pos, n), first)
    return (pos <= head_to[piece]) | (pos >= tail_from[piece])


def _too_fast_over_window(
    lat: np.ndarray,
    lng: np.ndarray,
    t: np.ndarray,
    piece_first: np.ndarray,
    vmax: np.ndarray,
    extra: np.ndarray,
) -> np.ndarray:
    """Fixes whose +-WINDOW_S/2 neighbourhood (within their piece) moves faster than vmax.

    Times become integer keys (piece number, then milliseconds since the piece began),
    so one sorted search finds every window, exactly and whatever else is in the batch.
    """
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype=bool)
    piece = np.cumsum(piece_first) - 1
    start_of = np.flatnonzero(piece_first)
    rel_ms = np.rint((t - t[start_of][piece]) * 1000.0)
    key = piece * _KEY_MS + np.minimum(rel_ms, _KEY_MS - 1).astype(np.int64)
    half = int(WINDOW_S * 500)
    lo = np.searchsorted(key, key - half)
    hi = np.searchsorted(key, key + half, side="right") - 1
    span = t[hi] - t[lo]
    dist = haversine_m(lat[lo], lng[lo], lat[hi], lng[hi])
    return (span > 0) & ((dist - WINDOW_NOISE_M - extra) > vmax * span)
