"""Uploaded track files are hostile input: ``heatmetro import`` (the real CLI) loses only
what is broken, refuses XML entities, and never inflates past ``--max-file-bytes``."""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from fitdecode.utils import compute_crc

from heatmetro.flows.kafka_input import to_raw_record
from heatmetro.flows.sources import JsonlSource
from tests.conftest import HEATMETRO, REPO, cli_env, heatmetro, write_config
from tests.store_rows import query
from tests.streams import NORTHAMPTON_EAST, NORTHAMPTON_WEST, activity, line, to_jsonl
from tests.test_kafka import broker, produce  # noqa: F401 - the mock broker fixture

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
    return heatmetro("import", *args, "--athlete-id", "a-1", timeout=120)


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
    assert proc.stderr.splitlines()[-1] == "imported 1 activity, skipped 0 files"
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
    refused = [x for x in proc.stderr.splitlines() if x.startswith("skipped")]
    assert len(refused) == 4, proc.stderr
    for reason in refused:
        assert "fine.gpx" not in reason
        assert "65,536 bytes" in reason
        assert "refused: uncompressed" in reason or "declares" in reason
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
    with gzip.open(bomb) as fh:  # the bomb really is what it claims (first 64 MiB)
        assert fh.read(64 * 2**20).count(b" ") > 60 * 2**20

    # (A .gz inside a zip and zip members go through the same capped stream: see above.)
    cmd = [*HEATMETRO, "import", str(bomb), "--athlete-id", "a-1"]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd],
        capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=600, check=True,
    )  # fmt: skip
    code, stdout, stderr, peak_mb = eval(out.stdout)  # noqa: S307 - our own repr()
    cap_mb = 256
    reasons = [line for line in stderr.splitlines() if line.startswith("skipped")]
    assert code == 1 and stdout == ""
    assert len(reasons) == 1, stderr
    for reason in reasons:
        assert "refused: uncompressed content is larger than 256 MiB" in reason
    assert "Traceback" not in stderr
    print(f"peak RSS of `heatmetro import` on a 2 GiB bomb: {peak_mb:.0f} MB")
    assert peak_mb < cap_mb + 150, f"peak RSS {peak_mb:.0f} MB"


# --------------------------------------------------------------------------- ingest: long records


