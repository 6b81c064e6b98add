"""Which parts of a stored path were recorded at night (between sunset and sunrise).

Night is decided per path row (an H3 cell and the time the track entered it) from the
sun at that place and local date, computed with astral. astral is pure Python and
costs ~0.1 ms a call, so sun times are computed once per (local date, UTC offset,
res-4 cell) and reused for every row sharing them: a res-4 cell is ~45 km across,
and sunset moves about 4 minutes per degree of longitude, so the error is about a
minute, far below the minutes it takes to ride one street.

Polar days and nights (no sunrise or no sunset that date) are handled from the sun's
elevation at local noon.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import lru_cache

import h3.api.basic_int as h3
import numpy as np
from astral import Observer
from astral.sun import elevation, sunrise, sunset

from heatmetro.state.aggregates import cells_to_parent
from heatmetro.state.records import PATH_DTYPE

SUN_CELL_RES = 4
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_S = 86_400


@lru_cache(maxsize=200_000)
def sun_times(cell: int, day: int, utc_offset_s: int) -> tuple[float, float]:
    """(sunrise, sunset) in UTC epoch seconds at ``cell``'s centre on local ``day``.

    ``day`` counts local days since 1970-01-01. Polar day gives ``(-inf, inf)`` (no
    night at all), polar night ``(inf, -inf)`` (every moment is night).
    """
    lat, lng = h3.cell_to_latlng(cell)
    observer = Observer(latitude=lat, longitude=lng)
    when = date.fromordinal(day + _EPOCH_ORDINAL)
    tz = timezone(timedelta(seconds=utc_offset_s))
    try:
        rise = sunrise(observer, when, tzinfo=tz).timestamp()
        fall = sunset(observer, when, tzinfo=tz).timestamp()
    except ValueError:  # the sun does not cross the horizon that day
        noon = datetime.combine(when, time(12), tzinfo=tz).astimezone(UTC)
        if elevation(observer, noon) > -0.833:  # astral's sunrise/sunset altitude
            return (-np.inf, np.inf)
        return (np.inf, -np.inf)
    return (rise, fall)


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
    times = np.array(
        [
            sun_times(c, dd, oo)
            for c, dd, oo in zip(
                p[first].tolist(), d[first].tolist(), o[first].tolist(), strict=True
            )
        ],
        dtype=np.float64,
    ).reshape(-1, 2)
    rise, fall = times[group, 0], times[group, 1]
    return (t_utc < rise) | (t_utc >= fall)


def night_path(path: np.ndarray, start_s: int, utc_offset_s: int) -> np.ndarray:
    """The rows of one stored path (``PATH_DTYPE``) recorded at night."""
    if len(path) == 0:
        return np.zeros(0, PATH_DTYPE)
    t = start_s + path["t"].astype(np.float64)
    return path[night_rows(path["cell"], t, np.full(len(path), utc_offset_s))]
