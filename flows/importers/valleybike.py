"""ValleyBike rides -> v1 stream events (athlete, activity, activity_deleted): the demo stream.

Each ``route_id`` becomes one activity and each ``user_id`` one athlete. The data carries
no privacy settings, so a realistic spread is drawn from a hash of the ids: the same input
always gives the same events, byte for byte, without any global random state.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from heatmetro.core.contract import (
    ActivityDeletedEvent,
    ActivityEvent,
    AthleteEvent,
    Event,
    PrivacyZone,
)
from heatmetro.flows.importers.valleybike_csv import (
    ATHLETE_UPDATED_AT,
    Ride,
    read_rides,
    sha_hex,
)

# --------------------------------------------------------------------------- settings


def _draws(kind: str, key: str) -> list[float]:
    """Eight independent uniform numbers in [0, 1) derived from ``kind`` and ``key``."""
    digest = hashlib.sha256(f"heatmetro-valleybike:{kind}:{key}".encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in range(0, 32, 4)]


def _hide_distance(u: float) -> int:
    # Mostly the platform default, some who turned it off, a few who widened it.
    if u < 0.70:
        return 200
    if u < 0.85:
        return 0
    return 400 if u < 0.95 else 800


def _frequent_end(rides: list[Ride]) -> tuple[float, float]:
    """Mean of the last fixes in the athlete's most used end location (~100 m cells)."""
    groups: dict[tuple[float, float], list[list[float]]] = defaultdict(list)
    for ride in rides:
        lat, lng = ride.latlng[-1]
        groups[(round(lat, 3), round(lng, 3))].append([lat, lng])
    counts = Counter({key: len(v) for key, v in groups.items()})
    # Ties broken by the key itself so the choice never depends on input order.
    best = min(counts, key=lambda k: (-counts[k], k))
    ends = np.array(groups[best])
    return round(float(ends[:, 0].mean()), 5), round(float(ends[:, 1].mean()), 5)


def athlete_event(user_id: str, rides: list[Ride]) -> dict:
    """The athlete's privacy settings, drawn deterministically from the user id."""
    u = _draws("athlete", user_id)
    zones = []
    if u[2] < 0.15 and rides:
        lat, lng = _frequent_end(rides)
        zones.append({"lat": lat, "lng": lng, "radius_m": 200 + 10 * int(u[3] * 21)})
    return _json(
        AthleteEvent,
        kind="athlete",
        athlete_id="vb-" + sha_hex(user_id)[:12],
        updated_at=ATHLETE_UPDATED_AT,
        aggregate_opt_out=u[0] < 0.03,
        hide_start_end_m=_hide_distance(u[1]),
        privacy_zones=[PrivacyZone(**z) for z in zones],
    )


def _json(model: type[Event], **fields: Any) -> dict:
    """The event as a JSON-ready dict, validated by the contract's own model: the demo
    stream cannot drift from the contract (an invalid field fails here, not at ingest)."""
    return model.model_validate(fields).model_dump(mode="json", exclude_none=True)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_commute(local: datetime) -> bool:
    return local.weekday() < 5 and (6 <= local.hour <= 9 or 15 <= local.hour <= 18)


def activity_event(ride: Ride) -> dict:
    """The v1 ``activity`` event for a ride, with drawn visibility/sport/hide_map."""
    u = _draws("activity", ride.route_id)
    visibility = "everyone" if u[0] < 0.85 else "followers_only" if u[0] < 0.95 else "only_me"
    return _json(
        ActivityEvent,
        kind="activity",
        activity_id=ride.activity_id,
        athlete_id=ride.athlete_id,
        updated_at=_iso(ride.start + timedelta(hours=1)),
        sport_type="EBikeRide" if u[2] < 0.03 else "Ride",
        visibility=visibility,
        hide_map=u[1] < 0.02,
        commute=_is_commute(ride.local_start),
        start_date=_iso(ride.start),
        utc_offset_s=ride.utc_offset_s,
        streams={"latlng": ride.latlng, "time": ride.time},
    )


def _is_deleted(ride: Ride) -> bool:
    return _draws("activity", ride.route_id)[3] < 0.01


def deleted_event(ride: Ride) -> dict:
    """An ``activity_deleted`` event one day after the activity was last updated."""
    return _json(
        ActivityDeletedEvent,
        kind="activity_deleted",
        activity_id=ride.activity_id,
        athlete_id=ride.athlete_id,
        updated_at=_iso(ride.start + timedelta(days=1, hours=1)),
    )


# --------------------------------------------------------------------------- output


def valleybike_events(paths: Iterable[Path]) -> Iterator[dict]:
    """Turn ValleyBike CSVs into v1 events in a deterministic order.

    Activities come sorted by (start_date, activity_id); each athlete's ``athlete`` event
    comes right before their first activity, and a drawn ~1% of activities are followed
    by an ``activity_deleted`` event.

    Args:
        paths: ``.csv.gz`` files; order and duplicates do not matter.

    Yields:
        Plain JSON-serialisable dicts following the stream contract v1.
    """
    rides = read_rides(paths)
    rides.sort(key=lambda r: (r.start, r.activity_id))
    by_user: dict[str, list[Ride]] = defaultdict(list)
    for ride in rides:
        by_user[ride.user_id].append(ride)
    announced: set[str] = set()
    for ride in rides:
        if ride.user_id not in announced:
            announced.add(ride.user_id)
            yield athlete_event(ride.user_id, by_user[ride.user_id])
        yield activity_event(ride)
        if _is_deleted(ride):
            yield deleted_event(ride)
