"""GPX / FIT / TCX files and platform bulk-export zips -> v1 ``activity`` events.

This is the engine behind ``heatmetro import FILE_OR_ZIP ... --athlete-id ID``. Each file
becomes one activity, or one per leg when it holds several (a multisport FIT's sessions;
GPX tracks hours apart or of other types); a file that cannot give a usable track (corrupt, truncated,
no GPS, no timestamps, simulated indoor GPS) is reported through ``on_error`` with a
one-line reason and skipped, and the import carries on with the rest.

The activity id is ``athlete_id + ":" + sha256(file content)[:16]`` (content after
un-gzipping), so importing the same file again, raw or from an export zip, gives the
same id and the stream consumer treats it as a re-delivery.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

import numpy as np

from heatmetro.core.clock import CLOCK_RESET_GAP_S, untangle_clock
from heatmetro.core.errors import ImportFileError
from heatmetro.core.limits import MAX_DURATION_S
from heatmetro.flows.importers.capped import DEFAULT_MAX_FILE_BYTES, capped, size_text
from heatmetro.flows.importers.formats import (
    GPS_EPOCH,
    MAX_TRACK_FIXES,
    TRACK_SUFFIXES,
    TRANSITION,
    VIRTUAL_SPORTS,
    VISIBILITIES,
    RecordedTrack,
    parse_fit,
    platform_sport,
)
from heatmetro.flows.importers.local_time import utc_offset_at
from heatmetro.flows.importers.xml_tracks import XML_PARSERS

PARSERS: dict[str, Callable[[BinaryIO, int], RecordedTrack]] = {".fit": parse_fit, **XML_PARSERS}
MAX_CSV_BYTES = 64 * 2**20  # an export's activities.csv: one row per activity
OnError = Callable[[Path, str], None]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean_streams(
    track: RecordedTrack, dropped: dict[str, int] | None = None
) -> tuple[datetime, list[list[float]], list[int]]:
    """Drop invalid fixes, untangle a clock going back; return start and streams.
    ``dropped`` receives how many of each were dropped."""
    latlng: list[list[float]] = []
    times: list[int] = []
    counts = dropped if dropped is not None else {}
    for when, lat, lng in zip(track.times, track.lats, track.lngs, strict=True):
        if not (-90 <= lat <= 90 and -180 <= lng <= 180) or (lat == 0 and lng == 0):
            counts["no_fix"] = counts.get("no_fix", 0) + 1
            continue  # (0, 0) is what receivers write before they have a fix
        times.append(when)
        latlng.append([round(lat, 6), round(lng, 6)])
    # A garbage time (a FIT record years off, a GPS week rollover, a first fix from 1970)
    # is judged against the track's median time, not its first fix: one such fix would
    # make the whole activity a dead letter (the contract's bound), or drop the rest.
    span = MAX_DURATION_S * 1_000_000
    if times:
        mid = sorted(times)[len(times) // 2]
        near = [abs(w - mid) <= span for w in times]
        if not all(near):
            counts["beyond"] = counts.get("beyond", 0) + near.count(False)
            latlng = [p for p, ok in zip(latlng, near, strict=True) if ok]
            times = [w for w, ok in zip(times, near, strict=True) if ok]
    # A clock going back (core.clock): a wrong time goes, a reset keeps its stretch.
    clock = untangle_clock(np.array([w // 1_000_000 for w in times], dtype=np.float64))
    moved = clock.resets or not np.array_equal(clock.keep, np.arange(len(times)))
    if moved:
        counts["resets"] = counts.get("resets", 0) + clock.resets
        counts["backwards"] = counts.get("backwards", 0) + clock.wrong
        latlng = [latlng[i] for i in clock.keep.tolist()]
        times = [int(s) * 1_000_000 for s in clock.t.tolist()]
        # Resets add gaps: the contract's 30 days, from the (possibly moved) first fix.
        within = [w - times[0] <= span for w in times]
        if not all(within):
            counts["beyond"] = counts.get("beyond", 0) + within.count(False)
            latlng = [p for p, ok in zip(latlng, within, strict=True) if ok]
            times = [w for w, ok in zip(times, within, strict=True) if ok]
    if len(latlng) < 2:
        unreadable = f", {track.skipped} unreadable point(s)" if track.skipped else ""
        msg = f"no usable GPS track ({len(latlng)} fix(es) with position and time{unreadable})"
        raise ImportFileError(msg)
    start_s = times[0] // 1_000_000  # whole seconds, as the contract's start_date
    start = datetime.fromtimestamp(start_s, tz=UTC)
    if start < GPS_EPOCH:
        msg = f"device clock not set: start time {_iso(start)} is before GPS existed"
        raise ImportFileError(msg)
    return start, latlng, [(t // 1_000_000) - start_s if t >= 0 else 0 for t in times]


def track_event(
    track: RecordedTrack,
    *,
    activity_id: str,
    athlete_id: str,
    visibility: str,
    sport_type: str,
    dropped: dict[str, int] | None = None,
    updated_at: datetime | None = None,
) -> dict:
    """Build the v1 ``activity`` event; ``updated_at`` = start so re-imports are identical
    (or ``updated_at``: a later one makes a re-import with other options a new version).
    ``dropped``: receives the fixes left out, by reason (see ``_clean_streams``).

    Raises:
        ImportFileError: the track has fewer than two usable fixes or an unset clock.
    """
    start, latlng, seconds = _clean_streams(track, dropped)
    offset = track.utc_offset_s
    if not track.offset_known:  # UTC times only: the local time where it starts
        lat, lng = latlng[0]
        offset = utc_offset_at(lat, lng, int(start.timestamp()) * 1_000_000) or offset
    return {
        "kind": "activity",
        "activity_id": activity_id,
        "athlete_id": athlete_id,
        "updated_at": _iso(updated_at if updated_at is not None else start),
        "sport_type": sport_type,
        "visibility": visibility,
        "hide_map": False,
        "commute": False,
        "start_date": _iso(start),
        "utc_offset_s": offset,
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
    max_file_bytes: int
    on_error: OnError
    on_warning: OnError
    updated_at: datetime | None = None  # None: the activity's start (re-imports identical)


def _convert(
    name: str, raw: IO[bytes], opts: _Options, listed_sport: str | None
) -> tuple[list[dict], list[str]]:
    """One file's (compressed) stream -> (its events, notes on what was left out). A
    file with several activities (``RecordedTrack.legs``) gives one event each, the
    first with the file's id, the others with ``-2``, ``-3`` ... after it.

    Raises:
        ImportFileError: the file gives no usable track; the reason in the message.
    """
    kind = _kind(name)
    if kind is None:
        msg = "unsupported file type (expected .gpx, .fit, .tcx, optionally .gz, or .zip)"
        raise ImportFileError(msg)
    reader, stream = capped(raw, opts.max_file_bytes, gz=name.lower().endswith(".gz"))
    track = PARSERS[kind](stream, MAX_TRACK_FIXES)
    reader.drain()  # the id hashes the whole content, read to its end (still capped)
    sport = opts.sport_type or listed_sport or track.sport_type or "Ride"
    if sport in VIRTUAL_SPORTS and not track.legs:
        msg = f"virtual activity ({sport}): its GPS positions are simulated"
        raise ImportFileError(msg)
    dropped: dict[str, int] = {}
    base_id = f"{opts.athlete_id}:{reader.digest()[:16]}"
    events = []
    legs = _legs(track)
    for k, (leg, leg_sport) in enumerate(legs):
        leg_sport = opts.sport_type or leg_sport or sport
        if leg_sport in VIRTUAL_SPORTS:
            continue
        try:
            event = track_event(
                leg,
                activity_id=base_id if k == 0 else f"{base_id}-{k + 1}",
                athlete_id=opts.athlete_id,
                visibility=opts.visibility,
                sport_type=leg_sport,
                dropped=dropped,
                updated_at=opts.updated_at,
            )
        except ImportFileError:
            if len(legs) == 1:
                raise
            continue  # a leg without a track (a transition, a leg recorded indoors)
        events.append(event)
    if not events:
        msg = f"no usable GPS track in any of its {len(legs)} activities (or only virtual ones)"
        raise ImportFileError(msg)
    notes = [
        f"skipped {n} {what}"
        for n, what in (
            (track.skipped, "unreadable point(s)"),
            (track.untimed, "point(s) without a time"),
            (dropped.get("no_fix", 0), "point(s) without a position fix (0,0 or out of range)"),
            (
                dropped.get("backwards", 0),
                "point(s) with a wrong time (out of order with the points around them)",
            ),
            (
                dropped.get("beyond", 0),
                f"point(s) more than {MAX_DURATION_S // 86400} days "
                "from the rest of the track (a broken clock)",
            ),
        )
        if n
    ]
    if dropped.get("resets", 0):
        notes.append(
            f"the clock went back {dropped['resets']} time(s): the fixes after continue "
            f"{CLOCK_RESET_GAP_S:g} s after the one before (the track splits there)"
        )
    if track.damage:
        kept = sum(len(e["streams"]["time"]) for e in events)
        notes.append(f"kept the {kept:,} fixes that could be read; {track.damage}")
    if not (opts.sport_type or listed_sport or track.sport_type or any(s for _, s in legs)):
        # Said, not guessed silently: a walk or a drive taken as a ride lands in the ride
        # layer and the Metro files' ride counts.
        notes.append(f"no sport type in the file: imported as {sport} (--sport-type sets one)")
    if len(events) > 1:
        each = ", ".join(f"{e['sport_type']} {e['start_date']}" for e in events)
        notes.append(f"{len(events)} activities in one file: {each}")
    return events, notes


def _legs(track: RecordedTrack) -> list[tuple[RecordedTrack, str | None]]:
    """The track cut at its legs' first fixes (each with its own sport and, when the file
    says it, offset), or whole; a triathlon's transitions left out."""
    if not track.legs:
        return [(track, None)]
    out = []
    ends = [start for start, _, _ in track.legs[1:]] + [len(track.times)]
    for (lo, sport, offset), hi in zip(track.legs, ends, strict=True):
        if sport == TRANSITION:
            continue
        leg = RecordedTrack(
            sport_type=sport,
            utc_offset_s=offset if offset is not None else track.utc_offset_s,
            offset_known=offset is not None or track.offset_known,
        )
        leg.times, leg.lats, leg.lngs = track.times[lo:hi], track.lats[lo:hi], track.lngs[lo:hi]
        out.append((leg, sport))
    return out


