"""A recorder's clock going backwards: a reset (the device took the GPS time, a time zone
fix), a lone wrong time, or fixes written out of order.

The stream contract asks for non-decreasing times, but a whole ride refused for one step
back would lose every good fix of it. So, in a fixed number of numpy passes (O(n log n),
the loop below runs once per reset):

1. A *wrong time*: a fix out of order with a neighbour whose time lies more than
   ``CLOCK_GLITCH_S`` from the median of the 7 fixes around it (a corrupt record, a GPS
   week rollover on one fix) is dropped; the fixes around it agree with each other, so
   it is not the clock that moved. Up to three in a row are caught so.
2. A *reset*: a step back of more than ``CLOCK_GLITCH_S`` that the fixes after it keep.
   Which clock was right cannot be known, so the longest stretch between resets (most
   fixes) keeps its times, and each other stretch keeps its own spacing and is moved to
   lie ``CLOCK_RESET_GAP_S`` from its neighbour: a gap the cleaner splits at, so no line
   is drawn across a step whose duration is unknown. A stretch moved before the start
   moves the start with it (``start_shift_s``).
3. Fixes up to ``CLOCK_GLITCH_S`` out of order (written out of order; a stream sent
   newest first) are put back in time order: their positions move with their times.

A record with more wrong times or resets than good steps is not a clock with a fault but
no clock (``untangle_clock`` raises nothing: the caller names the record).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from heatmetro.core.limits import PAUSE_SPLIT_S

__all__ = ["CLOCK_GLITCH_S", "CLOCK_RESET_GAP_S", "Untangled", "untangle_clock"]

CLOCK_GLITCH_S = 30.0
CLOCK_RESET_GAP_S = PAUSE_SPLIT_S + 1.0
_WINDOW = 7  # fixes around each one whose median time judges it


@dataclass(frozen=True, slots=True)
class Untangled:
    keep: np.ndarray  # indexes of the fixes kept, in their new (time) order
    t: np.ndarray  # their times, non-decreasing, from the (possibly moved) start
    resets: int  # steps back taken as clock resets
    wrong: int  # fixes dropped as wrong times
    start_shift_s: float = 0.0  # <= 0: how far the start moved back (a stretch before it)


def untangle_clock(t: np.ndarray) -> Untangled:
    """Non-decreasing times for ``t`` (seconds since the start), and the fixes to keep."""
    n = len(t)
    if n < 2 or bool((t[1:] >= t[:-1]).all()):
        return Untangled(np.arange(n), t, 0, 0)
    with np.errstate(over="ignore", invalid="ignore"):
        idx = np.arange(n)
        if n >= _WINDOW:
            idx = idx[~_wrong_times(t)]
        tt = t[idx]
        step = np.diff(tt)
        reset = np.flatnonzero(step < -CLOCK_GLITCH_S) + 1
        shift = _stretch_shifts(tt, reset)
        moved = tt + shift
        order = np.argsort(moved, kind="stable")
        keep, out = idx[order], moved[order]
        start = min(float(out[0]), 0.0)
        return Untangled(keep, out - start, len(reset), n - len(idx), start)


def _wrong_times(t: np.ndarray) -> np.ndarray:
    half = _WINDOW // 2
    med = np.median(sliding_window_view(np.pad(t, half, mode="reflect"), _WINDOW), axis=1)
    disorder = np.zeros(len(t), dtype=bool)
    disorder[1:] |= t[1:] < t[:-1]
    disorder[:-1] |= t[:-1] > t[1:]
    return disorder & (np.abs(t - med) > CLOCK_GLITCH_S)


def _stretch_shifts(tt: np.ndarray, reset: np.ndarray) -> np.ndarray:
    """Per fix, the shift of its stretch: 0 for the longest, the others placed
    ``CLOCK_RESET_GAP_S`` after (before) the stretch before (after) them."""
    if not len(reset):
        return np.zeros(len(tt))
    bounds = np.concatenate(([0], reset, [len(tt)]))
    lo = np.minimum.reduceat(tt, bounds[:-1]).tolist()  # a stretch's earliest and latest
    hi = np.maximum.reduceat(tt, bounds[:-1]).tolist()
    main = int(np.argmax(np.diff(bounds)))
    s = [0.0] * len(lo)
    for k in range(main + 1, len(lo)):
        s[k] = hi[k - 1] + s[k - 1] + CLOCK_RESET_GAP_S - lo[k]
    for k in range(main - 1, -1, -1):
        s[k] = lo[k + 1] + s[k + 1] - CLOCK_RESET_GAP_S - hi[k]
    return np.repeat(np.array(s), np.diff(bounds))
