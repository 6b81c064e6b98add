"""Which parts of a stored path were recorded at night (between sunset and sunrise).

Night is decided per path row (an H3 cell and the time the track entered it) from the
sun at that place and local date, computed with astral. astral is pure Python and
costs ~0.1 ms a call, so sun times are computed once per (local date, UTC offset,
res-4 cell) and reused for every row sharing them, then moved to each row's own place:
by 240 s a degree of longitude east (the Earth turns 360 degrees a day) and by their
slope with latitude, taken from astral 0.05 degrees north of the cell's centre. A res-4
cell is ~45 km across: its centre's times alone were up to 164 s off in Helsinki at
midsummer and 14 minutes in Tromso near the polar night; moved, they are within 2 s,
and ~3 minutes in Tromso's last days of sun, where the times bend too fast to follow.

Polar days and nights (no sunrise or no sunset that date) are handled from the sun's
elevation at local noon.

astral's own sunrise and sunset jump where the event falls near 00:00 UTC: its
``time_of_transit`` then takes the sun's declination of the wrong day, which moves the
event by a day's change (~35 s at 53 degrees north in June, minutes in the far north near
an equinox) between two places a few metres apart. Each time is therefore refined to
the instant the sun's centre is at astral's sunrise zenith (``HORIZON_ZENITH``, from
astral's sun position at that instant, which it reads to the second): continuous in
place and date to within a second, so the times moved to a row's own place stay within
a few seconds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import lru_cache

import h3.api.basic_int as h3
import numpy as np
from astral import Observer, SunDirection
from astral.sun import SUN_APPARENT_RADIUS, elevation, refraction_at_zenith, time_of_transit, zenith

from heatmetro.core.h3_vector import cells_to_latlng
from heatmetro.state.aggregates import cells_to_parent
from heatmetro.state.records import PATH_DTYPE

SUN_CELL_RES = 4
SECONDS_PER_DEGREE_EAST = 240.0  # the sun's events come this much earlier a degree east
_SLOPE_STEP_DEG = 0.05  # where the latitude slope is measured, north of the centre
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_S = 86_400
_RISE_ZENITH = 90.0 + SUN_APPARENT_RADIUS  # what ``astral.sun.sunrise`` asks for
#: The sun's geometric zenith angle (degrees) at astral's sunrise and sunset: its upper
#: edge on the horizon, lifted by refraction (what ``astral.sun.time_of_transit`` solves).
HORIZON_ZENITH = _RISE_ZENITH + refraction_at_zenith(_RISE_ZENITH)
_REFINE_STEPS = 6  # secant steps at most (one or two: see ``_at_horizon``)


@lru_cache(maxsize=200_000)
def sun_times(cell: int, day: int, utc_offset_s: int) -> tuple[float, float]:
    """(sunrise, sunset) in UTC epoch seconds at ``cell``'s centre on local ``day``.

    ``day`` counts local days since 1970-01-01. Polar day gives ``(-inf, inf)`` (no
    night at all), polar night ``(inf, -inf)`` (every moment is night).
    """
    lat, lng = h3.cell_to_latlng(cell)
    return _sun_times_at(lat, lng, day, utc_offset_s)


@lru_cache(maxsize=200_000)
def sun_slopes(cell: int, day: int, utc_offset_s: int) -> tuple[float, float]:
    """How (sunrise, sunset) at ``cell``'s centre move per degree north (s/degree);
    0 where either is not finite there or just north of it (polar day or night)."""
    lat, lng = h3.cell_to_latlng(cell)
    here = sun_times(cell, day, utc_offset_s)  # cached: asked for the same group first
    north = _sun_times_at(lat + _SLOPE_STEP_DEG, lng, day, utc_offset_s)
    if not all(np.isfinite(v) for v in (*here, *north)):
        return (0.0, 0.0)
    return (
        (north[0] - here[0]) / _SLOPE_STEP_DEG,
        (north[1] - here[1]) / _SLOPE_STEP_DEG,
    )


def _sun_times_at(lat: float, lng: float, day: int, utc_offset_s: int) -> tuple[float, float]:
    observer = Observer(latitude=lat, longitude=lng)
    when = date.fromordinal(day + _EPOCH_ORDINAL)
    rise = _event(observer, when, utc_offset_s, SunDirection.RISING)
    fall = _event(observer, when, utc_offset_s, SunDirection.SETTING)
    if rise is None or fall is None:  # the sun does not cross the horizon that day
        tz = timezone(timedelta(seconds=utc_offset_s))
        noon = datetime.combine(when, time(12), tzinfo=tz).astimezone(UTC)
        if elevation(observer, noon) > -0.833:  # astral's sunrise/sunset altitude
            return (-np.inf, np.inf)
        return (np.inf, -np.inf)
    return (rise, fall)


def _event(
    observer: Observer, when: date, utc_offset_s: int, direction: SunDirection
) -> float | None:
    """Sunrise (``RISING``) or sunset on local date ``when`` (UTC epoch seconds), or None
    when the sun does not cross the horizon that day.

    From astral's ``time_of_transit`` on the UTC dates around ``when``, each refined
    (``_at_horizon``), the one on ``when`` taken: not ``astral.sun.sunrise``, which near
    00:00 UTC can miss the date's event altogether and raise (a res-4 cell at 29 degrees
    south was given no night on such a date: astral's events there fall on the 16th and
    the 18th of September 2021 UTC, none on the 17th).
    """
    day = when.toordinal() - _EPOCH_ORDINAL
    rough: list[float] = []
    for days in (0, -1, 1):
        try:
            at = time_of_transit(observer, when + timedelta(days=days), _RISE_ZENITH, direction)
        except ValueError:  # no crossing that date (polar day or night)
            continue
        t = _at_horizon(observer, at.timestamp())
        if (t + utc_offset_s) // _DAY_S == day:
            return t
        rough.append(at.timestamp())
    # Where astral skips the date's event (its day wraps), a day before's or after's is a
    # few minutes off it: refined from there.
    for estimate in (r + d for r in rough for d in (_DAY_S, -_DAY_S)):
        t = _at_horizon(observer, estimate)
        if (t + utc_offset_s) // _DAY_S == day:
            return t
    return None


def _at_horizon(observer: Observer, estimate: float) -> float:
    """The instant near ``estimate`` (UTC epoch seconds, astral's sunrise or sunset) when
    the sun's geometric zenith at ``observer`` is ``HORIZON_ZENITH`` (see the module's
    docstring); ``estimate`` itself where the sun barely reaches the horizon."""

    def above(t: float) -> float:
        at = datetime.fromtimestamp(t, UTC)
        return float(zenith(observer, at, with_refraction=False)) - HORIZON_ZENITH

    # A secant through two instants a second apart (astral reads a time to the whole
    # second, so its sun moves in steps of a second: the crossing is found to within one).
    # A step of under 2 s ends it, so most events cost two positions of the sun; a
    # farther one (astral's day wrapped) takes a step or two more.
    t0, t1 = estimate, estimate + 1.0
    f0, f1 = above(t0), above(t1)
    for _ in range(_REFINE_STEPS):
        if f1 == f0:
            break
        t0, t1 = t1, t1 - f1 * (t1 - t0) / (f1 - f0)
        if abs(t1 - estimate) > 3600.0:  # grazing: no clean crossing near the estimate
            return estimate
        if abs(t1 - t0) < 2.0:
            break
        f0, f1 = f1, above(t1)
    return t1


def night_rows(cells: np.ndarray, t_utc: np.ndarray, utc_offset_s: np.ndarray) -> np.ndarray:
    """Boolean mask: was each (cell, UTC epoch second) before sunrise or after sunset?

    Args:
        cells: uint64 H3 cells (any resolution >= 4).
        t_utc: float UTC epoch seconds of each row.
        utc_offset_s: int local offset of each row (its activity's ``utc_offset_s``).
    """
    n = len(cells)
    if n == 0:
        return np.zeros(0, dtype=bool)
    t_utc = np.asarray(t_utc, dtype=np.float64)
    offset = np.asarray(utc_offset_s, dtype=np.int64)
    day = np.floor_divide(np.floor(t_utc).astype(np.int64) + offset, _DAY_S)
    parent = cells_to_parent(np.asarray(cells, dtype=np.uint64), SUN_CELL_RES)
    # Group rows by (cell, day, offset) with a lexsort (a structured np.unique is ~10x slower).
    order = np.lexsort((offset, day, parent))
    p, d, o = parent[order], day[order], offset[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (p[1:] != p[:-1]) | (d[1:] != d[:-1]) | (o[1:] != o[:-1])
    group = np.empty(n, dtype=np.int64)
    group[order] = np.cumsum(first) - 1
    keys = list(zip(p[first].tolist(), d[first].tolist(), o[first].tolist(), strict=True))
    times = np.array([sun_times(*k) for k in keys], dtype=np.float64).reshape(-1, 2)
    slopes = np.array([sun_slopes(*k) for k in keys], dtype=np.float64).reshape(-1, 2)
    rise, fall = times[group, 0], times[group, 1]
    dark = (t_utc < rise) | (t_utc >= fall)
    # Moved to each row's own cell (see the module's docstring), which matters only near
    # sunrise or sunset: a row's place in its res-4 cell (< 0.3 degrees from the centre
    # each way, farther in longitude towards the poles) moves the times by less than
    # ``reach``, so rows farther from them keep the centre's verdict.
    c_lat, c_lng = cells_to_latlng(p[first])
    lng_reach = np.minimum(0.3 / np.maximum(np.cos(np.radians(c_lat)), 1e-9), 360.0)
    reach = SECONDS_PER_DEGREE_EAST * lng_reach[:, None] + 0.3 * np.abs(slopes) + 60.0
    with np.errstate(invalid="ignore"):  # inf - inf: polar day or night, never near
        near = (np.abs(t_utc - rise) < reach[group, 0]) | (np.abs(t_utc - fall) < reach[group, 1])
    at = np.flatnonzero(near)
    if len(at):
        g = group[at]
        # (h3o's centres, vectorised: they differ from h3-py's by ~0.01 mm, ~1e-9 s of sun.)
        lat, lng = cells_to_latlng(np.asarray(cells, dtype=np.uint64)[at])
        d_lng = (lng - c_lng[g] + 180.0) % 360.0 - 180.0  # a cell across the antimeridian
        shift = -SECONDS_PER_DEGREE_EAST * d_lng
        d_lat = lat - c_lat[g]
        moved_rise = rise[at] + shift + d_lat * slopes[g, 0]
        moved_fall = fall[at] + shift + d_lat * slopes[g, 1]
        dark[at] = (t_utc[at] < moved_rise) | (t_utc[at] >= moved_fall)
    return dark


def night_path(path: np.ndarray, start_s: int, utc_offset_s: int) -> np.ndarray:
    """The rows of one stored path (``PATH_DTYPE``) recorded at night."""
    if len(path) == 0:
        return np.zeros(0, PATH_DTYPE)
    t = start_s + path["t"].astype(np.float64)
    return path[night_rows(path["cell"], t, np.full(len(path), utc_offset_s))]
