"""The stream contract (v1): one JSON object per message, validated with pydantic.

``parse_event`` turns one raw message into a typed event or raises ``StreamRecordError``
with a one-line reason that names the record and the value ("activity r-1001:
latlng[17] = (91.2, 8.5): latitude out of range").
"""

from __future__ import annotations

import json
import math
import reprlib
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from heatmetro.core.clock import untangle_clock
from heatmetro.core.errors import StreamRecordError
from heatmetro.core.limits import (
    FIRST_START_YEAR,
    LAST_START_YEAR,
    MAX_DURATION_S,
    MAX_FIXES_PER_ACTIVITY,
    MAX_FUTURE_S,
)
from heatmetro.core.sports import canonical_sport

Visibility = Literal["everyone", "followers_only", "only_me"]
MAX_HIDE_M = 1609.0  # one mile: the platforms' largest hide distance


def epoch_ms(ts: datetime) -> int:
    """Milliseconds since 1970 of an aware datetime (what the store compares)."""
    return int(round(ts.timestamp() * 1000))


class _Event(BaseModel):
    # Unknown extra fields are ignored (the contract allows producers to add some).
    model_config = ConfigDict(extra="ignore", frozen=True)


def _not_from_the_future(value: datetime, info: ValidationInfo) -> datetime:
    """``updated_at`` no later than a day after the wall clock. A version from the future
    outranks every real change after it: its activity's deletion, or the athlete's
    opt-out, would be ignored as stale. (A record refused now is taken by a replay once
    its time has come; none accepted is refused later.) Skipped for a request that only
    hides more (``context={"hides_more": True}``): that one fails closed."""
    if info.context and info.context.get("hides_more"):
        return value
    limit = datetime.now(UTC) + timedelta(seconds=MAX_FUTURE_S)
    if value > limit:
        msg = (
            f"a clock in the future: after now + {MAX_FUTURE_S // 3600} hours "
            f"({limit:%Y-%m-%dT%H:%MZ}); as the newest version it would outrank every later "
            "change to this record, a deletion or opt-out too"
        )
        raise ValueError(msg)
    return value


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

    _updated_not_future = field_validator("updated_at")(_not_from_the_future)


class Track:
    """The validated streams as numpy arrays (lat, lng, seconds since start)."""

    __slots__ = ("lat", "lng", "resets", "start_shift_s", "t", "wrong")

    def __init__(
        self,
        lat: np.ndarray,
        lng: np.ndarray,
        t: np.ndarray,
        start_shift_s: float = 0.0,
        *,
        resets: int = 0,
        wrong: int = 0,
    ) -> None:
        self.lat, self.lng, self.t = lat, lng, t
        # <= 0: the start moved back this far (a stretch of a reset clock put before it).
        self.start_shift_s = start_shift_s
        self.resets, self.wrong = resets, wrong  # clock resets taken, wrong times dropped

    def __len__(self) -> int:
        return len(self.t)


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
    # Validated by ``check_streams`` with numpy: pydantic per-element validation of
    # hundreds of points per activity was the slowest step of ingest.
    streams: Any = Field(repr=False)

    _updated_not_future = field_validator("updated_at")(_not_from_the_future)

    @field_validator("sport_type")
    @classmethod
    def _platform_name(cls, value: str) -> str:
        name = canonical_sport(value)
        if not name:
            msg = "a sport type of spaces only"
            raise ValueError(msg)
        return name

    @field_validator("start_date")
    @classmethod
    def _plausible_start(cls, value: datetime) -> datetime:
        if not FIRST_START_YEAR <= value.year <= LAST_START_YEAR:
            msg = f"a broken clock: expected a year {FIRST_START_YEAR}..{LAST_START_YEAR}"
            raise ValueError(msg)
        return value


class ActivityDeletedEvent(_Event):
    kind: Literal["activity_deleted"]
    activity_id: str = Field(min_length=1, max_length=200)
    athlete_id: str = Field(min_length=1, max_length=200)
    updated_at: AwareDatetime


Event = AthleteEvent | ActivityEvent | ActivityDeletedEvent
_EVENT = TypeAdapter(Annotated[Event, Field(discriminator="kind")])
_BOOL = TypeAdapter(bool)


