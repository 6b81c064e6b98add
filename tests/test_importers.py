"""Event producers on real data: ValleyBike CSVs and GPX/FIT/TCX track files.

The bundled ValleyBike months always run (the demo depends on them). Tests on the track
files and the other months need ``/work/shared/data`` and are skipped, with the reason,
where it is absent.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from heatmetro.core.contract import parse_event
from heatmetro.core.errors import ImportFileError
from heatmetro.flows.importers.jsonl import write_jsonl
from heatmetro.flows.importers.tracks import import_tracks, platform_sport
from heatmetro.flows.importers.valleybike import valleybike_events
from heatmetro.flows.importers.valleybike_csv import DATA_DIR, bundled_csvs, shared_csvs
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA
FIT_DIR, GPX_DIR = SHARED / "tracks" / "fit", SHARED / "tracks" / "gpx"
needs_shared = pytest.mark.skipif(
    not (FIT_DIR.is_dir() and GPX_DIR.is_dir()),
    reason=f"real track files live in {SHARED}/tracks, which is absent here",
)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ATHLETE_KEYS = {"kind", "athlete_id", "updated_at", "aggregate_opt_out", "hide_start_end_m",
                "privacy_zones"}  # fmt: skip
ACTIVITY_KEYS = {"kind", "activity_id", "athlete_id", "updated_at", "sport_type", "visibility",
                 "hide_map", "commute", "start_date", "utc_offset_s", "streams"}  # fmt: skip


def check_event(event: dict) -> None:
    """The v1 rules, spelled out, plus the project's own parser as a second opinion."""
    parse_event(orjson.dumps(event))  # raises StreamRecordError on any contract breach
    assert ISO_Z.match(event["updated_at"]), event["updated_at"]
    if event["kind"] == "athlete":
        assert set(event) == ATHLETE_KEYS
        assert 0 <= event["hide_start_end_m"] <= 1609
        for zone in event["privacy_zones"]:
            assert -90 <= zone["lat"] <= 90 and -180 <= zone["lng"] <= 180
            assert 200 <= zone["radius_m"] <= 400
    elif event["kind"] == "activity":
        assert set(event) == ACTIVITY_KEYS
        assert ISO_Z.match(event["start_date"])
        assert event["visibility"] in ("everyone", "followers_only", "only_me")
        latlng, times = event["streams"]["latlng"], event["streams"]["time"]
        # Raw fixes are kept as logged: a ride may be a single fix or never move.
        assert len(latlng) == len(times) >= 1
        assert times[0] == 0 and all(isinstance(t, int) for t in times)
        assert all(b >= a for a, b in zip(times, times[1:], strict=False))
        assert all(-90 <= lat <= 90 and -180 <= lng <= 180 for lat, lng in latlng)
    else:
        assert event["kind"] == "activity_deleted"
        assert set(event) == {"kind", "activity_id", "athlete_id", "updated_at"}


@pytest.fixture(scope="module")
def bundled() -> list[dict]:
    return list(valleybike_events(bundled_csvs()))


