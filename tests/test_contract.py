"""The stream contract v1: what parses, and the one-line reason for what does not."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from heatmetro.core.contract import (
    ActivityDeletedEvent,
    ActivityEvent,
    AthleteEvent,
    Track,
    parse_event,
)
from heatmetro.core.errors import HeatmetroError, StreamRecordError
from tests.streams import activity, athlete, deleted

PTS = [[42.3195, -72.645], [42.3196, -72.6449], [42.3197, -72.6448]]


def good_activity(**fields: Any) -> dict[str, Any]:
    return activity("r-1001", "a-17", PTS, **fields)


def with_streams(latlng: Any, time: Any) -> bytes:
    return orjson.dumps(good_activity(streams={"latlng": latlng, "time": time}))


def parse_activity(raw: bytes | str) -> ActivityEvent:
    event = parse_event(raw)
    assert isinstance(event, ActivityEvent)
    return event


def parse_athlete(raw: bytes | str) -> AthleteEvent:
    event = parse_event(raw)
    assert isinstance(event, AthleteEvent)
    return event


def reason(raw: bytes | str) -> str:
    with pytest.raises(StreamRecordError) as info:
        parse_event(raw)
    text = str(info.value)
    assert "\n" not in text and text.strip() == text and 0 < len(text) <= 300, text
    # The project's own error kinds: one base class, and a ValueError for callers.
    assert isinstance(info.value, HeatmetroError) and isinstance(info.value, ValueError)
    return text


# --------------------------------------------------------------------------- valid input

DESIGN_EXAMPLES = [
    b'{"kind": "athlete", "athlete_id": "a-17", "updated_at": "2026-01-02T10:00:00Z",'
    b' "aggregate_opt_out": false, "hide_start_end_m": 200,'
    b' "privacy_zones": [{"lat": 45.5231, "lng": -122.6765, "radius_m": 400}]}',
    b'{"kind": "activity", "activity_id": "r-1001", "athlete_id": "a-17",'
    b' "updated_at": "2026-03-01T08:10:00Z", "sport_type": "Ride", "visibility": "everyone",'
    b' "hide_map": false, "commute": true,'
    b' "start_date": "2026-03-01T07:30:00Z", "utc_offset_s": -28800,'
    b' "streams": {"latlng": [[45.5231, -122.6765], [45.5233, -122.6761]], "time": [0, 4]}}',
    b'{"kind": "activity_deleted", "activity_id": "r-1001", "athlete_id": "a-17",'
    b' "updated_at": "2026-03-02T09:00:00Z"}',
]


def test_design_examples_parse_to_typed_events() -> None:
    ath, act, dele = (parse_event(raw) for raw in DESIGN_EXAMPLES)
    assert isinstance(ath, AthleteEvent)
    assert ath.athlete_id == "a-17" and ath.hide_start_end_m == 200
    assert ath.aggregate_opt_out is False
    assert [(z.lat, z.lng, z.radius_m) for z in ath.privacy_zones] == [(45.5231, -122.6765, 400)]
    assert ath.updated_at == datetime(2026, 1, 2, 10, tzinfo=UTC)

    assert isinstance(act, ActivityEvent)
    assert (act.activity_id, act.athlete_id, act.sport_type) == ("r-1001", "a-17", "Ride")
    assert act.visibility == "everyone" and act.commute is True and act.hide_map is False
    assert act.start_date == datetime(2026, 3, 1, 7, 30, tzinfo=UTC)
    assert act.utc_offset_s == -28800 and act.hide_start_end_m is None
    track = act.streams
    assert isinstance(track, Track) and len(track) == 2
    # lat first, as the contract says; h3 takes (lat, lng) too.
    np.testing.assert_array_equal(track.lat, [45.5231, 45.5233])
    np.testing.assert_array_equal(track.lng, [-122.6765, -122.6761])
    np.testing.assert_array_equal(track.t, [0, 4])

    assert isinstance(dele, ActivityDeletedEvent)
    assert dele.updated_at == datetime(2026, 3, 2, 9, tzinfo=UTC)


def test_str_bytes_and_other_offsets_parse_alike() -> None:
    raw = DESIGN_EXAMPLES[2]
    assert parse_event(raw) == parse_event(raw.decode())
    shifted = raw.replace(b"09:00:00Z", b"11:00:00+02:00")
    assert parse_event(shifted).updated_at == parse_event(raw).updated_at


def test_unknown_extra_fields_are_ignored_everywhere() -> None:
    event = good_activity(gear_id="b-9", device={"name": "Edge 530"}, kudos=[1, 2])
    event["streams"] = {"latlng": PTS, "time": [0, 1, 2], "heartrate": [90, 91, "x"]}
    parsed = parse_activity(orjson.dumps(event))
    plain = parse_activity(orjson.dumps(good_activity()))
    assert parsed.model_dump(exclude={"streams"}) == plain.model_dump(exclude={"streams"})
    assert not hasattr(parsed, "gear_id")
    np.testing.assert_array_equal(parsed.streams.lat, plain.streams.lat)

    zone = {"lat": 42.3, "lng": -72.6, "radius_m": 300, "label": "home"}
    ath = parse_athlete(orjson.dumps(athlete("a-17", privacy_zones=[zone], premium=True)))
    assert [(z.lat, z.lng, z.radius_m) for z in ath.privacy_zones] == [(42.3, -72.6, 300)]
    dele = parse_event(
        orjson.dumps({**deleted("r-1", "a-1", updated=datetime(2021, 1, 1, tzinfo=UTC)), "x": 1})
    )
    assert isinstance(dele, ActivityDeletedEvent)


def test_athlete_defaults_and_limits() -> None:
    ath = parse_athlete(orjson.dumps(athlete("a-1")))
    assert ath.aggregate_opt_out is False and ath.hide_start_end_m is None
    assert ath.privacy_zones == []
    assert (
        parse_athlete(orjson.dumps(athlete("a-1", hide_start_end_m=1609))).hide_start_end_m == 1609
    )
    assert parse_athlete(orjson.dumps(athlete("a-1", hide_start_end_m=0))).hide_start_end_m == 0


def test_sport_names_in_another_case_or_spacing_are_the_platforms() -> None:
    for written, name in (
        ("walk", "Walk"), (" Ride ", "Ride"), ("RIDE", "Ride"), ("mountain_bike_ride",
        "MountainBikeRide"), ("E-Bike Ride", "EBikeRide"), (" Motorsport ", "Motorsport"),
    ):  # fmt: skip
        assert parse_activity(orjson.dumps(good_activity(sport_type=written))).sport_type == name
    assert "sport_type" in reason(orjson.dumps(good_activity(sport_type="   ")))


def test_empty_and_single_point_streams_are_valid() -> None:
    assert len(parse_activity(with_streams([], [])).streams) == 0
    assert len(parse_activity(with_streams([[42.3, -72.6]], [0])).streams) == 1
    # Equal times (a stop) are fine.
    assert len(parse_activity(with_streams(PTS, [0, 0, 0])).streams) == 3


def test_a_clock_going_back_keeps_the_ride() -> None:
    """A device resetting its clock an hour back mid-ride (it took the GPS time): the
    whole ride was a dead letter. Now the stretch after the reset keeps its spacing and
    continues 301 s after the fix before (a gap the cleaner splits at); two fixes
    written out of order are put back in order."""
    n = 1200
    pts = [[42.3 + i * 5e-5, -72.6] for i in range(n)]
    times = [i if i < 600 else i - 3600 for i in range(n)]  # back an hour at fix 600
    times[300], times[301] = 301, 300  # two fixes swapped
    tr = parse_activity(with_streams(pts, times)).streams
    assert len(tr) == n and np.all(np.diff(tr.t) >= 0)
    assert sorted(set(np.diff(tr.t).tolist())) == [1.0, 301.0]
    assert int(np.argmax(np.diff(tr.t) == 301.0)) == 599  # between fix 599 and fix 600
    assert tr.t[-1] == n - 1 + 301 - 1  # the second stretch keeps its own spacing
    assert tr.lat[300] == pts[301][0] and tr.lat[-1] == pts[-1][0]


def test_one_wrong_time_is_dropped_not_taken_for_a_reset() -> None:
    """A lone corrupt time (0, or 14 hours on, 2.5 h into a 3 h ride) is not the clock
    moving: the fixes around it agree. Taken for a reset, it moved the last half hour
    of the ride to other hours (an outside review); now only that fix goes."""
    n = 3 * 3600 // 10
    pts = [[42.3 + i * 5e-5, -72.6] for i in range(n)]
    for wrong in (0, 14 * 3600, -1):
        times = [10 * i for i in range(n)]
        times[900] = wrong
        tr = parse_activity(with_streams(pts, times)).streams
        assert len(tr) == n - 1 and tr.t[-1] == 10 * (n - 1), wrong
        assert 900 not in [round((lat - 42.3) / 5e-5) for lat in tr.lat.tolist()]


def test_the_longest_stretch_keeps_its_clock_and_the_start_moves() -> None:
    """A clock two hours fast for the first minute, then GPS time: the 59 minutes of GPS
    time are right, so the first minute moves before them, and the start with it."""
    pts = [[42.3 + i * 5e-5, -72.6] for i in range(3600)]
    times = [i + 7200 if i < 60 else i for i in range(3600)]  # the first minute 2 h fast
    event = parse_activity(with_streams(pts, times))
    tr = event.streams
    start = datetime.fromisoformat(good_activity()["start_date"].replace("Z", "+00:00"))
    # The GPS-time stretch keeps its times: fix 60 is at start + 60 s, as recorded.
    moved = (event.start_date - start).total_seconds()
    assert moved < 0 and moved + tr.t[60] == 60
    assert tr.t[60] - tr.t[59] == 301 and len(tr) == 3600


def test_a_stream_sent_newest_first_is_put_in_order() -> None:
    pts = [[42.3 + i * 5e-5, -72.6] for i in range(600)]
    tr = parse_activity(with_streams(pts[::-1], list(range(599, -1, -1)))).streams
    assert tr.t.tolist() == list(range(600)) and tr.lat.tolist() == [p[0] for p in pts]


def test_a_record_whose_time_is_mostly_wrong_is_a_dead_letter() -> None:
    pts = [[42.3 + i * 5e-5, -72.6] for i in range(400)]
    saw = [100 * (i % 2) + i for i in range(400)]  # up 101 s, back 99 s, again and again
    assert "no clock to read" in reason(with_streams(pts, saw))


# --------------------------------------------------------------------------- bad input

NAN_LAT = orjson.dumps(good_activity()).replace(b"[42.3196,", b"[NaN,")
INF_LNG = orjson.dumps(good_activity()).replace(b",-72.6448]", b",-Infinity]")
INF_TIME = orjson.dumps(good_activity()).replace(b'"time":[0,1,2]', b'"time":[0,Infinity,2]')
HUGE_LAT = orjson.dumps(good_activity()).replace(b"[42.3196,", b"[1e999,")
NAN_ZONE = orjson.dumps(
    athlete("a-17", privacy_zones=[{"lat": 42.3, "lng": -72.6, "radius_m": 300}])
).replace(b'"radius_m":300', b'"radius_m":NaN')
NAN_HIDE = orjson.dumps(good_activity(hide_start_end_m=100)).replace(b":100", b":NaN")


def _without(event: dict[str, Any], key: str) -> bytes:
    return orjson.dumps({k: v for k, v in event.items() if k != key})


# (case id, raw record, patterns the reason must contain: record name and value)
BAD = [
    ("invalid_json", b'{"kind": "activity", "activity_id": "r-1001"', [r"^invalid JSON: "]),
    ("trailing_garbage", orjson.dumps(good_activity()) + b" x", [r"^invalid JSON: "]),
    # Deeper than orjson reads (and than Python's stack: the reason-finder once crashed).
    ("nested_too_deep", b"[" * 1100 + b"]" * 1100, [r"^invalid JSON: depth limit"]),
    ("nested_object_too_deep", b'{"a":' * 1100 + b"1" + b"}" * 1100, [r"^invalid JSON: depth"]),
    ("deeply_nested_fix", orjson.dumps({**good_activity(), "streams": {
        "latlng": [[42.0, -72.0], "@"], "time": [0, 1]}}).replace(b'"@"', b"[" * 900 + b"]" * 900),
     [r"^activity r-1001: latlng\[1\] = \[\[\[", "expected"]),
    ("missing_start", _without(good_activity(), "start_date"),
     [r"^activity r-1001: ", r"start_date", r"required"]),
    ("missing_streams", _without(good_activity(), "streams"),
     [r"^activity r-1001: ", r"streams", r"required"]),
    ("missing_updated_athlete", _without(athlete("a-9"), "updated_at"),
     [r"^athlete a-9: ", r"updated_at", r"required"]),
    ("missing_updated_delete", orjson.dumps({"kind": "activity_deleted", "activity_id": "r-7",
                                             "athlete_id": "a-1"}),
     [r"^activity_deleted r-7: ", r"updated_at"]),
    ("missing_kind", orjson.dumps({"activity_id": "r-5", "athlete_id": "a-1"}),
     [r"missing field 'kind'"]),
    ("lat_range", with_streams([[42.3, -72.6], [91.2, 8.5]], [0, 1]),
     [r"^activity r-1001: ", r"latlng\[1\] = \(91\.2, 8\.5\)", r"latitude out of range"]),
    # Coordinates scaled to integers (1e-5 degrees): refused, and masked in dead letters.
    ("scaled_lat", with_streams([[6016991, 2493845], [6016992, 2493846]], [0, 1]),
     [r"^activity r-1001: ", r"latlng\[0\] = \(", r"latitude out of range"]),
    ("lng_range", with_streams([[42.3, -72.6], [42.3, -181.0]], [0, 1]),
     [r"^activity r-1001: ", r"latlng\[1\] = \(42\.3, -181\.0\)", r"longitude out of range"]),
    ("zone_range", orjson.dumps(athlete("a-17", privacy_zones=[{"lat": 95, "lng": 0,
                                                                  "radius_m": 200}])),
     [r"^athlete a-17: ", r"privacy_zones\.0\.lat = 95", r"less than or equal to 90"]),
    ("nan_lat", NAN_LAT, [r"^activity r-1001: ", r"latlng\[1\]\[0\] = NaN", r"not a finite"]),
    ("inf_lng", INF_LNG, [r"^activity r-1001: ", r"latlng\[2\]\[1\] = -Infinity", r"finite"]),
    ("inf_time", INF_TIME, [r"^activity r-1001: ", r"time\[1\] = Infinity", r"finite"]),
    ("overflow_lat", HUGE_LAT, [r"^activity r-1001: ", r"latlng\[1\]\[0\] = Infinity"]),
    ("nan_zone", NAN_ZONE, [r"^athlete a-17: ", r"radius_m = NaN", r"finite"]),
    ("nan_hide", NAN_HIDE, [r"^activity r-1001: ", r"hide_start_end_m = NaN"]),
    # JSON booleans are not numbers (numpy would read them as 1 and 0: a point off Africa).
    ("bool_lng", with_streams([[42.3, -72.6], [42.3, True]], [0, 1]),
     [r"^activity r-1001: ", r"latlng\[1\] = \[42\.3, True\]", r"numbers"]),
    ("bool_time", with_streams(PTS, [0, True, 2]),
     [r"^activity r-1001: ", r"time\[1\] = True", r"number of seconds"]),
    ("string_nan", with_streams([[42.3, "NaN"]], [0]),
     [r"^activity r-1001: ", r"latlng\[0\] = \[42\.3, 'NaN'\]", r"numbers"]),
    ("length_mismatch", with_streams(PTS, [0, 1]),
     [r"^activity r-1001: ", r"latlng has 3 points", r"time has 2"]),
    # Clock resets are taken (the track continues), but not past the 30-day bound.
    ("resets_past_30_days", with_streams([*PTS, PTS[0]], [0, 2_500_000, 0, 2_500_000]),
     [r"^activity r-1001: ", r"1 clock resets", r"30 days", r"broken clock"]),
    ("negative_time", with_streams(PTS, [-4, 0, 1]),
     [r"^activity r-1001: ", r"time\[0\] = -4", r"negative"]),
    # A broken clock (an operator's review: a stored year-10101 fix broke every snapshot).
    ("time_past_30_days", with_streams(PTS, [0, 5, 10**12]),
     [r"^activity r-1001: ", r"time\[2\] = ", r"30 days", r"broken clock"]),
    ("start_year_9999", orjson.dumps(good_activity(start_date="9999-12-31T23:50:00Z")),
     [r"^activity r-1001: ", r"start_date = 9999-12-31", r"1990\.\.2099"]),
    ("start_year_1900", orjson.dumps(good_activity(start_date="1900-01-01T00:00:00Z")),
     [r"^activity r-1001: ", r"start_date = 1900-01-01", r"broken clock"]),
    ("not_a_pair", with_streams([[42.3, -72.6], [42.3]], [0, 1]),
     [r"^activity r-1001: ", r"latlng\[1\] = \[42\.3\]"]),
    ("streams_not_object", orjson.dumps(good_activity(streams=[1, 2])),
     [r"^activity r-1001: ", r"streams must be an object"]),
    ("unknown_kind", orjson.dumps({**good_activity(), "kind": "segment"}),
     [r"^segment r-1001: ", r"unknown kind 'segment'"]),
    ("not_object_list", b"[1, 2, 3]", [r"expected a JSON object, got list"]),
    ("not_object_str", b'"hello"', [r"expected a JSON object, got str"]),
    ("not_object_null", b"null", [r"expected a JSON object, got NoneType"]),
    ("naive_start", orjson.dumps(good_activity()).replace(b'"2021-06-15T11:00:00Z"',
                                                          b'"2021-06-15T11:00:00"'),
     [r"^activity r-1001: ", r"start_date = 2021-06-15T11:00:00", r"timezone"]),
    ("naive_updated_athlete", orjson.dumps({**athlete("a-17"), "updated_at": "2026-01-02T10:00"}),
     [r"^athlete a-17: ", r"updated_at = 2026-01-02T10:00", r"timezone"]),
    ("hide_too_far_activity", orjson.dumps(good_activity(hide_start_end_m=1610)),
     [r"^activity r-1001: ", r"hide_start_end_m = 1610", r"1609"]),
    ("hide_too_far_athlete", orjson.dumps(athlete("a-17", hide_start_end_m=2000)),
     [r"^athlete a-17: ", r"hide_start_end_m = 2000", r"1609"]),
    ("hide_negative", orjson.dumps(athlete("a-17", hide_start_end_m=-1)),
     [r"^athlete a-17: ", r"hide_start_end_m = -1"]),
    ("bad_visibility", orjson.dumps(good_activity(visibility="public")),
     [r"^activity r-1001: ", r"visibility = public", r"everyone"]),
    ("bad_date", orjson.dumps(good_activity()).replace(b'"2021-06-15T11:00:00Z"',
                                                       b'"yesterday"'),
     [r"^activity r-1001: ", r"start_date = yesterday"]),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "patterns"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_record_is_rejected_with_a_one_line_reason(raw: bytes, patterns: list[str]) -> None:
    text = reason(raw)
    for pattern in patterns:
        assert re.search(pattern, text), f"{pattern!r} not in {text!r}"


def test_the_first_bad_point_is_named_not_a_later_one() -> None:
    latlng = [[42.3, -72.6]] * 10 + [[-95.0, 1.0]] + [[99.0, 1.0]] * 5
    assert "latlng[10] = (-95.0, 1.0)" in reason(with_streams(latlng, list(range(16))))
    times = [0, 1, 2, 3, 10**12, 5, 10**13]
    assert "time[4] = 1e+12" in reason(with_streams([[42.3, -72.6]] * 7, times))


def test_long_values_are_cut_short_in_the_reason() -> None:
    text = reason(orjson.dumps(good_activity(visibility="x" * 5000)))
    assert text.startswith("activity r-1001: visibility = xxx") and len(text) < 300
