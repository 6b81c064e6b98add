"""The stream contract (v1): one JSON object per message, validated with pydantic.

``parse_event`` turns one raw message into a typed event or raises ``StreamRecordError``
with a one-line reason that names the record and the value ("activity r-1001:
latlng[17] = (91.2, 8.5): latitude out of range").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from heatmetro.errors import StreamRecordError

Visibility = Literal["everyone", "followers_only", "only_me"]
MAX_HIDE_M = 1609.0  # one mile: the platforms' largest hide distance


def epoch_ms(ts: datetime) -> int:
    """Milliseconds since 1970 of an aware datetime (what the store compares)."""
    return int(round(ts.timestamp() * 1000))


class _Event(BaseModel):
    # Unknown extra fields are ignored (the contract allows producers to add some).
    model_config = ConfigDict(extra="ignore", frozen=True)


class PrivacyZone(_Event):
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)
    radius_m: float = Field(gt=0, le=10_000, allow_inf_nan=False)


class AthleteEvent(_Event):
    kind: Literal["athlete"]
    athlete_id: str = Field(min_length=1, max_length=200)
    updated_at: AwareDatetime
    aggregate_opt_out: bool = False
    hide_start_end_m: float | None = Field(None, ge=0, le=MAX_HIDE_M, allow_inf_nan=False)
    privacy_zones: list[PrivacyZone] = Field(default_factory=list, max_length=100)


class Streams(_Event):
    latlng: list[tuple[float, float]]
    time: list[float]


class ActivityEvent(_Event):
    kind: Literal["activity"]
    activity_id: str = Field(min_length=1, max_length=200)
    athlete_id: str = Field(min_length=1, max_length=200)
    updated_at: AwareDatetime
    sport_type: str = Field(min_length=1, max_length=100)
    visibility: Visibility
    hide_map: bool = False
    commute: bool = False
    start_date: AwareDatetime
    utc_offset_s: int = Field(ge=-14 * 3600, le=14 * 3600)
    hide_start_end_m: float | None = Field(None, ge=0, le=MAX_HIDE_M, allow_inf_nan=False)
    streams: Streams


class ActivityDeletedEvent(_Event):
    kind: Literal["activity_deleted"]
    activity_id: str = Field(min_length=1, max_length=200)
    athlete_id: str = Field(min_length=1, max_length=200)
    updated_at: AwareDatetime


Event = AthleteEvent | ActivityEvent | ActivityDeletedEvent
_EVENT = TypeAdapter(Annotated[Event, Field(discriminator="kind")])


def _record_name(raw: bytes | str) -> str:
    """Best-effort "activity r-1001" for an invalid record, for the reason line."""
    try:
        import orjson

        obj = orjson.loads(raw)
    except Exception:
        return "record"
    if not isinstance(obj, dict):
        return "record"
    kind = obj.get("kind", "record")
    ident = obj.get("activity_id") or obj.get("athlete_id")
    return f"{kind} {ident}" if ident else str(kind)


def _reason(exc: ValidationError, raw: bytes | str) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
    if err["type"] == "json_invalid":
        return f"invalid JSON: {err['msg'].removeprefix('Invalid JSON: ')}"
    if err["type"] == "union_tag_invalid":
        return f"{_record_name(raw)}: unknown kind {err.get('input', {}).get('kind')!r}"
    if err["type"] == "union_tag_not_found":
        return "record: missing field 'kind'"
    if err["type"] == "model_attributes_type":
        return f"record: expected a JSON object, got {type(err.get('input')).__name__}"
    name = _record_name(raw)
    # The first loc element is the union tag (kind); drop it from the path.
    path = loc.split(".", 1)[1] if "." in loc else loc
    value = err.get("input")
    shown = "" if err["type"] == "missing" else f" = {str(value)[:60]!s}"
    return f"{name}: {path}{shown}: {err['msg'].lower()}"


def parse_event(raw: bytes | str) -> Event:
    """Validate one message against the v1 contract.

    Raises:
        StreamRecordError: with a one-line reason naming the record and the value.
    """
    try:
        event = _EVENT.validate_json(raw)
    except ValidationError as exc:
        raise StreamRecordError(_reason(exc, raw)) from None
    if isinstance(event, ActivityEvent):
        check_streams(event)
    return event


def check_streams(event: ActivityEvent) -> None:
    """Rules pydantic types cannot say: ranges, finiteness, lengths, monotonic time."""
    name = f"activity {event.activity_id}"
    latlng, time = event.streams.latlng, event.streams.time
    if len(latlng) != len(time):
        msg = (
            f"{name}: streams.latlng has {len(latlng)} points but streams.time has "
            f"{len(time)}: they must be parallel"
        )
        raise StreamRecordError(msg)
    if not latlng:
        return
    pts = np.asarray(latlng, dtype=np.float64)
    t = np.asarray(time, dtype=np.float64)
    bad = ~np.isfinite(pts).all(axis=1) | (np.abs(pts[:, 0]) > 90) | (np.abs(pts[:, 1]) > 180)
    if bad.any():
        i = int(np.argmax(bad))
        lat, lng = pts[i]
        what = (
            "not a finite number"
            if not np.isfinite(pts[i]).all()
            else ("latitude out of range" if abs(lat) > 90 else "longitude out of range")
        )
        msg = f"{name}: latlng[{i}] = ({lat}, {lng}): {what}"
        raise StreamRecordError(msg)
    if not np.isfinite(t).all():
        i = int(np.argmax(~np.isfinite(t)))
        msg = f"{name}: time[{i}] = {t[i]}: not a finite number"
        raise StreamRecordError(msg)
    back = np.diff(t) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        msg = f"{name}: time[{i}] = {t[i]:g} < time[{i - 1}] = {t[i - 1]:g}: time goes backwards"
        raise StreamRecordError(msg)
    if t[0] < 0:
        msg = f"{name}: time[0] = {t[0]:g}: must not be negative"
        raise StreamRecordError(msg)
