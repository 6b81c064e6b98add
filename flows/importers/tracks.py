"""GPX / FIT / TCX files and platform bulk-export zips -> v1 ``activity`` events.

This is the engine behind ``heatmetro import FILE_OR_ZIP ... --athlete-id ID``. Each file
becomes at most one activity; a file that cannot give a usable track (corrupt, truncated,
no GPS, no timestamps, simulated indoor GPS) is reported through ``on_error`` with a
one-line reason and skipped, and the import carries on with the rest.

The activity id is ``athlete_id + ":" + sha256(file content)[:16]`` (content after
un-gzipping), so importing the same file again, raw or from an export zip, gives the
same id and the stream consumer treats it as a re-delivery.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from heatmetro.core.errors import ImportFileError
from heatmetro.flows.importers.formats import (
    GPS_EPOCH,
    MAX_MEMBER_BYTES,
    PARSERS,
    TRACK_SUFFIXES,
    VIRTUAL_SPORTS,
    VISIBILITIES,
    Track,
    platform_sport,
)

OnError = Callable[[Path, str], None]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean_streams(track: Track) -> tuple[datetime, list[list[float]], list[int]]:
    """Drop invalid fixes and fixes that go back in time; return start and streams."""
    latlng: list[list[float]] = []
    times: list[datetime] = []
    for when, lat, lng in zip(track.times, track.lats, track.lngs, strict=True):
        if not (-90 <= lat <= 90 and -180 <= lng <= 180) or (lat == 0 and lng == 0):
            continue  # (0, 0) is what receivers write before they have a fix
        if times and when < times[-1]:
            continue
        times.append(when)
        latlng.append([round(lat, 6), round(lng, 6)])
    if len(latlng) < 2:
        msg = f"no usable GPS track ({len(latlng)} fix(es) with position and time)"
        raise ImportFileError(msg)
    start = times[0].replace(microsecond=0)
    if start < GPS_EPOCH:
        msg = f"device clock not set: start time {_iso(start)} is before GPS existed"
        raise ImportFileError(msg)
    return start, latlng, [int((t - start).total_seconds()) for t in times]


def track_event(
    track: Track, *, activity_id: str, athlete_id: str, visibility: str, sport_type: str
) -> dict:
    """Build the v1 ``activity`` event; ``updated_at`` = start so re-imports are identical.

    Raises:
        ImportFileError: the track has fewer than two usable fixes or an unset clock.
    """
    start, latlng, seconds = _clean_streams(track)
    return {
        "kind": "activity",
        "activity_id": activity_id,
        "athlete_id": athlete_id,
        "updated_at": _iso(start),
        "sport_type": sport_type,
        "visibility": visibility,
        "hide_map": False,
        "commute": False,
        "start_date": _iso(start),
        "utc_offset_s": track.utc_offset_s,
        "streams": {"latlng": latlng, "time": seconds},
    }


def _kind(name: str) -> str | None:
    """The parser suffix of a file name (``.fit`` for ``x.FIT.gz``), or None."""
    lower = name.lower().removesuffix(".gz")
    return next((s for s in TRACK_SUFFIXES if lower.endswith(s)), None)


@dataclass(frozen=True)
class _Options:
    athlete_id: str
    visibility: str
    sport_type: str | None


def _convert(name: str, data: bytes, opts: _Options, listed_sport: str | None) -> dict:
    """One file's bytes -> event; every failure becomes an ImportFileError with a reason."""
    kind = _kind(name)
    if kind is None:
        msg = "unsupported file type (expected .gpx, .fit, .tcx, optionally .gz, or .zip)"
        raise ImportFileError(msg)
    if name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            msg = f"broken gzip: {exc}"
            raise ImportFileError(msg) from exc
    track = PARSERS[kind](data)
    sport = opts.sport_type or listed_sport or track.sport_type or "Ride"
    if sport in VIRTUAL_SPORTS:
        msg = f"virtual activity ({sport}): its GPS positions are simulated"
        raise ImportFileError(msg)
    activity_id = f"{opts.athlete_id}:{hashlib.sha256(data).hexdigest()[:16]}"
    return track_event(
        track,
        activity_id=activity_id,
        athlete_id=opts.athlete_id,
        visibility=opts.visibility,
        sport_type=sport,
    )


