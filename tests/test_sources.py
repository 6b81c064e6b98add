"""Reading input files: nothing after a run of blank lines is lost, and a small followed
file that grows is resumed, not read again from its start."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from heatmetro.core.config import DEFAULT_MAX_RECORD_BYTES
from heatmetro.flows.sources import BATCH_BYTES, StreamMessage, _FilesPartition
from tests.streams import NORTHAMPTON_EAST, NORTHAMPTON_WEST, activity, line, to_jsonl

Run = Callable[..., subprocess.CompletedProcess[str]]


def read_all(part: _FilesPartition, rounds: int = 100) -> list[StreamMessage]:
    """Batches until the partition ends, or until it only waits (following)."""
    out: list[StreamMessage] = []
    for _ in range(rounds):
        try:
            batch = part.next_batch()
        except StopIteration:
            break
        out.extend(batch)
        if not batch and part.next_awake() is not None:
            break  # following: nothing new for now
    return out


def test_activity_after_megabytes_of_blank_lines_is_ingested(project: Path, run_cli: Run) -> None:
    # Blank lines are skipped, but they fill batches: two whole batches' worth of them
    # used to read as the end of the file, and the activity after them was never read.
    blank = b" " * (BATCH_BYTES // 2) + b"\n"
    ride = activity("r-1", "a-1", line(NORTHAMPTON_WEST, NORTHAMPTON_EAST))
    (project / "in.jsonl").write_bytes(blank * 5 + to_jsonl([ride]))
    run_cli("ingest", "-c", project / "config.toml", project / "in.jsonl")
    stats = json.loads(run_cli("stats", "-c", project / "config.toml", "--json").stdout)
    assert stats["activities"] == 1 and stats["dead_letters"] == 0, stats


def test_followed_small_file_resumes_where_it_was_when_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n')  # far shorter than the 4 KiB head hash
    part = _FilesPartition([str(path)], {}, follow=True, max_bytes=DEFAULT_MAX_RECORD_BYTES)
    assert [(m.position, m.data) for m in read_all(part)] == [(1, b'{"n": 1}'), (2, b'{"n": 2}')]

    with path.open("ab") as fh:
        fh.write(b'{"n": 3}\n')
    assert [(m.position, m.data) for m in read_all(part)] == [(3, b'{"n": 3}')]

    # ...also after a restart from the snapshot, once the file has grown again.
    with path.open("ab") as fh:
        fh.write(b'{"n": 4}\n')
    again = _FilesPartition(
        [str(path)], part.snapshot(), follow=True, max_bytes=DEFAULT_MAX_RECORD_BYTES
    )
    assert [(m.position, m.data) for m in read_all(again)] == [(4, b'{"n": 4}')]


def test_a_replaced_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    path.write_bytes(b'{"n": 1}\n')
    part = _FilesPartition([str(path)], {}, follow=False, max_bytes=DEFAULT_MAX_RECORD_BYTES)
    assert len(read_all(part)) == 1
    path.write_bytes(b'{"m": 1}\n{"m": 2}\n')  # another file under the same name
    again = _FilesPartition(
        [str(path)], part.snapshot(), follow=False, max_bytes=DEFAULT_MAX_RECORD_BYTES
    )
    assert [m.position for m in read_all(again)] == [1, 2]


def test_a_file_ingested_while_a_line_is_half_written_loses_nothing(
    project: Path, run_cli: Run
) -> None:
    """A run that ends while the writer is mid-line leaves that line for the next run: it
    was two dead letters (the halves), and the record was lost (an outside review)."""
    rides = [activity(f"r-{i}", "a-1", line(NORTHAMPTON_WEST, NORTHAMPTON_EAST)) for i in range(3)]
    whole = to_jsonl(rides)
    cut = whole.index(b"\n", whole.index(b"\n") + 1) + 1 + 700  # inside the third line
    path, cfg = project / "growing.jsonl", project / "config.toml"
    path.write_bytes(whole[:cut])
    first = run_cli("ingest", "-c", cfg, path)
    assert "line 3 has no newline" in first.stderr, first.stderr
    with path.open("ab") as fh:
        fh.write(whole[cut:])
    run_cli("ingest", "-c", cfg, path)
    stats = json.loads(run_cli("stats", "-c", cfg, "--json").stdout)
    assert stats["activities"] == 3 and stats["dead_letters"] == 0, stats
    # A last line that is whole JSON without its newline is a record, as ever.
    path.write_bytes(
        whole
        + to_jsonl([activity("r-9", "a-1", line(NORTHAMPTON_WEST, NORTHAMPTON_EAST))]).rstrip(b"\n")
    )
    run_cli("ingest", "-c", cfg, path)
    stats = json.loads(run_cli("stats", "-c", cfg, "--json").stdout)
    assert stats["activities"] == 4 and stats["dead_letters"] == 0, stats


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_last_line_whose_newline_comes_later_keeps_the_line_numbers(
    tmp_path: Path, newline: bytes
) -> None:
    """A whole-JSON last line without its newline is read as a record; when the writer
    then adds the newline and more lines, the next run must not count that newline as a
    line of its own: every later record's position (and dead letter) would be one off
    (an outside review)."""
    path = tmp_path / "live.jsonl"
    path.write_bytes(b'{"n": 1}' + newline + b'{"n": 2}')
    part = _FilesPartition([str(path)], {}, follow=False, max_bytes=DEFAULT_MAX_RECORD_BYTES)
    assert [m.position for m in read_all(part)] == [1, 2]
    with path.open("ab") as fh:
        fh.write(newline + b'{"n": 3}' + newline + b'{"n": 4}' + newline)
    again = _FilesPartition(
        [str(path)], part.snapshot(), follow=False, max_bytes=DEFAULT_MAX_RECORD_BYTES
    )
    assert [(m.position, m.data) for m in read_all(again)] == [(3, b'{"n": 3}'), (4, b'{"n": 4}')]


def test_a_held_line_keeps_the_files_after_it_for_the_next_run(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The files of one run are one stream in the order given: a last line held back
    (a writer mid-line) must not be read after the later files' records, so those wait
    with it (an outside review: an athlete's settings written last in one file applied
    after the next file's activities)."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b'{"n": 1}\n{"n": ')
    second.write_bytes(b'{"m": 1}\n')
    paths = [str(first), str(second)]
    part = _FilesPartition(paths, {}, follow=False, max_bytes=DEFAULT_MAX_RECORD_BYTES)
    assert [(m.source, m.position) for m in read_all(part)] == [(str(first), 1)]
    assert "the later files (b.jsonl) wait for it too" in capsys.readouterr().err
    with first.open("ab") as fh:
        fh.write(b"2}\n")
    again = _FilesPartition(
        paths, part.snapshot(), follow=False, max_bytes=DEFAULT_MAX_RECORD_BYTES
    )
    got = [(Path(m.source).name, m.position) for m in read_all(again)]
    assert got == [("a.jsonl", 2), ("b.jsonl", 1)]
