"""GPS clean-up and privacy trimming of one activity's points, before anything is stored.

Order matters: clean first (so a teleport cannot stretch the hidden distance), then cut
the hidden start/end along the track, then remove privacy zones and split there, then
split at gaps too long to bridge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heatmetro.core.geo import step_lengths_m
from heatmetro.state.settings import EffectiveZone, points_in_zones

GPS_NOISE_M = 10.0  # jitter a still receiver shows; not counted as movement when checking speed


@dataclass(frozen=True, slots=True)
class TrimmedPoints:
    lat: np.ndarray
    lng: np.ndarray
    t: np.ndarray
    seg: np.ndarray  # piece number; a new piece starts after a zone or a long gap
    step: np.ndarray  # metres from each point to the next (meaningful within a piece)


def clean(
    lat: np.ndarray, lng: np.ndarray, t: np.ndarray, max_speed: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indexes of the usable fixes (no repeated positions, no teleports), and the step
    lengths between them when already known."""
    n = len(lat)
    if n == 0:
        return np.zeros(0, dtype=np.int64), None
    moved = np.ones(n, dtype=bool)
    moved[1:] = (lat[1:] != lat[:-1]) | (lng[1:] != lng[:-1])
    idx = np.flatnonzero(moved)
    if len(idx) < 2:
        return idx, None
    step = step_lengths_m(lat[idx], lng[idx])
    dt = np.diff(t[idx])
    fast = (step - GPS_NOISE_M) > max_speed * np.maximum(dt, 1.0)
    if not fast.any():
        return idx, step
    return _drop_teleports(lat, lng, t, idx, max_speed), None


def _drop_teleports(lat, lng, t, idx, max_speed):  # type: ignore[no-untyped-def]
    """Greedy: keep a fix only if reachable from the last kept one (rare, so a loop)."""
    from heatmetro.core.geo import haversine_m

    kept = [int(idx[0])]
    for i in idx[1:].tolist():
        j = kept[-1]
        d = float(haversine_m(lat[j], lng[j], lat[i], lng[i]))
        if d - GPS_NOISE_M <= max_speed * max(t[i] - t[j], 1.0):
            kept.append(i)
    # A bad first fix would reject everything after it: keep the longer reading.
    if len(kept) < len(idx) / 2:
        rest = _drop_teleports(lat, lng, t, idx[1:], max_speed) if len(idx) > 2 else idx[1:]
        if len(rest) > len(kept):
            return rest
    return np.asarray(kept, dtype=np.int64)


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
    idx, step = clean(lat, lng, t, max_speed)
    lat, lng, t = lat[idx], lng[idx], t[idx]
    if len(lat) < 2:  # never moved (a bike left at its dock): nothing to draw or count
        empty = np.zeros(0)
        return TrimmedPoints(empty, empty, empty, np.zeros(0, np.int64), empty)
    n = len(lat)
    if step is None:
        step = step_lengths_m(lat, lng)
    along = np.zeros(n)
    np.cumsum(step, out=along[1:])
    keep = (along >= cut_start_m) & (along <= along[-1] - cut_end_m)
    if zones:
        keep &= ~points_in_zones(lat, lng, zones)
    # A new piece starts at the first kept point after a removed one, or after a long gap.
    starts = keep.copy()
    starts[1:] &= ~keep[:-1] | (step > max_gap_m)
    seg = np.cumsum(starts) - 1
    kept = np.flatnonzero(keep)
    # Kept neighbours of one piece are neighbours in the input too, so their step is known.
    kept_step = step[kept[:-1]] if len(kept) > 1 else np.zeros(0)
    return TrimmedPoints(lat[kept], lng[kept], t[kept], seg[kept], kept_step)
