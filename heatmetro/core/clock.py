"""A recorder's clock going backwards: a reset (the device took the GPS time, a time zone
fix) or a few fixes written out of order.

The stream contract asks for non-decreasing times, but a whole ride refused for one
step back would lose every good fix of it. So, in one pass (O(n)):

* a step back of more than ``CLOCK_GLITCH_S`` is a *reset*: which clock was right cannot
  be known, so the fixes after it keep their own spacing and continue from the fix before
  it, ``CLOCK_RESET_GAP_S`` later: a gap the cleaner splits at, so no line is drawn across
  a step whose duration is unknown;
* a fix earlier than one before it by at most ``CLOCK_GLITCH_S`` (written out of order)
  is dropped, like a repeated position: the fixes around it carry the track.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heatmetro.core.limits import PAUSE_SPLIT_S

__all__ = ["CLOCK_GLITCH_S", "CLOCK_RESET_GAP_S", "Untangled", "untangle_clock"]

CLOCK_GLITCH_S = 30.0
CLOCK_RESET_GAP_S = PAUSE_SPLIT_S + 1.0


@dataclass(frozen=True, slots=True)
class Untangled:
    keep: np.ndarray  # indexes of the fixes kept, in order
    t: np.ndarray  # their times, non-decreasing
    resets: int  # steps back taken as clock resets
    glitches: int  # fixes dropped as written out of order


def untangle_clock(t: np.ndarray) -> Untangled:
    """Non-decreasing times for ``t`` (seconds), with the fixes that keep them."""
    if len(t) < 2 or bool((t[1:] >= t[:-1]).all()):
        return Untangled(np.arange(len(t)), t, 0, 0)
    step = np.diff(t)
    reset = step < -CLOCK_GLITCH_S
    shift = np.zeros(len(t))
    shift[1:] = np.cumsum(np.where(reset, CLOCK_RESET_GAP_S - step, 0.0))
    shifted = t + shift
    keep = np.flatnonzero(shifted >= np.maximum.accumulate(shifted))
    return Untangled(keep, shifted[keep], int(reset.sum()), len(t) - len(keep))