def _guarded(
    path: Path, name: str, data: bytes, opts: _Options, listed: str | None, on_error: OnError
) -> dict | None:
    try:
        return _convert(name, data, opts, listed)
    except ImportFileError as exc:
        on_error(path, str(exc))
    except Exception as exc:  # noqa: BLE001 - parsers raise anything on hostile input
        # gpxpy/fitdecode raise assorted built-ins on malformed input; one bad file must
        # never stop an import of hundreds.
        on_error(path, f"unreadable file: {type(exc).__name__}: {exc}")
    return None


def _listed_sports(archive: zipfile.ZipFile) -> dict[str, str]:
    """``activities.csv`` of an export: member file name -> platform sport."""
    names = [n for n in archive.namelist() if PurePosixPath(n).name == "activities.csv"]
    if not names:
        return {}
    text = archive.read(names[0]).decode("utf-8-sig", errors="replace")
    sports: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        filename, sport = row.get("Filename") or "", platform_sport(row.get("Activity Type"))
        if filename and sport:
            sports[filename.strip().lstrip("/")] = sport
    return sports


def _zip_events(path: Path, opts: _Options, on_error: OnError) -> Iterator[dict]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        on_error(path, f"not a readable zip file: {exc}")
        return
    with archive:
        listed = _listed_sports(archive)
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir() or "__MACOSX" in info.filename or _kind(info.filename) is None:
                continue
            member = path / info.filename
            if info.file_size > MAX_MEMBER_BYTES:
                on_error(member, f"member too large ({info.file_size} bytes)")
                continue
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                on_error(member, f"cannot extract from zip: {exc}")
                continue
            event = _guarded(member, info.filename, data, opts, listed.get(info.filename), on_error)
            if event is not None:
                yield event


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given; folders walked in sorted order for a deterministic output."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and (_kind(p.name) or p.suffix == ".zip")
            )
        else:
            yield path


def import_tracks(
    paths: Iterable[Path],
    *,
    athlete_id: str,
    visibility: str = "everyone",
    sport_type: str | None = None,
    on_error: OnError,
) -> Iterator[dict]:
    """Turn track files, folders and export zips into v1 ``activity`` events.

    Args:
        paths: ``.gpx``/``.fit``/``.tcx`` files (optionally ``.gz``), folders of them, or
            platform bulk-export ``.zip`` files (``activities/*`` + ``activities.csv``).
        athlete_id: Whose activities these are.
        visibility: ``everyone``, ``followers_only`` or ``only_me`` for every activity.
        sport_type: Force a sport; else the export CSV's type, the file's own, or "Ride".
        on_error: Called as ``on_error(path, reason)`` for each file that is skipped.

    Yields:
        One event per usable file, in input order; a file seen twice is yielded once.

    Raises:
        ImportFileError: the options themselves are invalid (never for a bad file).
    """
    if not athlete_id or not athlete_id.strip():
        msg = f"import: --athlete-id must not be empty (got {athlete_id!r})"
        raise ImportFileError(msg)
    if visibility not in VISIBILITIES:
        msg = f"import: visibility {visibility!r} is not one of {', '.join(VISIBILITIES)}"
        raise ImportFileError(msg)
    forced = platform_sport(sport_type) or sport_type if sport_type else None
    opts = _Options(athlete_id, visibility, forced)
    seen: set[str] = set()
    for path in _expand(paths):
        for event in _events_of(path, opts, on_error):
            if event["activity_id"] not in seen:
                seen.add(event["activity_id"])
                yield event


def _events_of(path: Path, opts: _Options, on_error: OnError) -> Iterator[dict]:
    if path.suffix.lower() == ".zip":
        yield from _zip_events(path, opts, on_error)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        on_error(path, f"cannot read file: {exc.strerror or exc}")
        return
    event = _guarded(path, path.name, data, opts, None, on_error)
    if event is not None:
        yield event
