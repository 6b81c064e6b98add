"""Reading GPX, FIT and TCX files into a ``Track`` (times and positions), and sport names.

Every parser raises ``ImportFileError`` with a one-line reason for a file that cannot
give a usable track; ``heatmetro.flows.importers.tracks`` turns tracks into stream events.
"""

from __future__ import annotations

import io
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import fitdecode
import gpxpy
import gpxpy.gpx

from heatmetro.core.errors import ImportFileError

VISIBILITIES = ("everyone", "followers_only", "only_me")
TRACK_SUFFIXES = (".gpx", ".fit", ".tcx")
# GPS time starts on 1980-01-06; anything earlier is an unset device clock (Mojstrovka.gpx
# carries 1901-12-13T20:45:52Z, the most negative 32-bit Unix time).
GPS_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)
FIT_EPOCH = datetime(1989, 12, 31, tzinfo=UTC)
SEMICIRCLE_DEG = 180 / 2**31
MAX_MEMBER_BYTES = 256 * 2**20  # refuse zip members that would inflate past this
MAX_OFFSET_S = 14 * 3600
MAX_UNTIMED_SHARE = 0.1  # a GPX segment with more points lacking <time> is not used

# The platform's own names; looked up case- and punctuation-insensitively, so the export
# CSV's display names ("E-Bike Ride", "Stand Up Paddling") map onto them.
PLATFORM_SPORTS = (
    "Ride", "GravelRide", "MountainBikeRide", "EBikeRide", "EMountainBikeRide", "VirtualRide",
    "Velomobile", "Handcycle", "Wheelchair", "Run", "TrailRun", "VirtualRun", "Walk", "Hike",
    "Kayaking", "Canoeing", "Rowing", "StandUpPaddling", "Surfing", "Kitesurf", "Windsurf",
    "Sail", "Swim", "AlpineSki", "BackcountrySki", "NordicSki", "RollerSki", "Snowboard",
    "Snowshoe", "IceSkate", "InlineSkate", "Skateboard", "Golf", "RockClimbing", "Workout",
)  # fmt: skip
_BY_KEY = {name.lower(): name for name in PLATFORM_SPORTS}
# Device and file-format words (FIT enums, GPX <type>, TCX Sport) -> platform names.
SPORT_ALIASES = {
    "cycling": "Ride", "biking": "Ride", "bike": "Ride", "road_biking": "Ride",
    "mountain_biking": "MountainBikeRide", "mountain": "MountainBikeRide",
    "downhill": "MountainBikeRide", "gravel_cycling": "GravelRide", "e_biking": "EBikeRide",
    "e_bike_fitness": "EBikeRide", "e_bike_mountain": "EMountainBikeRide",
    "indoor_cycling": "VirtualRide", "spin": "VirtualRide", "running": "Run",
    "trail_running": "TrailRun", "trail": "TrailRun", "treadmill": "VirtualRun",
    "indoor_running": "VirtualRun", "walking": "Walk", "hiking": "Hike",
    "mountaineering": "Hike", "swimming": "Swim", "open_water": "Swim",
    "kayaking": "Kayaking", "paddling": "Canoeing", "rowing": "Rowing",
    "stand_up_paddleboarding": "StandUpPaddling", "cross_country_skiing": "NordicSki",
    "alpine_skiing": "AlpineSki", "backcountry": "BackcountrySki",
    "snowboarding": "Snowboard", "snowshoeing": "Snowshoe", "ice_skating": "IceSkate",
    "inline_skating": "InlineSkate", "sailing": "Sail",
}  # fmt: skip
# GPS positions in these are simulated (Zwift's London, a treadmill): never map them.
VIRTUAL_SPORTS = ("VirtualRide", "VirtualRun")


@dataclass
class Track:
    """What a parser extracts: timed fixes, a detected sport and the local offset."""

    times: list[datetime] = field(default_factory=list)  # tz-aware
    lats: list[float] = field(default_factory=list)
    lngs: list[float] = field(default_factory=list)
    sport_type: str | None = None
    utc_offset_s: int = 0