def _record_name(raw: bytes | str) -> str:
    """Best-effort "activity r-1001" for an invalid record, for the reason line."""
    try:
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
    msg = err["msg"]
    return f"{name}: {path}{shown}: {msg[:1].lower()}{msg[1:]}"  # values keep their case


def parse_event(raw: bytes | str, *, max_fixes: int = MAX_FIXES_PER_ACTIVITY) -> Event:
    """Validate one message against the v1 contract.

    Raises:
        StreamRecordError: with a one-line reason naming the record and the value.
    """
    return validate_event(decode(raw), raw, max_fixes=max_fixes)


def decode(raw: bytes | str) -> Any:
    """Step 1 of ``parse_event``: the JSON value (cheap; done where the stream is read)."""
    try:
        return orjson.loads(raw)  # faster than pydantic's JSON mode on long point arrays
    except orjson.JSONDecodeError as exc:
        raise StreamRecordError(_invalid_json_reason(raw, exc)) from None


def validate_event(obj: Any, raw: bytes | str, *, max_fixes: int = MAX_FIXES_PER_ACTIVITY) -> Event:
    """Step 2 of ``parse_event``: the contract (done by the athlete's worker)."""
    try:
        event = _EVENT.validate_python(obj)
    except ValidationError as exc:
        raise StreamRecordError(_reason(exc, raw)) from None
    if isinstance(event, ActivityEvent):
        track = check_streams(event, max_fixes)
        update: dict[str, Any] = {"streams": track}
        if track.start_shift_s:
            update["start_date"] = event.start_date + timedelta(seconds=track.start_shift_s)
        return event.model_copy(update=update)
    return event


def opt_out_within(obj: Any) -> AthleteEvent | None:
    """The opt-out an ``athlete`` record that breaks the contract still asks for, or None.

    A privacy request fails closed: an ``aggregate_opt_out: true`` is applied even when
    another field is wrong (a hide distance over a mile, a zone of radius 0), as long as
    the record names the athlete and its time. The record itself still goes to the dead
    letters; its other settings are not applied (they are the broken part).
    """
    if not isinstance(obj, dict) or obj.get("kind") != "athlete":
        return None
    try:  # as a valid record reads it: true, "true", 1, "yes" ...
        if not _BOOL.validate_python(obj.get("aggregate_opt_out")):
            return None
    except ValidationError:
        return None
    fields = {"kind": "athlete", "aggregate_opt_out": True}
    fields |= {k: obj.get(k) for k in ("athlete_id", "updated_at")}
    try:  # applied even with a time from the future: it hides more (and stays until then)
        return AthleteEvent.model_validate(fields, context={"hides_more": True})
    except ValidationError:
        return None


def _invalid_json_reason(raw: bytes | str, exc: orjson.JSONDecodeError) -> str:
    """The reason for unparsable JSON; names the record and the value when the only fault
    is a non-finite number (``NaN``/``Infinity``/``1e999``, as Python's json writes them).

    The record is rejected either way: this only makes the reason say where.
    """
    found: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if found:
            return
        if isinstance(node, float) and not math.isfinite(node):
            found.append((path, node_text(node)))
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    def node_text(x: float) -> str:
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")

    try:
        obj = json.loads(raw)  # the stdlib reads NaN, Infinity and overflowing numbers
        walk(obj, "")
    except (ValueError, RecursionError):  # deeper than Python's stack: orjson's reason
        return f"invalid JSON: {exc}"

    if not found:
        return f"invalid JSON: {exc}"
    path, text = found[0]
    name = "record"
    if isinstance(obj, dict):
        kind = obj.get("kind", "record")
        ident = obj.get("activity_id") or obj.get("athlete_id")
        name = f"{kind} {ident}" if ident else str(kind)
    return f"{name}: {path} = {text}: not a finite number (NaN/Infinity are not valid JSON)"


