"""ValleyBike bike-share CSVs -> rides (one per ``route_id``), nothing else.

The CSVs hold one GPS fix per row (``route_id,user_id,bike,time,longitude,latitude``) with
``time`` and no zone. The data's README calls it US Eastern local clock time; the rides
say UTC: read as local, no ride starts between 04:00 and 09:00 in any month (commuters
among them), and that empty stretch moves an hour with daylight saving time (04-08 in
October, 05-09 in December to February). Read as UTC it is 00:00-05:00 Eastern in every
season: the hours the scheme's docks are closed. So ``time`` is taken as UTC, and each
ride gets the Eastern UTC offset of its start.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from heatmetro.core.errors import ImportFileError

DATA_DIR = Path(__file__).parent / "data"
BUNDLED_FILES = ("june2018.csv.gz", "october2020.csv.gz")
SHARED_FILES = (
    "june2018.csv.gz",
    "june2020.csv.gz",
    "october2020.csv.gz",
    "december2020.csv.gz",
    "january2021.csv.gz",
    "february2021.csv.gz",
)
COLUMNS = ("route_id", "user_id", "time", "longitude", "latitude")
EASTERN = ZoneInfo("America/New_York")
# Athlete settings carry an old timestamp so that they are never "stale" against the
# activities, whatever order a consumer sees them in.
ATHLETE_UPDATED_AT = "2000-01-01T00:00:00Z"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Ride:
    """One cleaned ride: fixes sorted by time, seconds relative to ``start``."""

    route_id: str
    user_id: str
    start: datetime  # UTC, whole seconds
    utc_offset_s: int
    latlng: list[list[float]]
    time: list[int]

    @property
    def activity_id(self) -> str:
        """Stable activity id: ``vb-`` + 16 hex of sha256(route_id)."""
        return "vb-" + sha_hex(self.route_id)[:16]

    @property
    def athlete_id(self) -> str:
        """Stable athlete id: ``vb-`` + 12 hex of sha256(user_id)."""
        return "vb-" + sha_hex(self.user_id)[:12]

    @property
    def local_start(self) -> datetime:
        """Start on the local wall clock (naive on purpose: it is only read for hour/day)."""
        return (self.start + timedelta(seconds=self.utc_offset_s)).replace(tzinfo=None)


def bundled_csvs() -> list[Path]:
    """The two months shipped with the package for the demo (MIT, see data/LICENSE)."""
    return [DATA_DIR / name for name in BUNDLED_FILES]


def shared_csvs() -> list[Path]:
    """All six months from the shared data folder, or ``[]`` when it is absent.

    The folder is ``$HEATMETRO_SHARED_DATA/valleybike``, else ``../shared/data/valleybike``
    beside the working directory, else the workplace's ``/work/shared/data/valleybike``.
    """
    roots = (
        [Path(os.environ["HEATMETRO_SHARED_DATA"])]
        if os.environ.get("HEATMETRO_SHARED_DATA")
        else []
    )
    roots += [Path.cwd().parent / "shared" / "data", Path("/work/shared/data")]
    for root in roots:
        paths = [root / "valleybike" / name for name in SHARED_FILES]
        if all(p.is_file() for p in paths):
            return paths
    return []


# --------------------------------------------------------------------------- reading


def sha_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_columns(path: Path) -> dict[str, list[str]]:
    """Read one CSV into string columns; rows of the wrong width are dropped."""
    try:
        data = gzip.decompress(path.read_bytes())
        split = data.find(b"\n")
        header = data[: split if split >= 0 else len(data)].decode("utf-8").strip().split(",")
        raw = data[split + 1 :].rstrip(b"\n") if split >= 0 else b""
        body = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        msg = f"valleybike: {path}: cannot read gzip CSV: {exc}"
        raise ImportFileError(msg) from exc
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        msg = f"valleybike: {path}: missing column(s) {missing} in header {header}"
        raise ImportFileError(msg)
    columns = _split_uniform(raw, body, len(header)) or _split_csv(body, len(header))
    return {c: columns[header.index(c)] for c in COLUMNS}


def _split_uniform(raw: bytes, body: str, width: int) -> list[list[str]] | None:
    """Fast path: split an unquoted CSV whose every line has ``width`` fields.

    One ``str.split`` over the whole text is several times faster than ``csv.reader``
    building a list per row; any quote or ragged line sends us to the csv module instead.
    """
    if not raw or b'"' in raw or b"\r" in raw:
        return None
    arr = np.frombuffer(raw, dtype=np.uint8)
    line_ends = np.append(np.flatnonzero(arr == ord("\n")), len(arr))
    commas = np.flatnonzero(arr == ord(","))
    per_line = np.diff(np.searchsorted(commas, line_ends), prepend=0)
    if not np.all(per_line == width - 1):
        return None
    flat = body.replace("\n", ",").split(",")
    return [flat[i::width] for i in range(width)]


def _split_csv(body: str, width: int) -> list[list[str]]:
    """Slow path for messy files: the csv module, dropping rows of the wrong width."""
    rows = [row for row in csv.reader(io.StringIO(body)) if len(row) == width]
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


def _to_floats(values: list[str]) -> np.ndarray:
    """Parse coordinates; a non-numeric value (``NA``, empty) becomes NaN."""
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        out = np.empty(len(values), dtype=np.float64)
        for i, value in enumerate(values):
            try:
                out[i] = float(value)
            except ValueError:
                out[i] = np.nan
        return out


def _to_clock_seconds(values: list[str]) -> np.ndarray:
    """Local clock time as seconds (naive, as if UTC); unparsable -> NaT.

    Fractional seconds are truncated ([:19]); the streams carry whole seconds anyway.
    """
    clipped = [v[:19] for v in values]
    try:
        stamps = np.array(clipped, dtype="datetime64[s]")
    except ValueError:
        stamps = np.array([_one_stamp(v) for v in clipped], dtype="datetime64[s]")
    return stamps


def _one_stamp(value: str) -> np.datetime64:
    try:
        return np.datetime64(value, "s")
    except ValueError:
        return np.datetime64("NaT", "s")


def _utc_offset(utc_s: int) -> int:
    """US Eastern's UTC offset in seconds at a moment (seconds since 1970, UTC)."""
    offset = (_EPOCH + timedelta(seconds=utc_s)).astimezone(EASTERN).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _make_ride(
    route_id: str, user_id: str, clock: np.ndarray, lat: np.ndarray, lng: np.ndarray
) -> Ride | None:
    """Build a ride from one route's sorted fixes (all of them, as the bike logged them).

    Repeated dock fixes and rides that never moved stay in the stream on purpose:
    cleaning GPS is ingest's job, and the benchmark must see the real 1.6 M fixes.
    """
    if len(clock) == 0:
        return None
    utc = clock  # UTC already (see the module's note); the offset is the start's
    first = _utc_offset(int(utc[0]))
    start = _EPOCH + timedelta(seconds=int(utc[0]))
    latlng = np.column_stack((np.round(lat, 6), np.round(lng, 6))).tolist()
    return Ride(route_id, user_id, start, first, latlng, (utc - utc[0]).tolist())