def of_kind(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


# --------------------------------------------------------------------------- ValleyBike


def test_bundled_data_ships_with_its_licence() -> None:
    names = sorted(p.name for p in bundled_csvs())
    assert names == ["june2018.csv.gz", "october2020.csv.gz"]
    assert all(p.is_file() and p.parent == DATA_DIR for p in bundled_csvs())
    notice = (DATA_DIR / "LICENSE-valleybike.txt").read_text()
    assert "MIT" in notice and "Amherst-Statistics/valleybikeData" in notice
    assert "8567d0d" in notice and "Permission is hereby granted" in notice


def test_bundled_events_follow_the_contract(bundled: list[dict]) -> None:
    for event in bundled:
        check_event(event)
    counts = Counter(e["kind"] for e in bundled)
    assert counts["activity"] > 1000 and counts["athlete"] > 300
    # Everything happens in the Pioneer Valley, Massachusetts.
    for event in of_kind(bundled, "activity"):
        for lat, lng in event["streams"]["latlng"]:
            assert 42.0 < lat < 42.6 and -72.8 < lng < -72.4


def test_order_athletes_first_and_deletes_follow(bundled: list[dict]) -> None:
    activities = of_kind(bundled, "activity")
    keys = [(e["start_date"], e["activity_id"]) for e in activities]
    assert keys == sorted(keys)
    announced: set[str] = set()
    for i, event in enumerate(bundled):
        if event["kind"] == "athlete":
            assert event["athlete_id"] not in announced
            announced.add(event["athlete_id"])
            assert event["updated_at"] == "2000-01-01T00:00:00Z"
        else:
            assert event["athlete_id"] in announced
        if event["kind"] == "activity_deleted":
            before = bundled[i - 1]
            assert before["kind"] == "activity"
            assert before["activity_id"] == event["activity_id"]
            assert _ts(event["updated_at"]) - _ts(before["updated_at"]) == timedelta(days=1)


def _ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def test_ids_and_local_time_of_a_known_ride(bundled: list[dict]) -> None:
    # First row of june2018.csv.gz: route_06_2018@dd896500-..., 2018-06-28 14:09:32 UTC.
    route = "route_06_2018@dd896500-39aa-4e4f-8f48-1c368afb3ca6"
    user = "1cc1e858-857a-4f80-96e8-974f0e920620"
    activity_id = "vb-" + hashlib.sha256(route.encode()).hexdigest()[:16]
    (ride,) = [e for e in bundled if e.get("activity_id") == activity_id and
               e["kind"] == "activity"]  # fmt: skip
    assert ride["athlete_id"] == "vb-" + hashlib.sha256(user.encode()).hexdigest()[:12]
    assert ride["start_date"] == "2018-06-28T14:09:32Z"  # 10:09 EDT (UTC-4)
    assert ride["utc_offset_s"] == -14400
    assert ride["updated_at"] == "2018-06-28T15:09:32Z"
    assert ride["streams"]["latlng"][0] == [42.314188, -72.640027]  # lat first
    assert ride["commute"] is False  # a Thursday, but 10:09 is outside both peaks


def test_the_rides_local_hours_are_the_schemes_opening_hours(bundled: list[dict]) -> None:
    """The CSVs' times are UTC (its README says Eastern local time): read as local, no
    ride started 05:00-08:59, commute hours included, and the empty hours moved with
    daylight saving. As UTC, the docks are quiet at night and busy in the morning."""
    activities = of_kind(bundled, "activity")
    local = [(_ts(e["start_date"]) + timedelta(seconds=e["utc_offset_s"])).hour for e in activities]
    night = sum(1 <= h <= 4 for h in local) / len(local)
    morning = sum(6 <= h <= 9 for h in local) / len(local)
    assert night < 0.01 < 0.03 < morning, (night, morning)


def test_commute_flag_follows_local_clock(bundled: list[dict]) -> None:
    activities = of_kind(bundled, "activity")
    for event in activities:
        local = _ts(event["start_date"]) + timedelta(seconds=event["utc_offset_s"])
        peak = 6 <= local.hour <= 9 or 15 <= local.hour <= 18
        assert event["commute"] == (local.weekday() < 5 and peak)
    share = sum(e["commute"] for e in activities) / len(activities)
    assert 0.05 < share < 0.5


def test_settings_spread_is_roughly_as_specified(bundled: list[dict]) -> None:
    athletes, activities = of_kind(bundled, "athlete"), of_kind(bundled, "activity")
    n, m = len(athletes), len(activities)
    assert 0.005 < sum(a["aggregate_opt_out"] for a in athletes) / n < 0.06
    hide = Counter(a["hide_start_end_m"] for a in athletes)
    assert set(hide) == {0, 200, 400, 800} and hide[200] > n / 2
    assert 0.08 < sum(bool(a["privacy_zones"]) for a in athletes) / n < 0.22
    vis = Counter(a["visibility"] for a in activities)
    assert 0.80 < vis["everyone"] / m < 0.90
    assert 0.06 < vis["followers_only"] / m < 0.14
    assert 0.02 < vis["only_me"] / m < 0.08
    assert 0.005 < sum(a["hide_map"] for a in activities) / m < 0.04
    sports = Counter(a["sport_type"] for a in activities)
    assert set(sports) == {"Ride", "EBikeRide"} and 0.01 < sports["EBikeRide"] / m < 0.06
    assert 0.002 < len(of_kind(bundled, "activity_deleted")) / m < 0.025


def test_privacy_zone_sits_on_the_most_frequent_ride_end(bundled: list[dict]) -> None:
    ends: dict[str, list[list[float]]] = {}
    for event in of_kind(bundled, "activity"):
        ends.setdefault(event["athlete_id"], []).append(event["streams"]["latlng"][-1])
    zoned = [a for a in of_kind(bundled, "athlete") if a["privacy_zones"]]
    assert zoned
    for athlete in zoned:
        zone = athlete["privacy_zones"][0]
        keys = Counter((round(lat, 3), round(lng, 3)) for lat, lng in ends[athlete["athlete_id"]])
        top = max(keys.values())
        # ~110 m per 0.001 deg of latitude: the centre is inside one of the top cells.
        assert any(
            keys[k] == top
            and abs(zone["lat"] - k[0]) <= 0.0006
            and abs(zone["lng"] - k[1]) <= 0.0006
            for k in keys
        )


def test_output_is_byte_identical_across_runs(bundled: list[dict], tmp_path: Path) -> None:
    # A second, independent run with the files given in the other order.
    again = list(valleybike_events(list(reversed(bundled_csvs()))))
    assert _jsonl(again) == _jsonl(bundled)
    # The gzip header carries neither a file name nor a time: two writes are identical.
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "sub" / "b.jsonl.gz"
    second.parent.mkdir()
    assert write_jsonl(bundled[:300], first) == 300
    write_jsonl(iter(again[:300]), second)
    assert first.read_bytes() == second.read_bytes()
    assert gzip.decompress(first.read_bytes()) == _jsonl(bundled[:300])
    plain = tmp_path / "c.jsonl"
    assert write_jsonl(bundled[:10], plain) == 10
    assert plain.read_bytes() == _jsonl(bundled[:10])


def _jsonl(events: list[dict]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def _write_csv(path: Path, rows: list[str]) -> None:
    header = "route_id,user_id,bike,time,longitude,latitude"
    path.write_bytes(gzip.compress(("\n".join([header, *rows]) + "\n").encode()))


def test_messy_rows_are_skipped_and_winter_offset_used(tmp_path: Path) -> None:
    csv_path = tmp_path / "mess.csv.gz"
    _write_csv(csv_path, [
        "r1,u1,9,2020-12-01 12:30:00,-72.6,42.3",  # a Tuesday, 12:30 UTC = 07:30 EST -> commute
        "r1,u1,9,2020-12-01 12:30:05,-72.6,42.3",  # repeated dock fix: kept
        "r1,u1,9,2020-12-01 12:30:10,-72.6,42.3",
        "r1,u1,9,2020-12-01 12:30:15,NA,42.3",  # missing value: skipped
        'r1,u1,9,"2020-12-01 12:30:20",-72.601,42.301',  # quoted: csv slow path
        "r1,u1,9,2020-12-01 12:30:25.5,-72.602,42.302",
        "r1,u1,9",  # ragged row: skipped
        "r2,u1,9,2020-12-01 13:00:00,-72.6,42.3",  # one fix: kept (ingest cleans GPS)
        "r3,u2,9,2020-12-01 14:00:00,-72.6,42.3",  # never moved: kept too
        "r3,u2,9,2020-12-01 14:05:00,-72.6,42.3",
    ])  # fmt: skip
    events = list(valleybike_events([csv_path]))
    assert [e["kind"] for e in events] == ["athlete", "activity", "activity", "athlete", "activity"]
    for event in events:
        check_event(event)
    ride, one_fix, still = events[1], events[2], events[4]
    assert ride["athlete_id"] == one_fix["athlete_id"] != still["athlete_id"]
    assert ride["start_date"] == "2020-12-01T12:30:00Z" and ride["utc_offset_s"] == -18000
    assert ride["commute"] is True
    # Every valid fix as logged, the dock run included; the NA and ragged rows are gone.
    assert ride["streams"]["time"] == [0, 5, 10, 20, 25]
    assert ride["streams"]["latlng"] == [
        [42.3, -72.6], [42.3, -72.6], [42.3, -72.6], [42.301, -72.601], [42.302, -72.602]
    ]  # fmt: skip
    assert one_fix["start_date"] == "2020-12-01T13:00:00Z"
    assert one_fix["streams"] == {"latlng": [[42.3, -72.6]], "time": [0]}
    assert still["start_date"] == "2020-12-01T14:00:00Z"
    assert still["streams"] == {"latlng": [[42.3, -72.6], [42.3, -72.6]], "time": [0, 300]}


def test_unreadable_csv_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ImportFileError, match="bad.csv.gz"):
        list(valleybike_events([bad]))
    wrong = tmp_path / "wrong.csv.gz"
    wrong.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(ImportFileError, match="missing column"):
        list(valleybike_events([wrong]))


@pytest.mark.skipif(not shared_csvs(), reason="../shared/data/valleybike is absent")
def test_shared_winter_month_is_eastern_standard_time() -> None:
    (february,) = [p for p in shared_csvs() if p.name == "february2021.csv.gz"]
    events = list(valleybike_events([february]))
    activities = of_kind(events, "activity")
    assert len(activities) > 300
    assert {e["utc_offset_s"] for e in activities} == {-18000}
    for event in events[:200]:
        check_event(event)


# --------------------------------------------------------------------------- tracks

GOOD_FIT = ["garmin-fenix-5-walk.fit", "garmin-edge-820-bike.fit", "2015-10-13-08-43-15.fit"]
BROKEN = {
    "sample-activity-indoor-trainer.fit": "no usable GPS",
    "null_compressed_speed_dist.fit": "virtual",
    "cerknicko-without-times.gpx": "no timestamps",
    "route.gpx": "no timestamps",
    "Mojstrovka.gpx": "clock not set",
    "unicode.gpx": "no track or route points",
}


# Damaged, but with a ride in them before the damage: kept, with a note saying so.
DAMAGED = {
    "activity-unexpected-eof.fit": (14, "truncated FIT file"),
    "activity-settings-corruptheader.fit": (14, "corrupt FIT file: FitHeaderError"),
    "nick.fit": (14_391, "truncated FIT file"),  # a 4 h 39 min ride, its CRC footer cut off
    "activity-filecrc.fit": (14, "FIT checksum mismatch"),
}


def _track_path(name: str) -> Path:
    return (FIT_DIR if name.endswith(".fit") else GPX_DIR) / name


def _run(paths: list[Path], **kwargs: object) -> tuple[list[dict], dict[str, str]]:
    errors: dict[str, str] = {}
    events = list(
        import_tracks(paths, on_error=lambda p, r: errors.__setitem__(p.name, r), **kwargs)  # type: ignore[arg-type]
    )
    return events, errors


@needs_shared
def test_broken_files_are_reported_and_the_rest_imported() -> None:
    names = ["garmin-fenix-5-run.fit", *BROKEN, "cerknicko-jezero.gpx"]
    events, errors = _run([_track_path(n) for n in names], athlete_id="a-1")
    assert set(errors) == set(BROKEN)
    for name, reason in errors.items():
        assert BROKEN[name] in reason, (name, reason)
        assert "\n" not in reason
    assert [e["sport_type"] for e in events] == ["Run", "Ride"]
    for event in events:
        check_event(event)


@needs_shared
def test_damaged_files_keep_what_could_be_read_and_say_so() -> None:
    notes: dict[str, list[str]] = {}
    events = list(
        import_tracks(
            [FIT_DIR / n for n in DAMAGED], athlete_id="a-1",
            on_error=lambda p, r: notes.setdefault(p.name, []).append(f"ERROR {r}"),
            on_warning=lambda p, r: notes.setdefault(p.name, []).append(r),
        )
    )  # fmt: skip
    assert [len(e["streams"]["time"]) for e in events] == [n for n, _ in DAMAGED.values()]
    for (name, (kept, reason)), event in zip(DAMAGED.items(), events, strict=True):
        check_event(event)
        assert f"kept the {kept:,} fixes that could be read; {reason}" in " ".join(notes[name])
        assert not any(n.startswith("ERROR") for n in notes[name])


@needs_shared
@pytest.mark.parametrize("share", [0.3, 0.7])
def test_a_gpx_file_cut_short_keeps_the_points_before_the_cut(tmp_path: Path, share: float) -> None:
    """A GPX file cut short (an app killed mid-save, a partial download) was refused whole
    ("not a valid GPX file: unclosed token"), where a truncated FIT file keeps what it
    holds (an outside review)."""
    whole = (GPX_DIR / "cerknicko-jezero.gpx").read_bytes()
    cut = whole[: int(len(whole) * share)]
    (tmp_path / "cut.gpx").write_bytes(cut)
    notes: list[str] = []
    (event,) = import_tracks(
        [tmp_path / "cut.gpx"], athlete_id="a-1",
        on_error=lambda p, r: notes.append(f"ERROR {r}"), on_warning=lambda p, r: notes.append(r),
    )  # fmt: skip
    check_event(event)
    (full,) = import_tracks(
        [GPX_DIR / "cerknicko-jezero.gpx"], athlete_id="a-1", on_error=lambda p, r: notes.append(r)
    )
    kept = len(event["streams"]["time"])
    assert kept == cut.count(b"</trkpt>") and 0 < kept < len(full["streams"]["time"])
    assert event["streams"]["latlng"] == full["streams"]["latlng"][:kept]
    assert any("not a valid GPX file" in n and "cut short" in n for n in notes), notes
    assert not any(n.startswith("ERROR") for n in notes)


def _note(notes: list[str], path: Path, reason: str) -> None:
    notes.append(reason)


@needs_shared
def test_a_file_without_a_sport_type_says_what_it_was_taken_for() -> None:
    """An untyped GPX file (a 1.9 m/s walk) became a Ride with no word said, landing in
    the ride layer and the Metro ride counts (an outside review): said now."""
    path = GPX_DIR / "cerknicko-jezero.gpx"
    for forced, said in ((None, True), ("Walk", False)):
        notes: list[str] = []
        keep = functools.partial(_note, notes)
        (event,) = import_tracks(
            [path], athlete_id="a-1", sport_type=forced, on_error=keep, on_warning=keep
        )
        assert event["sport_type"] == (forced or "Ride")
        note = "no sport type in the file: imported as Ride (--sport-type sets one)"
        assert (note in notes) == said, notes


def test_a_fix_with_a_garbage_time_is_dropped_not_the_activity() -> None:
    """A damaged FIT file's last fix reads 2027039628 s after the start: kept, it made the
    whole ride a dead letter at ingest (a review: import said "kept 237 fixes")."""
    notes: list[str] = []
    (event,) = import_tracks(
        [FIT_DIR / "strava-android-app-201.10-b1218918.fit"], athlete_id="a-1",
        on_error=lambda p, r: notes.append(f"ERROR {r}"), on_warning=lambda p, r: notes.append(r),
    )  # fmt: skip
    check_event(event)  # the contract takes it whole
    assert len(event["streams"]["time"]) == 236 and event["streams"]["time"][-1] < 3600
    assert (
        "skipped 1 point(s) more than 30 days from the rest of the track (a broken clock)" in notes
    )


@needs_shared
def test_slovenian_gpx_tracks_land_in_slovenia() -> None:
    names = ["cerknicko-jezero.gpx", "korita-zbevnica.gpx", "cerknicko-jezero-no-creator.gpx"]
    events, errors = _run([GPX_DIR / n for n in names], athlete_id="a-1", visibility="only_me")
    assert not errors
    assert len(events) == 3
    for event in events:
        check_event(event)
        assert event["visibility"] == "only_me"
        for lat, lng in event["streams"]["latlng"]:
            assert 45 < lat < 46.5 and 13 < lng < 15
    # korita-zbevnica keeps the timed ACTIVE LOG tracks, not Garmin's untimed saved copy.
    assert len(events[1]["streams"]["time"]) == 176 + 337
    # Times in UTC ("Z"): local time is Slovenia's on the day (CEST in August, +2 h).
    assert events[0]["start_date"].startswith("2010-08-05")
    assert {e["utc_offset_s"] for e in events} == {7200}


@needs_shared
def test_fit_semicircles_sport_and_local_offset() -> None:
    events, errors = _run([FIT_DIR / n for n in GOOD_FIT], athlete_id="a-1")
    assert not errors
    walk, bike, ride = events
    assert walk["sport_type"] == "Walk" and bike["sport_type"] == "Ride"
    lat, lng = walk["streams"]["latlng"][0]
    assert lat == pytest.approx(38.2305, abs=1e-3) and lng == pytest.approx(-122.6333, abs=1e-3)
    assert walk["start_date"] == "2017-06-11T14:32:51Z"
    assert walk["utc_offset_s"] == -25200  # activity local_timestamp: California, PDT
    # No local_timestamp in this file: the offset of where it starts (Portland, OR, on
    # 2015-10-13: PDT); the file's own name, 08-43-15 local for 15:43:15Z, agrees.
    assert ride["start_date"] == "2015-10-13T15:43:15Z" and ride["utc_offset_s"] == -25200
    for event in events:
        check_event(event)
        assert event["updated_at"] == event["start_date"]


@needs_shared
def test_activity_ids_are_content_hashes(tmp_path: Path) -> None:
    source = FIT_DIR / "garmin-fenix-5-walk.fit"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    packed = tmp_path / "renamed.fit.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    first, _ = _run([source], athlete_id="a-9")
    again, _ = _run([packed], athlete_id="a-9")
    assert first[0]["activity_id"] == f"a-9:{digest}"
    assert again == first  # same content, same event, byte for byte
    twice, _ = _run([source, packed], athlete_id="a-9")
    assert len(twice) == 1


@needs_shared
def test_bulk_export_zip_uses_activity_type(tmp_path: Path) -> None:
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as archive:
        archive.writestr(
            "activities.csv",
            '"Activity ID","Activity Date","Activity Type","Filename"\n'
            '1,x,"Hike","activities/1.gpx"\n2,x,"E-Bike Ride","activities/2.fit.gz"\n',
        )
        archive.write(GPX_DIR / "cerknicko-jezero.gpx", "activities/1.gpx")
        bike = (FIT_DIR / "garmin-edge-820-bike.fit").read_bytes()
        archive.writestr("activities/2.fit.gz", gzip.compress(bike))
        archive.write(FIT_DIR / "sample-activity-indoor-trainer.fit", "activities/3.fit")
        archive.writestr("media/photo.jpg", b"\xff\xd8")
    errors: list[tuple[Path, str]] = []
    events = list(import_tracks([export], athlete_id="a-2",
                                on_error=lambda p, r: errors.append((p, r))))  # fmt: skip
    assert [e["sport_type"] for e in events] == ["Hike", "EBikeRide"]
    assert errors == [(export / "activities/3.fit", errors[0][1])]
    assert "no usable GPS" in errors[0][1]
    forced, _ = _run([export], athlete_id="a-2", sport_type="Walk")
    assert {e["sport_type"] for e in forced} == {"Walk"}


@needs_shared
def test_tcx_gives_the_same_track_as_its_gpx(tmp_path: Path) -> None:
    (from_gpx,), _ = _run([GPX_DIR / "cerknicko-jezero.gpx"], athlete_id="a-3")
    tcx = tmp_path / "lake.tcx"
    tcx.write_bytes(_tcx_from(from_gpx))
    (from_tcx,), errors = _run([tcx], athlete_id="a-3")
    assert not errors
    assert from_tcx["sport_type"] == "Run"
    assert from_tcx["streams"] == from_gpx["streams"]
    assert from_tcx["start_date"] == from_gpx["start_date"]


def _tcx_from(event: dict) -> bytes:
    """A Garmin TCX document carrying the event's points, plus one HR-only trackpoint."""
    ns = "http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"
    root = ET.Element(f"{{{ns}}}TrainingCenterDatabase")
    activity = ET.SubElement(ET.SubElement(root, f"{{{ns}}}Activities"), f"{{{ns}}}Activity",
                             Sport="Running")  # fmt: skip
    track = ET.SubElement(ET.SubElement(activity, f"{{{ns}}}Lap"), f"{{{ns}}}Track")
    start = datetime.fromisoformat(event["start_date"]).astimezone(UTC)
    ET.SubElement(
        ET.SubElement(track, f"{{{ns}}}Trackpoint"), f"{{{ns}}}Time"
    ).text = start.isoformat()
    for (lat, lng), sec in zip(event["streams"]["latlng"], event["streams"]["time"], strict=True):
        point = ET.SubElement(track, f"{{{ns}}}Trackpoint")
        when = (start + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        ET.SubElement(point, f"{{{ns}}}Time").text = when
        position = ET.SubElement(point, f"{{{ns}}}Position")
        ET.SubElement(position, f"{{{ns}}}LatitudeDegrees").text = repr(lat)
        ET.SubElement(position, f"{{{ns}}}LongitudeDegrees").text = repr(lng)
    return ET.tostring(root, xml_declaration=True, encoding="utf-8")


def test_bad_inputs_never_raise(tmp_path: Path) -> None:
    junk = tmp_path / "junk.fit"
    junk.write_bytes(b"\x00" * 40)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    fake_zip = tmp_path / "fake.zip"
    fake_zip.write_bytes(b"PK nope")
    bad_xml = tmp_path / "bad.tcx"
    bad_xml.write_text("<TrainingCenterDatabase><Activities>")
    gpx = tmp_path / "half.gpx"
    gpx.write_text("<gpx><trk><trkseg><trkpt lat='1' lon='2'>")
    paths = [junk, notes, fake_zip, bad_xml, gpx, tmp_path / "missing.gpx"]
    events, errors = _run(paths, athlete_id="a-1")
    assert events == []
    assert set(errors) == {p.name for p in paths}
    assert "unsupported file type" in errors["notes.txt"]
    assert "zip" in errors["fake.zip"] and "cannot read" in errors["missing.gpx"]


def test_invalid_options_raise_clean_errors() -> None:
    with pytest.raises(ImportFileError, match="visibility 'public'"):
        list(import_tracks([], athlete_id="a-1", visibility="public", on_error=print))
    with pytest.raises(ImportFileError, match="athlete-id"):
        list(import_tracks([], athlete_id=" ", on_error=print))


@pytest.mark.parametrize(
    ("word", "sport"),
    [("cycling", "Ride"), ("E-Bike Ride", "EBikeRide"), ("Stand Up Paddling", "StandUpPaddling"),
     ("hiking", "Hike"), ("Nordic Ski", "NordicSki"), ("Biking", "Ride"), ("generic", None),
     ("", None)],
)  # fmt: skip
def test_platform_sport_names(word: str, sport: str | None) -> None:
    assert platform_sport(word) == sport


@needs_shared
def test_folder_input_is_walked_in_order(tmp_path: Path) -> None:
    for name in ("garmin-fenix-5-walk.fit", "garmin-fenix-5-run.fit"):
        shutil.copy(FIT_DIR / name, tmp_path / name)
    events, errors = _run([tmp_path], athlete_id="a-1")
    assert not errors
    assert [e["sport_type"] for e in events] == ["Run", "Walk"]


def _gpx_tracks(*tracks: tuple[str, str, float]) -> bytes:
    """A GPX file of ``(type, first time, latitude)`` tracks, three fixes 10 s apart."""
    body = []
    for kind, first, lat in tracks:
        start = datetime.fromisoformat(first)
        points = "".join(
            f'<trkpt lat="{lat}" lon="{-72.645 + 0.001 * i}"><time>'
            f"{(start + timedelta(seconds=10 * i)).strftime('%Y-%m-%dT%H:%M:%SZ')}</time></trkpt>"
            for i in range(3)
        )
        body.append(f"<trk><type>{kind}</type><trkseg>{points}</trkseg></trk>")
    return (
        '<?xml version="1.0"?><gpx version="1.1" creator="t" '
        f'xmlns="http://www.topografix.com/GPX/1/1">{"".join(body)}</gpx>'
    ).encode()


def test_gpx_tracks_hours_apart_or_of_other_sports_are_separate_activities(tmp_path: Path) -> None:
    path = tmp_path / "two.gpx"
    path.write_bytes(
        _gpx_tracks(("running", "2024-05-10T10:00:00+00:00", 42.3195),
                    ("cycling", "2024-06-01T10:00:00+00:00", 42.3295))
    )  # fmt: skip
    notes: list[str] = []
    events = list(import_tracks([path], athlete_id="g", on_error=lambda p, r: notes.append(r),
                                on_warning=lambda p, r: notes.append(r)))  # fmt: skip
    assert [(e["sport_type"], e["start_date"]) for e in events] == [
        ("Run", "2024-05-10T10:00:00Z"), ("Ride", "2024-06-01T10:00:00Z"),
    ]  # fmt: skip
    assert events[1]["activity_id"] == events[0]["activity_id"] + "-2"
    assert all(e["streams"]["time"] == [0, 10, 20] for e in events)
    assert notes == [
        "2 activities in one file: Run 2024-05-10T10:00:00Z, Ride 2024-06-01T10:00:00Z"
    ]
    # One ride a device split into two tracks minutes apart stays one activity.
    path.write_bytes(
        _gpx_tracks(("cycling", "2024-06-01T10:00:00+00:00", 42.3195),
                    ("cycling", "2024-06-01T10:05:00+00:00", 42.3196))
    )  # fmt: skip
    (one,) = list(import_tracks([path], athlete_id="g", on_error=lambda p, r: None))
    assert one["streams"]["time"] == [0, 10, 20, 300, 310, 320]


@needs_shared
def test_a_multisport_fit_file_gives_one_activity_per_session() -> None:
    events, errors = _run([FIT_DIR / "activity-large-fenxi2-multisport.fit"], athlete_id="m")
    assert not errors
    # The cycling leg is its own Ride (it moves at bike speed), the rest stay runs.
    assert [e["sport_type"] for e in events][-1] == "Ride"
    assert {e["sport_type"] for e in events[:-1]} == {"Run"}
    assert [e["activity_id"] for e in events[1:]] == [
        f"{events[0]['activity_id']}-{k}" for k in range(2, len(events) + 1)
    ]
    starts = [e["start_date"] for e in events]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    ride = events[-1]["streams"]
    seconds = ride["time"][-1] - ride["time"][0]
    assert seconds > 3000 and len(ride["latlng"]) > 3000  # the hour by bike, whole
    for event in events:
        check_event(event)


@needs_shared
def test_a_fit_file_whose_damage_fitdecode_reports_as_a_plain_error_keeps_its_fixes(
    tmp_path: Path,
) -> None:
    # One byte changed in a definition message: fitdecode raises ValueError("size").
    data = bytearray((FIT_DIR / "sample_mulitple_header.fit").read_bytes())
    data[17835] = 253
    path = tmp_path / "flipped.fit"
    path.write_bytes(bytes(data))
    notes: list[str] = []
    events = list(import_tracks([path], athlete_id="f", on_error=lambda p, r: notes.append(f"ERROR {r}"),
                                on_warning=lambda p, r: notes.append(r)))  # fmt: skip
    assert events and not any(n.startswith("ERROR") for n in notes), notes
    assert any("fixes that could be read; corrupt FIT file: ValueError" in n for n in notes)


def test_gpx_tracks_out_of_time_order_keep_their_own_points_and_sports(tmp_path: Path) -> None:
    path = tmp_path / "order.gpx"
    path.write_bytes(
        _gpx_tracks(("cycling", "2024-06-01T16:00:00+00:00", 42.3295),
                    ("running", "2024-06-01T10:00:00+00:00", 42.3195),
                    ("VirtualRide", "2024-06-02T10:00:00+00:00", 42.3395))
    )  # fmt: skip
    events = list(import_tracks([path], athlete_id="g", on_error=lambda p, r: None))
    got = [(e["sport_type"], e["start_date"], e["streams"]["latlng"][0][0]) for e in events]
    # Each track whole and with its own sport; the virtual one left out, not the file.
    assert got == [
        ("Ride", "2024-06-01T16:00:00Z", 42.3295),
        ("Run", "2024-06-01T10:00:00Z", 42.3195),
    ]
    assert all(e["streams"]["time"] == [0, 10, 20] for e in events)


def _import_timed_gpx(
    path: Path, stamps: list[datetime], lat_step: float
) -> tuple[dict, list[str]]:
    """One cycling GPX track north from Elm Street with a fix at each of ``stamps``,
    imported: the event and the notes."""
    points = "".join(
        f'<trkpt lat="{42.3195 + lat_step * i}" lon="-72.645"><time>'
        f"{when.strftime('%Y-%m-%dT%H:%M:%SZ')}</time></trkpt>"
        for i, when in enumerate(stamps)
    )
    path.write_bytes(
        '<?xml version="1.0"?><gpx version="1.1" creator="t" xmlns="http://www.topografix.com/'
        f'GPX/1/1"><trk><type>cycling</type><trkseg>{points}</trkseg></trk></gpx>'.encode()
    )
    notes: list[str] = []
    (event,) = import_tracks([path], athlete_id="g", on_error=lambda p, r: notes.append(r),
                             on_warning=lambda p, r: notes.append(r))  # fmt: skip
    return event, notes


def test_a_clock_reset_back_an_hour_keeps_every_fix(tmp_path: Path) -> None:
    """A device that took the GPS time mid-ride and went back an hour: every fix after the
    reset was dropped as "earlier than the point before". Now the fixes after it keep
    their spacing and continue 301 s after the one before (the track splits there)."""
    start = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    stamps = [start + timedelta(seconds=10 * i - (3600 if i >= 10 else 0)) for i in range(20)]
    event, notes = _import_timed_gpx(tmp_path / "reset.gpx", stamps, 0.0005)
    check_event(event)
    assert event["streams"]["time"] == [10 * i for i in range(10)] + [
        90 + 301 + 10 * i for i in range(10)
    ]
    assert len(event["streams"]["latlng"]) == 20
    assert notes == [
        "the clock went back 1 time(s): the fixes after continue 301 s after the one before "
        "(the track splits there)"
    ]


def test_a_first_fix_from_1970_does_not_cost_the_ride(tmp_path: Path) -> None:
    """A receiver's first fix before it had the time (1970): judged from the first fix,
    every good fix after it was "more than 30 days after the start" and the file was
    refused. Judged from the track's median time, only that fix goes."""
    start = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    stamps = [datetime(1970, 1, 1, tzinfo=UTC)] + [start + timedelta(seconds=i) for i in range(99)]
    event, notes = _import_timed_gpx(tmp_path / "cold.gpx", stamps, 0.00005)
    check_event(event)
    assert event["start_date"] == "2024-06-01T10:00:00Z"
    assert event["streams"]["time"] == list(range(99))
    assert notes == [
        "skipped 1 point(s) more than 30 days from the rest of the track (a broken clock)"
    ]