def platform_sport(name: str | None) -> str | None:
    """Map a device/file/export sport word to the platform's name, or None if unknown.

    Examples: ``"cycling"`` -> ``"Ride"``, ``"E-Bike Ride"`` -> ``"EBikeRide"``.
    """
    if not name:
        return None
    word = name.strip().lower().replace("-", "_").replace(" ", "_")
    if word in SPORT_ALIASES:
        return SPORT_ALIASES[word]
    return _BY_KEY.get("".join(ch for ch in word if ch.isalnum()))


# --------------------------------------------------------------------------- FIT


def _fit_sport(sport: object, sub_sport: object) -> str | None:
    """Sub-sport refines the sport (trail run, gravel ride); generic words map to None."""
    refined = platform_sport(str(sub_sport)) if isinstance(sub_sport, str) else None
    base = platform_sport(str(sport)) if isinstance(sport, str) else None
    if refined is not None and (base is None or refined.endswith(base[-3:])):
        return refined  # e.g. running/trail -> TrailRun, cycling/gravel_cycling -> GravelRide
    if sub_sport == "virtual_activity" and base in ("Ride", "Run"):
        return "Virtual" + base
    if base == "AlpineSki" and refined == "BackcountrySki":
        return refined
    return base


def _fit_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int) and value > 0x10000000:  # raw seconds since the FIT epoch
        return FIT_EPOCH + timedelta(seconds=value)
    return None


def _local_offset(timestamp: object, local: object) -> int | None:
    """UTC offset from an activity message, rounded to 15 min; None if implausible."""
    utc, loc = _fit_time(timestamp), _fit_time(local)
    if utc is None or loc is None:
        return None
    offset = round((loc - utc).total_seconds() / 900) * 900
    return offset if abs(offset) <= MAX_OFFSET_S else None


def parse_fit(data: bytes) -> Track:
    """Read a FIT file (semicircle positions) into a Track.

    Raises:
        ImportFileError: corrupt, truncated or CRC-failing file (the reason in the message).
    """
    track = Track()
    sports: list[tuple[float, str]] = []
    try:
        with warnings.catch_warnings():
            # fitdecode warns about odd field sizes it then decodes fine (Coros files).
            warnings.simplefilter("ignore")
            reader = fitdecode.FitReader(io.BytesIO(data), check_crc=fitdecode.CrcCheck.RAISE)
            for frame in reader:
                if isinstance(frame, fitdecode.FitDataMessage):
                    _fit_message(frame, track, sports)
    except fitdecode.FitCRCError as exc:
        msg = f"FIT checksum mismatch, file is corrupt ({exc})"
        raise ImportFileError(msg) from exc
    except fitdecode.FitEOFError as exc:
        msg = f"truncated FIT file ({exc})"
        raise ImportFileError(msg) from exc
    except fitdecode.FitError as exc:
        msg = f"corrupt FIT file: {type(exc).__name__}: {exc}"
        raise ImportFileError(msg) from exc
    if sports:  # a multisport file is filed under its longest leg
        track.sport_type = max(sports, key=lambda s: s[0])[1]
    return track


def _fit_message(
    frame: fitdecode.FitDataMessage, track: Track, sports: list[tuple[float, str]]
) -> None:
    get = frame.get_value
    if frame.name == "record":
        when = _fit_time(get("timestamp", fallback=None))
        lat, lng = get("position_lat", fallback=None), get("position_long", fallback=None)
        if when is not None and isinstance(lat, int) and isinstance(lng, int):
            track.times.append(when)
            track.lats.append(lat * SEMICIRCLE_DEG)
            track.lngs.append(lng * SEMICIRCLE_DEG)
    elif frame.name in ("session", "sport"):
        sport = _fit_sport(get("sport", fallback=None), get("sub_sport", fallback=None))
        if sport is not None:
            elapsed = get("total_elapsed_time", fallback=None)
            sports.append((float(elapsed) if isinstance(elapsed, int | float) else 0.0, sport))
    elif frame.name == "activity":
        offset = _local_offset(
            get("timestamp", fallback=None), get("local_timestamp", fallback=None)
        )
        if offset is not None:
            track.utc_offset_s = offset