def check_streams(event: ActivityEvent, max_fixes: int = MAX_FIXES_PER_ACTIVITY) -> Track:
    """Rules pydantic types cannot say cheaply: size, shape, ranges, finiteness; and times
    made non-decreasing (``core.clock``: a reset continues, an out-of-order fix goes)."""
    name = f"activity {event.activity_id}"
    streams = event.streams
    if not isinstance(streams, dict) or "latlng" not in streams or "time" not in streams:
        msg = f"{name}: streams must be an object with 'latlng' and 'time' arrays"
        raise StreamRecordError(msg)
    latlng, time = streams["latlng"], streams["time"]
    if not isinstance(latlng, list) or not isinstance(time, list):
        msg = f"{name}: streams.latlng and streams.time must be arrays"
        raise StreamRecordError(msg)
    if len(latlng) != len(time):
        msg = (
            f"{name}: streams.latlng has {len(latlng)} points but streams.time has "
            f"{len(time)}: they must be parallel"
        )
        raise StreamRecordError(msg)
    n = len(latlng)
    if n > max_fixes:
        msg = (
            f"{name}: {n:,} fixes: more than the limit of {max_fixes:,} per activity "
            "(max_fixes_per_activity)"
        )
        raise StreamRecordError(msg)
    try:
        # numpy infers the type, so a string or a nested list shows up as a non-numeric
        # dtype; map(len) (in C) finds a pair that is not a pair.
        if n and set(map(len, latlng)) != {2}:
            raise ValueError
        # Flattening first is ~1.5x faster than converting the nested lists.
        flat = list(chain.from_iterable(latlng))
        # JSON true/false would pass as 1 and 0 (a point off Africa); the type scan is in C
        # (~16 ms for 200,000 fixes, against ~36 ms to convert them).
        if bool in set(map(type, flat)) or bool in set(map(type, time)):
            raise ValueError
        pts = np.array(flat).reshape(n, 2) if n else np.zeros((0, 2))
        t = np.array(time) if n else np.zeros(0)
        if pts.dtype.kind not in "fiu" or t.dtype.kind not in "fiu" or t.ndim != 1:
            raise ValueError
        pts = pts.astype(np.float64, copy=False)
        t = t.astype(np.float64, copy=False)
    except (ValueError, TypeError):
        msg = f"{name}: {_first_malformed(latlng, time)}"
        raise StreamRecordError(msg) from None
    if len(t) == 0:
        return Track(pts[:, 0], pts[:, 1], t)
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
    if t[0] < 0:
        msg = f"{name}: time[0] = {t[0]:g}: must not be negative"
        raise StreamRecordError(msg)
    # A clock going back is a device's fault, not a reason to lose the ride (core.clock).
    clock = untangle_clock(t)
    faults = clock.resets + clock.wrong
    if 2 * faults > n:
        msg = (
            f"{name}: time goes back at {faults:,} of {n:,} fixes ({clock.wrong:,} wrong "
            f"times, {clock.resets:,} resets): no clock to read (time must rise)"
        )
        raise StreamRecordError(msg)
    kept_t, keep = clock.t, clock.keep
    if kept_t[-1] > MAX_DURATION_S:
        raw = np.flatnonzero(t > MAX_DURATION_S)
        i = int(raw[0]) if len(raw) else int(keep[-1])
        why = f"time[{i}] = {t[i]:g}" if len(raw) else f"{clock.resets:,} clock resets"
        msg = (
            f"{name}: {why}: more than {MAX_DURATION_S // 86400} days after the start "
            "(a broken clock)"
        )
        raise StreamRecordError(msg)
    return Track(
        pts[keep, 0], pts[keep, 1], kept_t, clock.start_shift_s,
        resets=clock.resets, wrong=clock.wrong,
    )  # fmt: skip


def _short(value: Any) -> str:
    """At most 40 characters of a refused value; nested lists only a few levels deep
    (``str`` of a list nested 1,000 deep exhausts Python's stack)."""
    text = reprlib.repr(value) if isinstance(value, list | tuple | dict) else str(value)
    return text[:40]


def _first_malformed(latlng: list[Any], time: list[Any]) -> str:
    for i, p in enumerate(latlng):
        ok = isinstance(p, list | tuple) and len(p) == 2
        if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in p):
            return f"latlng[{i}] = {_short(p)}: expected [lat, lng] numbers"
    for i, v in enumerate(time):
        if not isinstance(v, int | float) or isinstance(v, bool):
            return f"time[{i}] = {_short(v)}: expected a number of seconds"
    return "streams: malformed"
