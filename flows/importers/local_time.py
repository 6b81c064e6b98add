"""The UTC offset of a place at a moment, for files recorded in UTC.

Most GPX files (and FIT files without a ``local_timestamp``) carry UTC times only, but
Metro counts by local hour: a commute at 8:00 in Boston recorded as 12:00Z would land in
the noon band. The time zone of the first fix (timezonefinder: the zone polygons of
timezone-boundary-builder, offline) and its rules on that date (zoneinfo, so summer
time is right) give the offset the platform would have shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=1)
def _finder():  # type: ignore[no-untyped-def]
    from timezonefinder import TimezoneFinder  # loads its polygons once, only for import

    return TimezoneFinder(in_memory=False)


def utc_offset_at(lat: float, lng: float, when_us: int) -> int | None:
    """Seconds east of UTC at (``lat``, ``lng``) at ``when_us`` (UTC epoch microseconds);
    None where no zone is known (the open sea far from any coast gets ``Etc/GMT±N``)."""
    name = _finder().timezone_at(lat=lat, lng=lng)
    if name is None:
        return None
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    moment = datetime.fromtimestamp(when_us / 1_000_000, tz=UTC).astimezone(zone)
    offset = moment.utcoffset()
    return int(offset.total_seconds()) if offset is not None else None