# --------------------------------------------------------------------------- GPX, TCX


def parse_gpx(data: bytes) -> Track:
    """Read a GPX 1.0/1.1 file: track segments in order, else routes, into a Track.

    Raises:
        ImportFileError: not parseable as GPX.
    """
    try:
        gpx = gpxpy.parse(data.decode("utf-8-sig"))  # -sig: some exporters write a BOM
    except (gpxpy.gpx.GPXException, UnicodeDecodeError, ValueError) as exc:
        msg = f"not a valid GPX file: {exc}"
        raise ImportFileError(msg) from exc
    segments: list[list[gpxpy.gpx.GPXTrackPoint] | list[gpxpy.gpx.GPXRoutePoint]]
    segments = [s.points for t in gpx.tracks for s in t.segments if s.points]
    segments += [r.points for r in gpx.routes if r.points]
    if not segments:
        msg = "no track or route points (waypoints only?)"
        raise ImportFileError(msg)
    # Garmin units save an untimed, simplified copy of each track beside the timed
    # "ACTIVE LOG": use only segments that are (almost) fully timed.
    timed = [
        seg for seg in segments if sum(p.time is None for p in seg) <= MAX_UNTIMED_SHARE * len(seg)
    ]
    if not timed:
        total = sum(len(seg) for seg in segments)
        untimed = sum(p.time is None for seg in segments for p in seg)
        msg = f"no timestamps on {untimed} of {total} points"
        raise ImportFileError(msg)
    types = [t.type for t in gpx.tracks if t.type] + [r.type for r in gpx.routes if r.type]
    track = Track(sport_type=platform_sport(types[0]) if types else None)
    for point in (p for seg in timed for p in seg):
        when: datetime | None = point.time
        if when is None:
            continue
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if not track.times:  # times written with +01:00 tell us the local offset
            offset = when.utcoffset()
            track.utc_offset_s = int(offset.total_seconds()) if offset else 0
        track.times.append(when.astimezone(UTC))
        track.lats.append(point.latitude)
        track.lngs.append(point.longitude)
    return track


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element.iter():
        if _local(child.tag) == name:
            return child.text
    return None


def parse_tcx(data: bytes) -> Track:
    """Read a Garmin TCX file (namespaces matched by local name) into a Track.

    Raises:
        ImportFileError: invalid XML or a bad time/coordinate value.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        msg = f"not a valid TCX file: {exc}"
        raise ImportFileError(msg) from exc
    track = Track()
    for element in root.iter():
        tag = _local(element.tag)
        if tag == "Activity" and track.sport_type is None:
            track.sport_type = platform_sport(element.get("Sport"))
        elif tag == "Trackpoint":
            _tcx_point(element, track)
    return track


def _tcx_point(element: ET.Element, track: Track) -> None:
    when, lat, lng = (
        _child_text(element, n) for n in ("Time", "LatitudeDegrees", "LongitudeDegrees")
    )
    if not (when and lat and lng):
        return  # trackpoints without Position are HR/cadence samples, not fixes
    try:
        moment = datetime.fromisoformat(when.strip())
        track.lats.append(float(lat))
        track.lngs.append(float(lng))
    except ValueError as exc:
        msg = f"bad trackpoint value (time {when!r}, lat {lat!r}, lng {lng!r})"
        raise ImportFileError(msg) from exc
    track.times.append(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


PARSERS: dict[str, Callable[[bytes], Track]] = {
    ".fit": parse_fit,
    ".gpx": parse_gpx,
    ".tcx": parse_tcx,
}