def read_rides(paths: Iterable[Path]) -> list[Ride]:
    """Read ValleyBike CSVs into cleaned rides, one per route, in no particular order.

    Rows with a non-numeric or out-of-range lat/lng or an unreadable time are skipped;
    every ride is kept with all its fixes (cleaning is ingest's job).

    Raises:
        ImportFileError: a file is not a readable gzip CSV with the expected columns.
    """
    unique = sorted({Path(p).resolve() for p in paths})
    cols: dict[str, list[str]] = {c: [] for c in COLUMNS}
    for path in unique:
        for name, values in _read_columns(path).items():
            cols[name].extend(values)
    lat, lng = _to_floats(cols["latitude"]), _to_floats(cols["longitude"])
    clock = _to_clock_seconds(cols["time"])
    valid = (
        (np.abs(lat) <= 90) & (np.abs(lng) <= 180) & ~((lat == 0) & (lng == 0)) & ~np.isnat(clock)
    )  # NaN compares False, so non-numeric values fail the range tests too
    idx = np.flatnonzero(valid)
    # A dict codes the route ids far faster than np.unique sorting 1.6M long strings.
    codes: dict[str, int] = {}
    route_ids = cols["route_id"]
    route_code = np.array(
        [codes.setdefault(route_ids[i], len(codes)) for i in idx.tolist()], dtype=np.int64
    )
    routes = list(codes)
    secs = clock[idx].astype(np.int64)
    order = np.lexsort((secs, route_code))
    idx, route_code, secs = idx[order], route_code[order], secs[order]
    bounds = np.flatnonzero(np.diff(route_code)) + 1
    rides = []
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(idx)], strict=True):
        if hi <= lo:
            continue
        rows = idx[lo:hi]
        ride = _make_ride(
            str(routes[route_code[lo]]), cols["user_id"][rows[0]], secs[lo:hi], lat[rows], lng[rows]
        )
        if ride is not None:
            rides.append(ride)
    return rides
