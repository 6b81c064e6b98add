"""GPX and TCX read as a stream of XML events: bounded memory, hostile input refused.

The parser is ``defusedxml``'s (entity declarations, hence "billion laughs" expansion,
and external entities are refused) with a target that keeps only each point's numbers,
never an element tree. A point that cannot be read (no latitude, a bad number, a bad
time) is skipped and counted; the file is refused only when nothing usable is left.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from heatmetro.core.errors import ImportFileError
from heatmetro.flows.importers.capped import CHUNK
from heatmetro.flows.importers.formats import MAX_UNTIMED_SHARE, RecordedTrack, platform_sport

# Tracks of one file this far apart in time are separate activities (hours: a ride the
# next day), not one recording split at a power cycle or a pause.
LEG_GAP_S = 4 * 3600

_US = 1_000_000


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_time(text: str | None) -> tuple[int, int] | None:
    """ISO 8601 text -> (UTC epoch microseconds, offset seconds); None if unreadable.

    A time without a zone is UTC (as GPX 1.0 files from old units mean it).
    """
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    offset = moment.utcoffset()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds
    return micros, int(offset.total_seconds()) if offset else 0


def parse_degrees(text: str | None, limit: float) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and -limit <= value <= limit else None


class _Segment:
    __slots__ = ("lats", "lngs", "offset", "points", "times", "trk", "untimed")

    def __init__(self, trk: int = -1) -> None:
        self.times, self.lats, self.lngs = array("q"), array("d"), array("d")
        self.points = self.untimed = 0
        self.offset: int | None = None
        self.trk = trk  # the <trk> it belongs to (-1: a route)


class _Target:
    """Collects points; subclasses say which elements are points and which hold text."""

    TEXT: frozenset[str] = frozenset()

    def __init__(self, max_fixes: int) -> None:
        self.max_fixes = max_fixes
        self.kept = self.skipped = 0
        self.path: list[str] = []
        self.text: list[str] | None = None
        self.value: dict[str, str] = {}

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name = _local(tag)
        self.path.append(name)
        self.opened(name, attrib)
        if name in self.TEXT:
            self.text = []

    def data(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)

    def end(self, tag: str) -> None:
        name = self.path.pop()
        if self.text is not None and name in self.TEXT:
            self.value.setdefault(name, "".join(self.text))
            self.text = None
        self.closed(name)

    def close(self) -> None:
        return None

    def opened(self, name: str, attrib: dict[str, str]) -> None:
        raise NotImplementedError

    def closed(self, name: str) -> None:
        raise NotImplementedError

    def add(self, seg: _Segment, when: tuple[int, int], lat: float, lng: float) -> None:
        self.kept += 1
        if self.kept > self.max_fixes:
            msg = f"more than {self.max_fixes:,} GPS fixes (the stream contract's limit)"
            raise ImportFileError(msg)
        if seg.offset is None:
            seg.offset = when[1]
        seg.times.append(when[0])
        seg.lats.append(lat)
        seg.lngs.append(lng)


class _GpxTarget(_Target):
    TEXT = frozenset({"time", "type"})

    def __init__(self, max_fixes: int) -> None:
        super().__init__(max_fixes)
        self.tracks: list[_Segment] = []
        self.routes: list[_Segment] = []
        self.types: dict[str, list[str]] = {"trk": [], "rte": []}
        self.trk_types: dict[int, str] = {}  # <trk> number -> its <type>
        self.trk = -1
        self.point: dict[str, str] | None = None

    def opened(self, name: str, attrib: dict[str, str]) -> None:
        if name == "trk":
            self.trk += 1
        elif name == "trkseg":
            self.tracks.append(_Segment(self.trk))
        elif name == "rte":
            self.routes.append(_Segment())
        elif name in ("trkpt", "rtept"):
            self.point = dict(attrib)
            self.value = {}

    def closed(self, name: str) -> None:
        if name == "type":
            kind = self.value.pop("type", "")
            if self.path and self.path[-1] in ("trk", "rte"):  # not a waypoint's type
                self.types[self.path[-1]].append(kind)
                if self.path[-1] == "trk":
                    self.trk_types[self.trk] = kind
        elif name in ("trkpt", "rtept") and self.point is not None:
            segs = self.tracks if name == "trkpt" else self.routes
            if not segs:  # a trkpt outside any trkseg: its own segment
                segs.append(_Segment(self.trk if name == "trkpt" else -1))
            self._point(segs[-1])
            self.point = None

    def _point(self, seg: _Segment) -> None:
        assert self.point is not None
        seg.points += 1
        lat = parse_degrees(self.point.get("lat"), 90)
        lng = parse_degrees(self.point.get("lon"), 180)
        raw_time = self.value.get("time")
        when = parse_time(raw_time)
        if lat is None or lng is None or (raw_time and when is None):
            self.skipped += 1
        elif when is None:
            seg.untimed += 1
        else:
            self.add(seg, when, lat, lng)

    def track(self) -> RecordedTrack:
        segments = [s for s in self.tracks + self.routes if s.points]
        if not segments:
            if self.skipped:
                msg = f"no readable point ({self.skipped} unreadable)"
                raise ImportFileError(msg)
            msg = "no track or route points (waypoints only?)"
            raise ImportFileError(msg)
        # Garmin units save an untimed, simplified copy of each track beside the timed
        # "ACTIVE LOG": use only segments that are (almost) fully timed.
        timed = [s for s in segments if s.untimed <= MAX_UNTIMED_SHARE * s.points and len(s.times)]
        if not timed:
            total = sum(s.points for s in segments)
            untimed = sum(s.untimed for s in segments)
            msg = f"no timestamps on {untimed} of {total} points"
            if not untimed:
                msg = f"no readable point ({self.skipped} unreadable)"
            raise ImportFileError(msg)
        types = [t for t in self.types["trk"] + self.types["rte"] if t]
        out = RecordedTrack(sport_type=platform_sport(types[0]) if types else None)
        out.utc_offset_s = timed[0].offset or 0
        out.offset_known = bool(out.utc_offset_s)  # "Z" says UTC, not where it was recorded
        for seg in timed:
            out.times.extend(seg.times)
            out.lats.extend(seg.lats)
            out.lngs.extend(seg.lngs)
        out.skipped = self.skipped
        out.untimed = sum(s.untimed for s in timed)
        out.legs = self._legs(timed)
        if out.legs:  # each leg says its own offset, or takes where it starts
            out.offset_known = False
        return out

    def _legs(self, timed: list[_Segment]) -> list[tuple[int, str | None, int | None]]:
        """Where one activity ends and the next begins (as ``RecordedTrack.legs``): at a
        <trk> that starts more than ``LEG_GAP_S`` from the last (before or after it), or
        declares another sport. A device that splits one ride into tracks at each power
        cycle keeps them together."""
        legs: list[tuple[int, str | None, int | None]] = []
        last_trk: int | None = None
        last_end, last_sport, at = 0, None, 0
        for seg in timed:
            sport = platform_sport(self.trk_types.get(seg.trk))
            offset = seg.offset or None  # "Z" (0) says UTC, not where it was
            if last_trk is None:
                legs.append((0, sport, offset))
            elif seg.trk != last_trk:
                gap_s = abs(seg.times[0] - last_end) / 1e6
                if gap_s > LEG_GAP_S or (sport and last_sport and sport != last_sport):
                    legs.append((at, sport, offset))
            last_trk, last_end, last_sport = seg.trk, seg.times[-1], sport or last_sport
            at += len(seg.times)
        return legs if len(legs) > 1 else []


class _TcxTarget(_Target):
    TEXT = frozenset({"Time", "LatitudeDegrees", "LongitudeDegrees"})

    def __init__(self, max_fixes: int) -> None:
        super().__init__(max_fixes)
        self.segment = _Segment()
        self.sport: str | None = None
        self.seen_activity = False

    def opened(self, name: str, attrib: dict[str, str]) -> None:
        if name == "Activity" and not self.seen_activity:
            self.seen_activity = True
            self.sport = platform_sport(attrib.get("Sport"))
        elif name == "Trackpoint":
            self.value = {}

    def closed(self, name: str) -> None:
        if name != "Trackpoint":
            return
        lat_text, lng_text = self.value.get("LatitudeDegrees"), self.value.get("LongitudeDegrees")
        if lat_text is None and lng_text is None:
            return  # trackpoints without Position are HR/cadence samples, not fixes
        lat, lng = parse_degrees(lat_text, 90), parse_degrees(lng_text, 180)
        when = parse_time(self.value.get("Time"))
        if lat is None or lng is None or when is None:
            self.skipped += 1
        else:
            self.add(self.segment, when, lat, lng)

    def track(self) -> RecordedTrack:
        seg = self.segment
        out = RecordedTrack(
            sport_type=self.sport, utc_offset_s=seg.offset or 0, skipped=self.skipped,
            offset_known=bool(seg.offset),
        )  # fmt: skip
        out.times, out.lats, out.lngs = seg.times, seg.lats, seg.lngs
        return out


def _parse(stream: BinaryIO, target: _GpxTarget | _TcxTarget, what: str) -> RecordedTrack:
    parser = DefusedXMLParser(target=target)
    try:
        while chunk := stream.read(CHUNK):
            parser.feed(chunk)
        parser.close()
    except DefusedXmlException as exc:
        msg = f"refused: XML entity declarations are not allowed ({type(exc).__name__})"
        raise ImportFileError(msg) from None
    except ParseError as exc:
        # A file cut short (a phone's app killed mid-save, a partial download) keeps
        # the points read before the break, as a truncated FIT file does.
        msg = f"not a valid {what} file: {exc}"
        try:
            track = target.track()
        except ImportFileError:
            raise ImportFileError(msg) from None
        track.damage = f"{msg} (broken or cut short there)"
        return track
    return target.track()


def parse_gpx(stream: BinaryIO, max_fixes: int) -> RecordedTrack:
    """Read a GPX 1.0/1.1 stream: track segments in order, then routes, into a RecordedTrack.

    Raises:
        ImportFileError: not well-formed XML, entities declared, or no usable points.
    """
    return _parse(stream, _GpxTarget(max_fixes), "GPX")


def parse_tcx(stream: BinaryIO, max_fixes: int) -> RecordedTrack:
    """Read a Garmin TCX stream (namespaces matched by local name) into a RecordedTrack.

    Raises:
        ImportFileError: not well-formed XML or entities declared.
    """
    return _parse(stream, _TcxTarget(max_fixes), "TCX")


XML_PARSERS: dict[str, Callable[[BinaryIO, int], RecordedTrack]] = {
    ".gpx": parse_gpx,
    ".tcx": parse_tcx,
}
