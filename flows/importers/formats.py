"""The ``RecordedTrack`` a parser extracts, FIT files read into one, and sport names.

GPX and TCX are read in ``xml_tracks``. Every parser reads a stream, raises
``ImportFileError`` with a one-line reason for a file that cannot give a usable track,
and skips (and counts) single points it cannot read; ``tracks`` turns tracks into
stream events.
"""

from __future__ import annotations

import bisect
import struct
import warnings
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

import fitdecode

from heatmetro.core.contract import MAX_FIXES_PER_ACTIVITY
from heatmetro.core.errors import ImportFileError

VISIBILITIES = ("everyone", "followers_only", "only_me")
TRACK_SUFFIXES = (".gpx", ".fit", ".tcx")
# GPS time starts on 1980-01-06; anything earlier is an unset device clock (Mojstrovka.gpx
# carries 1901-12-13T20:45:52Z, the most negative 32-bit Unix time).
GPS_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)
FIT_EPOCH = datetime(1989, 12, 31, tzinfo=UTC)
SEMICIRCLE_DEG = 180 / 2**31
# The stream contract's bound on one activity: a file with more fixes is refused early,
# so a parser's memory stays bounded (24 bytes a fix) whatever the file holds.
MAX_TRACK_FIXES = MAX_FIXES_PER_ACTIVITY
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


TRANSITION = "transition"  # a leg's sport: a triathlon's change-over, not an activity


@dataclass
class RecordedTrack:
    """What a parser extracts: timed fixes, a detected sport and the local offset.

    Compact arrays (24 bytes a fix) rather than lists of objects: a long file's track
    stays small. Times are UTC epoch microseconds.
    """

    times: array[int] = field(default_factory=lambda: array("q"))
    lats: array[float] = field(default_factory=lambda: array("d"))
    lngs: array[float] = field(default_factory=lambda: array("d"))
    sport_type: str | None = None
    utc_offset_s: int = 0
    offset_known: bool = False  # the file said its local time (else: from where it starts)
    skipped: int = 0  # points present but unreadable (no latitude, bad number, bad time)
    untimed: int = 0  # points kept out for having no time, in a track that has times
    damage: str = ""  # why reading stopped early; what was read before is kept
    # Several activities in one file (a multisport FIT's sessions, GPX tracks hours
    # apart): each leg's first fix (an index into the arrays), its sport (None: the
    # file's; TRANSITION: a triathlon's change-over, dropped) and its UTC offset when the
    # file says it (else None). Empty: one activity.
    legs: list[tuple[int, str | None, int | None]] = field(default_factory=list)


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


def _epoch_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _local_offset(timestamp: object, local: object) -> int | None:
    """UTC offset from an activity message, rounded to 15 min; None if implausible."""
    utc, loc = _fit_time(timestamp), _fit_time(local)
    if utc is None or loc is None:
        return None
    offset = round((loc - utc).total_seconds() / 900) * 900
    return offset if abs(offset) <= MAX_OFFSET_S else None


def parse_fit(stream: BinaryIO, max_fixes: int = MAX_TRACK_FIXES) -> RecordedTrack:
    """Read a FIT stream (semicircle positions) into a RecordedTrack.

    Raises:
        ImportFileError: corrupt, truncated or CRC-failing file (the reason in the message),
            or more than ``max_fixes`` fixes.
    """
    track = RecordedTrack()
    sports: list[tuple[float, str]] = []
    sessions: list[tuple[int, str | None]] = []
    damage = ""
    try:
        with warnings.catch_warnings():
            # fitdecode warns about odd field sizes it then decodes fine (Coros files).
            warnings.simplefilter("ignore")
            reader = fitdecode.FitReader(stream, check_crc=fitdecode.CrcCheck.RAISE)
            for frame in reader:
                if isinstance(frame, fitdecode.FitDataMessage):
                    _fit_message(frame, track, sports, sessions)
                    if len(track.times) > max_fixes:
                        msg = f"more than {max_fixes:,} GPS fixes (the stream contract's limit)"
                        raise ImportFileError(msg)
    except fitdecode.FitCRCError as exc:
        damage = f"FIT checksum mismatch, file is corrupt ({exc})"
    except fitdecode.FitEOFError as exc:
        damage = f"truncated FIT file ({exc})"
    except fitdecode.FitError as exc:
        damage = f"corrupt FIT file: {type(exc).__name__}: {exc}"
    except (ValueError, IndexError, KeyError, struct.error, UnicodeDecodeError) as exc:
        # fitdecode raises plain built-ins on some corrupt bytes, after whole messages.
        damage = f"corrupt FIT file: {type(exc).__name__}: {exc}"
    if damage:
        # A watch that died mid-ride, or a copy cut short, still holds the ride up to
        # there: lose only what is broken (the messages are read in order, each whole).
        if len(track.times) < 2:
            raise ImportFileError(damage)
        track.damage = damage
    if sports:  # a multisport file is filed under its longest leg
        track.sport_type = max(sports, key=lambda s: s[0])[1]
    if len({start for start, _ in sessions}) > 1:  # a multisport file: one activity a leg
        times = list(track.times)
        starts = sorted(dict(sessions).items())
        track.legs = [
            (0 if k == 0 else bisect.bisect_left(times, start), sport, None)
            for k, (start, sport) in enumerate(starts)
        ]
    return track


def _fit_message(
    frame: fitdecode.FitDataMessage,
    track: RecordedTrack,
    sports: list[tuple[float, str]],
    sessions: list[tuple[int, str | None]],
) -> None:
    get = frame.get_value
    if frame.name == "record":
        lat, lng = get("position_lat", fallback=None), get("position_long", fallback=None)
        if lat is None and lng is None:
            return  # no GPS in this record (indoors, or before the first fix)
        when = _fit_time(get("timestamp", fallback=None))
        if when is None or not isinstance(lat, int) or not isinstance(lng, int):
            track.skipped += 1
            return
        track.times.append(_epoch_us(when))
        track.lats.append(lat * SEMICIRCLE_DEG)
        track.lngs.append(lng * SEMICIRCLE_DEG)
    elif frame.name in ("session", "sport"):
        sport = _fit_sport(get("sport", fallback=None), get("sub_sport", fallback=None))
        if sport is not None:
            elapsed = get("total_elapsed_time", fallback=None)
            sports.append((float(elapsed) if isinstance(elapsed, int | float) else 0.0, sport))
        started = _fit_time(get("start_time", fallback=None)) if frame.name == "session" else None
        if started is not None:
            raw = get("sport", fallback=None)
            sessions.append((_epoch_us(started), TRANSITION if raw == "transition" else sport))
    elif frame.name == "activity":
        offset = _local_offset(
            get("timestamp", fallback=None), get("local_timestamp", fallback=None)
        )
        if offset is not None:
            track.utc_offset_s = offset
            # 0 is also what a watch writes when its local_timestamp just repeats the UTC
            # one (seen from Bogota): then where it starts tells, and in UTC+0 it agrees.
            track.offset_known = offset != 0