def _guarded(
    path: Path, name: str, open_raw: Callable[[], IO[bytes]], opts: _Options, listed: str | None
) -> list[dict]:
    try:
        with open_raw() as raw:
            events, notes = _convert(name, raw, opts, listed)
        for note in notes:
            opts.on_warning(path, note)
        return events
    except ImportFileError as exc:
        opts.on_error(path, str(exc))
    except OSError as exc:
        opts.on_error(path, f"cannot read file: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - parsers raise anything on hostile input
        # fitdecode raises assorted built-ins on malformed input; one bad file must
        # never stop an import of hundreds.
        opts.on_error(path, f"unreadable file: {type(exc).__name__}: {exc}")
    return []


def _listed_sports(archive: zipfile.ZipFile) -> dict[str, str]:
    """``activities.csv`` of an export: member file name -> platform sport."""
    names = [n for n in archive.namelist() if PurePosixPath(n).name == "activities.csv"]
    if not names:
        return {}
    with archive.open(names[0]) as fh:
        data = fh.read(MAX_CSV_BYTES + 1)
    if len(data) > MAX_CSV_BYTES:
        return {}  # an absurd listing is ignored; the files' own sports are used
    text = data.decode("utf-8-sig", errors="replace")
    sports: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        filename, sport = row.get("Filename") or "", platform_sport(row.get("Activity Type"))
        if filename and sport:
            sports[filename.strip().lstrip("/")] = sport
    return sports


def _zip_events(path: Path, opts: _Options) -> Iterator[dict]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        opts.on_error(path, f"not a readable zip file: {exc}")
        return
    with archive:
        try:
            listed = _listed_sports(archive)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            opts.on_error(path / "activities.csv", f"cannot extract from zip: {exc}")
            listed = {}
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir() or "__MACOSX" in info.filename or _kind(info.filename) is None:
                continue
            member = path / info.filename
            if info.file_size > opts.max_file_bytes:  # the declared size: refuse early
                opts.on_error(
                    member,
                    f"refused: member declares {size_text(info.file_size)}, more than "
                    f"{size_text(opts.max_file_bytes)} (--max-file-bytes)",
                )
                continue
            yield from _guarded(
                member,
                info.filename,
                partial(archive.open, info),
                opts,
                listed.get(info.filename),
            )


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
    on_warning: OnError | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    updated_at: datetime | None = None,
) -> Iterator[dict]:
    """Turn track files, folders and export zips into v1 ``activity`` events.

    Args:
        paths: ``.gpx``/``.fit``/``.tcx`` files (optionally ``.gz``), folders of them, or
            platform bulk-export ``.zip`` files (``activities/*`` + ``activities.csv``).
        athlete_id: Whose activities these are.
        visibility: ``everyone``, ``followers_only`` or ``only_me`` for every activity.
        sport_type: Force a sport; else the export CSV's type, the file's own, or "Ride".
        on_error: Called as ``on_error(path, reason)`` for each file that is skipped.
        on_warning: Called as ``on_warning(path, note)`` for a file imported with losses
            (``skipped 2 unreadable point(s)``).
        max_file_bytes: Refuse a file (or zip member) whose *uncompressed* content is
            larger; it is read as a stream, so memory stays bounded whatever the file.
        updated_at: Every event's version time (default: the activity's start, so the
            same file imported twice is the same event; a later time makes a re-import
            with another visibility or sport replace the first).

    Yields:
        One event per usable file (per leg of a multi-activity file), in input order; a
        file seen twice is yielded once.

    Raises:
        ImportFileError: the options themselves are invalid (never for a bad file).
    """
    if not athlete_id or not athlete_id.strip():
        msg = f"import: --athlete-id must not be empty (got {athlete_id!r})"
        raise ImportFileError(msg)
    if visibility not in VISIBILITIES:
        msg = f"import: visibility {visibility!r} is not one of {', '.join(VISIBILITIES)}"
        raise ImportFileError(msg)
    if max_file_bytes < 1:
        msg = f"import: --max-file-bytes must be positive (got {max_file_bytes})"
        raise ImportFileError(msg)
    forced = platform_sport(sport_type) or sport_type if sport_type else None
    if updated_at is not None and updated_at.tzinfo is None:
        msg = f"import: --updated-at {updated_at.isoformat()} has no time zone (add Z)"
        raise ImportFileError(msg)
    opts = _Options(
        athlete_id, visibility, forced, max_file_bytes, on_error,
        on_warning or (lambda p, n: None), updated_at,
    )  # fmt: skip
    seen: set[str] = set()
    for path in _expand(paths):
        for event in _events_of(path, opts):
            if event["activity_id"] not in seen:
                seen.add(event["activity_id"])
                yield event


def _events_of(path: Path, opts: _Options) -> Iterator[dict]:
    if path.suffix.lower() == ".zip":
        yield from _zip_events(path, opts)
        return
    yield from _guarded(path, path.name, lambda: path.open("rb"), opts, None)
