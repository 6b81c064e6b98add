"""Builders for synthetic stream events in real places (shared by the tests).

Streets are straight lines of GPS points every ~5 m sampled each second, long enough
that the hidden start/end (200 m + up to 150 m by default) leaves a middle stretch.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

# Elm Street, Northampton MA, running roughly west -> east (lat, lng).
NORTHAMPTON_WEST = (42.3195, -72.6450)
NORTHAMPTON_EAST = (42.3195, -72.6250)
# A parallel street ~1.1 km north, for "another street" cases.
NORTH_WEST = (42.3295, -72.6450)
NORTH_EAST = (42.3295, -72.6250)


def line(
    start: tuple[float, float], end: tuple[float, float], step_m: float = 5.0
) -> list[list[float]]:
    """Points from ``start`` to ``end`` about every ``step_m`` metres (lat, lng)."""
    dlat = (end[0] - start[0]) * 111_195.0
    dlng = (end[1] - start[1]) * 111_195.0 * math.cos(math.radians(start[0]))
    n = max(2, int(math.hypot(dlat, dlng) / step_m) + 1)
    return [
        [
            round(start[0] + (end[0] - start[0]) * i / (n - 1), 7),
            round(start[1] + (end[1] - start[1]) * i / (n - 1), 7),
        ]
        for i in range(n)
    ]


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def athlete(athlete_id: str, *, updated: datetime | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "athlete",
        "athlete_id": athlete_id,
        "updated_at": iso(updated or datetime(2020, 1, 1, tzinfo=UTC)),
        **fields,
    }


def activity(
    activity_id: str,
    athlete_id: str,
    points: list[list[float]],
    *,
    start: datetime | None = None,
    utc_offset_s: int = -14400,
    seconds_per_point: float = 1.0,
    updated: datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    start = start or datetime(2021, 6, 15, 11, 0, tzinfo=UTC)
    event = {
        "kind": "activity",
        "activity_id": activity_id,
        "athlete_id": athlete_id,
        "updated_at": iso(updated or start + timedelta(hours=1)),
        "sport_type": "Ride",
        "visibility": "everyone",
        "hide_map": False,
        "commute": False,
        "start_date": iso(start),
        "utc_offset_s": utc_offset_s,
        "streams": {
            "latlng": points,
            "time": [round(i * seconds_per_point) for i in range(len(points))],
        },
    }
    event.update(fields)
    return event


def deleted(activity_id: str, athlete_id: str, *, updated: datetime) -> dict[str, Any]:
    return {
        "kind": "activity_deleted",
        "activity_id": activity_id,
        "athlete_id": athlete_id,
        "updated_at": iso(updated),
    }


def street_rides(
    n_athletes: int, *, prefix: str = "a", reverse: bool = False, **kw: Any
) -> list[dict[str, Any]]:
    """``n_athletes`` athletes riding Elm Street once each (west->east, or east->west)."""
    pts = (
        line(NORTHAMPTON_EAST, NORTHAMPTON_WEST)
        if reverse
        else line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)
    )
    return [activity(f"{prefix}{i}-r1", f"{prefix}{i}", pts, **kw) for i in range(n_athletes)]


def to_jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)