def _long_activity(n_points: int, activity_id: str = "long") -> dict:
    return activity(activity_id, "a-long", line(NORTHAMPTON_WEST, NORTHAMPTON_EAST, 5.0)
                    * (n_points // 350 + 1))  # fmt: skip


def test_over_long_lines_are_dead_letters_and_the_rest_is_stored(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, max_record_bytes=4096)
    elm = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST, 50.0)  # ~35 points: ~1 KB of JSON
    good = [to_jsonl([activity(f"ok{i}", f"a{i}", elm, seconds_per_point=5)]) for i in range(3)]
    huge = to_jsonl([_long_activity(2000)])  # ~50 KB
    assert len(good[0]) < 4096 < len(huge)
    stream = good[0] + huge + good[1] + huge + good[2] + huge.rstrip(b"\n")  # last: no newline
    (tmp_path / "s.jsonl").write_bytes(stream)
    (tmp_path / "s.jsonl.gz").write_bytes(gzip.compress(stream))
    proc = heatmetro(
        "ingest", "-c", cfg, tmp_path / "s.jsonl", tmp_path / "s.jsonl.gz", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    dead = [json.loads(x) for x in (tmp_path / "state/dead_letters.jsonl").read_text().splitlines()]
    want = f"record of {len(huge) - 1:,} bytes is longer than max_record_bytes = 4,096; not parsed"
    for name in ("s.jsonl", "s.jsonl.gz"):
        mine = [d for d in dead if d["source"].endswith(name)]
        assert [d["position"] for d in mine] == [2, 4, 6], mine
        assert all(d["reason"] == want for d in mine)
        assert mine[0]["raw"].startswith('{"kind":"activity","activity_id":"long"')
    stored = [r[0] for r in query(tmp_path / "state", "SELECT activity_id FROM activities")]
    assert stored == ["ok0", "ok1", "ok2"]


def _next_batches(part: Any, rounds: int = 20) -> list[Any]:
    out: list[Any] = []
    for _ in range(rounds):
        try:
            out += part.next_batch()
        except StopIteration:
            break
    return out


def test_an_over_long_line_is_never_held_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as fh:  # a 48 MiB line between two short ones
        fh.write(b'{"a": 1}\n["' + b"x" * (48 * 2**20) + b'"]\n{"b": 2}\n')
    source = JsonlSource([str(path)], max_record_bytes=2**20)
    part = source.build_part("read", "files", None)
    tracemalloc.start()
    try:
        records = _next_batches(part)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        part.close()
    assert [(r.position, r.error is None) for r in records] == [(1, True), (2, False), (3, True)]
    assert records[1].error.startswith(f"record of {48 * 2**20 + 4:,} bytes")
    assert len(records[1].data) <= 4096
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB while skipping a 48 MiB line"


def test_a_half_written_long_line_resumes_at_its_start(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    first_line = b'{"a": "' + b"x" * 5000 + b'"}\n'  # > 4 KiB: the file's head hash is final
    path.write_bytes(first_line + b"y" * 7000)  # a writer is mid-way through line 2
    source = JsonlSource([str(path)], follow=True, max_record_bytes=6000)
    part = source.build_part("read", "files", None)
    first = _next_batches(part, 3)
    assert [r.position for r in first] == [1]
    mid_line = part.snapshot()
    assert mid_line[str(path)].offset == len(first_line)  # line 2 not read yet: resume there
    with path.open("ab") as fh:
        fh.write(b"y" * 7000 + b'\n{"b": 2}\n')
    rest = _next_batches(part, 3)
    part.close()
    assert [(r.position, r.error is not None) for r in rest] == [(2, True), (3, False)]
    assert rest[0].error is not None and rest[0].error.startswith("record of 14,000 bytes")
    assert part.snapshot()[str(path)].offset == path.stat().st_size
    # A rerun from the snapshot taken mid-line sees the same records.
    again = source.build_part("read", "files", mid_line)
    assert [(r.position, r.error is not None) for r in _next_batches(again, 3)] == [
        (2, True), (3, False)
    ]  # fmt: skip
    again.close()


def test_an_over_long_kafka_message_becomes_a_dead_letter_record() -> None:
    def message(value: bytes) -> KafkaSourceMessage:
        return KafkaSourceMessage(None, value, "t", [], None, 41, 0, None)

    big = to_raw_record(message(b"z" * 5000), max_bytes=4096)
    assert big.source == "kafka:t:0" and big.position == 41
    assert big.error == "record of 5,000 bytes is longer than max_record_bytes = 4,096; not parsed"
    assert big.data == b"z" * 4096
    fine = to_raw_record(message(b"z" * 4096), max_bytes=4096)
    assert fine.error is None and fine.data == b"z" * 4096


def test_an_over_long_kafka_message_is_a_dead_letter_through_the_cli(
    broker: str,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    elm = line(NORTHAMPTON_WEST, NORTHAMPTON_EAST, 50.0)
    values = [
        orjson.dumps(activity("k0", "a0", elm, seconds_per_point=5)),
        orjson.dumps(_long_activity(2000)),  # ~50 KB: under the broker's 1 MB, over ours
        orjson.dumps(activity("k1", "a1", elm, seconds_per_point=5)),
    ]
    produce(broker, "long", values)
    cfg = write_config(tmp_path, max_record_bytes=4096)
    proc = heatmetro("ingest", "-c", cfg, f"kafka://{broker}/long", timeout=120)
    assert proc.returncode == 0, proc.stderr
    dead = query(tmp_path / "state", "SELECT source, position, reason FROM dead_letters")
    stored = [r[0] for r in query(tmp_path / "state", "SELECT activity_id FROM activities")]
    want = f"record of {len(values[1]):,} bytes is longer than max_record_bytes = 4,096; not parsed"
    assert dead == [("kafka:long:0", 1, want)]
    assert stored == ["k0", "k1"]


def test_a_folder_without_tracks_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """An empty folder (or one of other files) said "imported 0 activities, skipped 0
    files" and exit 0, the same as success to a script (an operator's review)."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a track")
    proc = run_import(folder)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"heatmetro import: error: no GPX, FIT or TCX file (or export zip) found in {folder}"
    ]
