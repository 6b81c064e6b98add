"""Uploaded track files are hostile input: ``heatmetro import`` (the real CLI) loses only
what is broken, refuses XML entities, and never inflates past ``--max-file-bytes``."""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from fitdecode.utils import compute_crc

from tests.conftest import HEATMETRO, REPO, cli_env

GPX_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">'
    "<trk><type>running</type><trkseg>\n"
)
GPX_TAIL = "</trkseg></trk></gpx>\n"


def trkpt(i: int, lat: str | None = None, lon: str | None = None, time: str | None = None) -> str:
    lat = f"{42.3 + i * 1e-4:.6f}" if lat is None else lat
    lon = f"{-72.6:.6f}" if lon is None else lon
    time = f"2021-06-02T11:00:{i:02d}Z" if time is None else time
    attrs = "".join(f' {k}="{v}"' for k, v in (("lat", lat), ("lon", lon)) if v != "-")
    return f"<trkpt{attrs}><time>{time}</time></trkpt>\n"


def gpx(points: list[str]) -> bytes:
    return (GPX_HEAD + "".join(points) + GPX_TAIL).encode()


def run_import(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEATMETRO, "import", *map(str, args), "--athlete-id", "a-1"],
        capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=120,
    )  # fmt: skip


def events(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


# --------------------------------------------------------------------------- lose only what is broken


def test_unreadable_gpx_points_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "walk.gpx"
    path.write_bytes(
        gpx(
            [
                trkpt(0),
                trkpt(1, lat="-"),
                trkpt(2),
                trkpt(3, lon="east"),
                trkpt(4, time="yesterday"),
                trkpt(5),
                trkpt(6, lat="91"),
            ]
        )  # fmt: skip
    )
    proc = run_import(path)
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: skipped 4 unreadable point(s)" in proc.stderr.splitlines()
    (event,) = events(proc)
    assert event["streams"]["time"] == [0, 2, 5]
    assert [p[0] for p in event["streams"]["latlng"]] == [42.3, 42.3002, 42.3005]
    assert event["sport_type"] == "Run"


def test_a_file_with_nothing_readable_is_refused_with_the_count(tmp_path: Path) -> None:
    path = tmp_path / "broken.gpx"
    path.write_bytes(gpx([trkpt(i, lat="-") for i in range(3)]))
    proc = run_import(path)
    assert proc.returncode == 1
    assert f"skipped {path}: no readable point (3 unreadable)" in proc.stderr


def test_unreadable_tcx_point_is_skipped(tmp_path: Path) -> None:
    def point(i: int, lat: str) -> str:
        return (
            f"<Trackpoint><Time>2021-06-02T11:00:{i:02d}Z</Time><Position>"
            f"<LatitudeDegrees>{lat}</LatitudeDegrees><LongitudeDegrees>-72.6</LongitudeDegrees>"
            "</Position></Trackpoint>"
        )

    hr_only = "<Trackpoint><Time>2021-06-02T11:00:09Z</Time><HeartRateBpm/></Trackpoint>"
    body = "".join(point(i, "4x.3" if i == 1 else f"{42.3 + i * 1e-4:.4f}") for i in range(4))
    path = tmp_path / "ride.tcx"
    path.write_text(
        '<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2">'
        f'<Activities><Activity Sport="Biking"><Lap><Track>{body}{hr_only}</Track></Lap>'
        "</Activity></Activities></TrainingCenterDatabase>"
    )
    proc = run_import(path)
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: skipped 1 unreadable point(s)" in proc.stderr  # not the HR sample
    assert events(proc)[0]["streams"]["time"] == [0, 2, 3]


def fit_file(records: list[tuple[int, int, int]]) -> bytes:
    """A minimal FIT file of ``record`` messages (timestamp, lat, lng in semicircles)."""
    body = bytearray([0x40, 0, 0]) + struct.pack("<HB", 20, 3)  # definition: record, 3 fields
    body += bytes([253, 4, 0x86, 0, 4, 0x85, 1, 4, 0x85])  # timestamp, position_lat/long
    for ts, lat, lng in records:
        body += b"\x00" + struct.pack("<Iii", ts, lat, lng)
    header = struct.pack("<BBHI4s", 14, 0x10, 2132, len(body), b".FIT")
    data = header + struct.pack("<H", compute_crc(header)) + body
    return data + struct.pack("<H", compute_crc(data))


def test_unreadable_fit_record_is_skipped(tmp_path: Path) -> None:
    deg = 2**31 / 180
    records = [
        (1_000_000_000 + i, int(42.3 * deg), int((-72.6 + i * 1e-4) * deg)) for i in range(5)
    ]
    records[2] = (records[2][0], 0x7FFFFFFF, records[2][2])  # FIT's "invalid" latitude
    path = tmp_path / "ride.fit"
    path.write_bytes(fit_file(records))
    proc = run_import(path)
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: skipped 1 unreadable point(s)" in proc.stderr
    assert events(proc)[0]["streams"]["time"] == [0, 1, 3, 4]


# --------------------------------------------------------------------------- XML entities


@pytest.mark.parametrize("suffix", [".gpx", ".tcx"])
def test_xml_entity_expansion_is_refused(tmp_path: Path, suffix: str) -> None:
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    path = tmp_path / f"laughs{suffix}"
    path.write_text(
        f'<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY l0 "ha">{laughs}]>'
        + GPX_HEAD.split("\n", 1)[1] + "<name>&l9;</name>" + trkpt(0) + trkpt(1) + GPX_TAIL
    )  # fmt: skip
    proc = run_import(path)
    assert proc.returncode == 1
    assert "XML entity declarations are not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- size cap


def padded_gpx(pad: int) -> bytes:
    """A valid GPX with ``pad`` bytes of whitespace between two points."""
    return GPX_HEAD.encode() + trkpt(0).encode() + b" " * pad + (trkpt(1) + GPX_TAIL).encode()


def stored_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_every_way_in_is_capped(tmp_path: Path) -> None:
    cap = 64 * 1024
    big, small = padded_gpx(cap), padded_gpx(cap // 2)
    files = {
        "plain.gpx": big,
        "alone.gpx.gz": gzip.compress(big),
        "member.zip": stored_zip({"activities/member.gpx": big}),
        "gz-in.zip": stored_zip({"activities/gz.gpx.gz": gzip.compress(big)}),
        "fine.gpx.gz": gzip.compress(small),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    proc = run_import(*sorted(tmp_path.iterdir()), "--max-file-bytes", "64K")
    refused = [line for line in proc.stderr.splitlines() if line.startswith("skipped")]
    assert len(refused) == 4, proc.stderr
    for line in refused:
        assert "fine.gpx" not in line
        assert "65,536 bytes" in line and ("refused: uncompressed" in line or "declares" in line)
    assert len(events(proc)) == 1


# --------------------------------------------------------------------------- the bomb

MEASURE = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(repr((proc.returncode, proc.stdout, proc.stderr, peak_mb)))
"""


def gzip_bomb(path: Path, inflated: int, prefix: bytes) -> None:
    """``prefix`` then whitespace up to ``inflated`` bytes, gzipped (~1/1000 the size).

    After a full flush deflate forgets its history, so every 1 MiB block of spaces
    compresses to the same bytes: compress one, write it many times (seconds, not
    minutes, for gigabytes), and close with a valid CRC and length.
    """
    block = b" " * 2**20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    packed = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    n = (inflated - len(prefix)) // len(block)
    crc = zlib.crc32(prefix)
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head)
        for _ in range(n):
            out.write(packed)
            crc = zlib.crc32(block, crc)
        out.write(comp.flush(zlib.Z_FINISH))
        out.write(struct.pack("<II", crc, (len(prefix) + n * len(block)) & 0xFFFFFFFF))


def test_a_gzip_bomb_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    inflated = 2 * 2**30  # 2 GiB of valid-looking GPX
    bomb = tmp_path / "bomb.gpx.gz"
    gzip_bomb(bomb, inflated, GPX_HEAD.encode() + trkpt(0).encode())
    assert bomb.stat().st_size < 4 * 2**20
    # The same bomb inside an export zip: read as a stream from the zip, then gunzipped.
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(bomb, "activities/bomb.gpx.gz")
    with gzip.open(bomb) as fh:  # the bomb really is what it claims (first 64 MiB)
        assert fh.read(64 * 2**20).count(b" ") > 60 * 2**20

    cmd = [*HEATMETRO, "import", str(bomb), str(export), "--athlete-id", "a-1"]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd],
        capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=600, check=True,
    )  # fmt: skip
    code, stdout, stderr, peak_mb = eval(out.stdout)  # noqa: S307 - our own repr()
    cap_mb = 256
    reasons = [line for line in stderr.splitlines() if line.startswith("skipped")]
    assert code == 1 and stdout == ""
    assert len(reasons) == 2, stderr
    for line in reasons:
        assert "refused: uncompressed content is larger than 256 MiB" in line
    assert "Traceback" not in stderr
    print(f"peak RSS of `heatmetro import` on two 2 GiB bombs: {peak_mb:.0f} MB")
    assert peak_mb < cap_mb + 150, f"peak RSS {peak_mb:.0f} MB"
