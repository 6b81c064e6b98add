"""The night layer's clock: which path cells were ridden between sunset and sunrise.

Checked at two latitudes and seasons against astral's own sunset for the exact place
(the slow reference): Helsinki at midsummer (sunset ~22:50, sunrise ~03:55 local)
and Northampton MA in December (sunset ~16:18 local), with tracks spanning dusk.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import h3.api.basic_int as h3
import numpy as np
import pytest
from astral import Observer
from astral.sun import SUN_APPARENT_RADIUS, refraction_at_zenith, sunrise, sunset, zenith
from hypothesis import example, given, settings
from hypothesis import strategies as st

from heatmetro.state.night import night_path, night_rows, sun_times
from heatmetro.state.records import PATH_DTYPE

HELSINKI = (60.1699, 24.9384)
NORTHAMPTON = (42.3195, -72.6350)
SVALBARD = (78.2232, 15.6267)


def ride(place: tuple[float, float], start: datetime, minutes: int) -> tuple[np.ndarray, int]:
    """A path heading east from ``place``, one res-11 cell per ~10 s, and its start_s."""
    rows = []
    for k in range(minutes * 6):
        lat, lng = place[0], place[1] + k * 0.0003
        rows.append((h3.latlng_to_cell(lat, lng, 11), k * 10.0))
    path = np.zeros(len(rows), PATH_DTYPE)
    path["cell"] = [c for c, _ in rows]
    path["t"] = [t for _, t in rows]
    return path, int(start.timestamp())


def first_night_time(path: np.ndarray, start_s: int, offset: int) -> datetime | None:
    night = night_path(path, start_s, offset)
    if not len(night):
        return None
    return datetime.fromtimestamp(start_s + float(night["t"].min()), tz=UTC)


def test_northampton_december_dusk_splits_at_sunset() -> None:
    est = timezone(timedelta(hours=-5))
    path, start_s = ride(NORTHAMPTON, datetime(2021, 12, 15, 16, 0, tzinfo=est), 40)
    exact = sunset(Observer(*NORTHAMPTON), date(2021, 12, 15), tzinfo=est)
    assert exact.strftime("%H:%M") in {"16:18", "16:19"}  # the well-known winter sunset
    first = first_night_time(path, start_s, -5 * 3600)
    assert first is not None
    # Everything after the first night cell is night; nothing before it.
    mask = night_rows(path["cell"], start_s + path["t"].astype(float), np.full(len(path), -18000))
    assert not mask[: int(mask.argmax())].any() and mask[int(mask.argmax()) :].all()
    # Within 10 s (one cell) plus the res-4 sun cache's ~1 minute of the exact sunset.
    assert abs((first - exact).total_seconds()) <= 90
    # Noon is day, 6 a.m. (sunrise 7:13) is night.
    noon, s_noon = ride(NORTHAMPTON, datetime(2021, 12, 15, 12, 0, tzinfo=est), 5)
    assert first_night_time(noon, s_noon, -18000) is None
    dawn, s_dawn = ride(NORTHAMPTON, datetime(2021, 12, 15, 6, 0, tzinfo=est), 5)
    assert len(night_path(dawn, s_dawn, -18000)) == len(dawn)


def test_helsinki_midsummer_has_almost_no_night() -> None:
    eest = timezone(timedelta(hours=3))
    day = date(2021, 6, 21)
    exact_set = sunset(Observer(*HELSINKI), day, tzinfo=eest)
    exact_rise = sunrise(Observer(*HELSINKI), day, tzinfo=eest)
    assert exact_set.hour == 22 and exact_rise.hour == 3
    # A 21:00 ride in Northampton's December would be pitch dark; here it is daylight.
    evening, s_evening = ride(HELSINKI, datetime(2021, 6, 21, 21, 0, tzinfo=eest), 90)
    assert first_night_time(evening, s_evening, 3 * 3600) is None
    # Across sunset (~22:50): the part after it is night, within a cell and the cache.
    dusk, s_dusk = ride(HELSINKI, datetime(2021, 6, 21, 22, 30, tzinfo=eest), 40)
    first = first_night_time(dusk, s_dusk, 3 * 3600)
    assert first is not None and abs((first - exact_set).total_seconds()) <= 90
    # The short night ends at ~03:55: a 04:30 ride is day again.
    morning, s_morning = ride(HELSINKI, datetime(2021, 6, 22, 4, 30, tzinfo=eest), 20)
    assert first_night_time(morning, s_morning, 3 * 3600) is None


@pytest.mark.parametrize(
    ("month", "is_night"),
    [(6, False), (12, True)],  # midnight sun / polar night
)
def test_polar_day_and_night(month: int, is_night: bool) -> None:
    cell = h3.latlng_to_cell(*SVALBARD, 4)
    day = (datetime(2021, month, 21, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days
    rise, fall = sun_times(cell, day, 3600)
    noon = datetime(2021, month, 21, 11, tzinfo=UTC).timestamp()
    assert (noon < rise or noon >= fall) is is_night


# astral's sunrise zenith (``astral.sun.time_of_transit``): the sun's upper edge on the
# horizon, lifted by refraction; the sun's position decides, not astral's event times.
HORIZON = 90.0 + SUN_APPARENT_RADIUS + refraction_at_zenith(90.0 + SUN_APPARENT_RADIUS)


@settings(max_examples=150, deadline=None)
@given(
    lat=st.floats(-60.0, 62.0),
    lng=st.floats(-179.9, 179.9),
    day=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    sunrise_side=st.booleans(),
    after=st.booleans(),
)
# astral's own sunrise jumps by a day's change here (the event is near 00:00 UTC): its
# time at the row's place was 34 s off the sun's, and the row was judged by it.
@example(lat=53.5, lng=53.0, day=date(2020, 6, 27), sunrise_side=True, after=True)
def test_each_row_is_judged_by_the_sun_at_its_own_place(
    lat: float, lng: float, day: date, sunrise_side: bool, after: bool
) -> None:
    """30 s before or after sunrise (sunset) at the row's own cell, the row is dark exactly
    when the sun there is below the horizon. The sun's times at the res-4 centre alone are
    up to ~3 minutes off ~20 km away (an outside review measured 97 s in Helsinki at
    midsummer)."""
    cell = h3.latlng_to_cell(lat, lng, 11)
    c_lat, c_lng = h3.cell_to_latlng(cell)
    observer = Observer(latitude=c_lat, longitude=c_lng)
    offset = int(round(c_lng / 15.0)) * 3600  # a plausible local offset
    tz = timezone(timedelta(seconds=offset))
    try:
        event = (sunrise if sunrise_side else sunset)(observer, day, tzinfo=tz).timestamp()
    except ValueError:  # no such event that day there
        return
    t = event + (30.0 if after else -30.0)
    local_day = (datetime.fromtimestamp(t, tz=UTC) + timedelta(seconds=offset)).date()
    if local_day != day:  # the event's local date is another: astral's day differs
        return

    def sun_up(s: float) -> bool:
        return zenith(observer, datetime.fromtimestamp(s, UTC), with_refraction=False) < HORIZON

    if sun_up(t - 5.0) != sun_up(t + 5.0):  # within the 5 s the times are moved in
        return
    dark = bool(night_rows(np.array([cell], np.uint64), np.array([t]), np.array([offset]))[0])
    assert dark is not sun_up(t), (c_lat, c_lng, day, t - event)
