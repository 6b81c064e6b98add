"""Replayable inputs: JSONL files (plain or gzip), folders of them, and stdin.

All files form one Bytewax partition, read in order, whose resume state is how far each
file was read, so a rerun after a crash (or after new lines were appended) continues
where the last snapshot left off. Items are ``RawRecord`` (source, 1-based line number,
bytes).
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from heatmetro.core.errors import InputError

BATCH_LINES = 1024  # big enough to vectorise trimming well, small enough to stay responsive
# ... and a batch ends after this many bytes, so long activities (up to the contract's
# 200,000 fixes each) do not make a batch of 1,024 of them (GBs once decoded).
BATCH_BYTES = 4 * 2**20
FOLLOW_POLL = timedelta(milliseconds=500)
STDIN = "-"


@dataclass(frozen=True, slots=True)
class RawRecord:
    source: str
    position: int  # line number, 1-based
    data: bytes


@dataclass(frozen=True, slots=True)
class FilePosition:
    lines: int  # lines fully read
    offset: int  # bytes read (of the decompressed stream for gzip)
    head: str  # hash of the first bytes, to notice a file replaced by another one


def expand_inputs(specs: Iterable[str]) -> list[str]:
    """Files named or found (recursively, sorted) in folders; ``-`` stays stdin."""
    out: list[str] = []
    for spec in specs:
        if spec == STDIN:
            out.append(STDIN)
            continue
        p = Path(spec)
        if p.is_dir():
            found = sorted(
                str(f.resolve())
                for f in p.rglob("*")
                if f.is_file() and (f.name.endswith(".jsonl") or f.name.endswith(".jsonl.gz"))
            )
            if not found:
                msg = f"input folder {spec} holds no .jsonl or .jsonl.gz files"
                raise InputError(msg)
            out.extend(found)
        elif p.is_file():
            out.append(str(p.resolve()))
        else:
            msg = f"input {spec} does not exist"
            raise InputError(msg)
    return list(dict.fromkeys(out))  # same file named twice is read once


def _head_hash(path: str) -> str:
    with _open(path) as fh:
        return hashlib.sha256(fh.read(4096)).hexdigest()[:16]


def _open(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 - closed by the partition


class _Reader:
    """Reads one file (or stdin) line by line from a position."""

    def __init__(self, source: str, fh: IO[bytes], pos: FilePosition, head: str) -> None:
        self.source, self.fh, self.head = source, fh, head
        self.lines, self.offset = pos.lines, pos.offset
        self._partial = b""

    @classmethod
    def open(cls, path: str, resume: FilePosition | None) -> _Reader:
        head = _head_hash(path)
        fh = _open(path)
        pos = FilePosition(0, 0, head)
        if resume is not None and resume.head == head:  # same file as before: continue
            pos = resume
            if path.endswith(".gz"):
                _skip(fh, resume.offset)
            else:
                fh.seek(resume.offset)
        return cls(path, fh, pos, head)

    def read(self, n: int, *, follow: bool) -> list[RawRecord]:
        out: list[RawRecord] = []
        size = 0
        for _ in range(n):
            if size >= BATCH_BYTES:
                break
            line = self.fh.readline()
            if not line:
                break
            if not line.endswith(b"\n") and follow:
                self._partial += line  # a writer is mid-line: wait for the rest
                break
            line, self._partial = self._partial + line, b""
            self.offset += len(line)
            size += len(line)
            self.lines += 1
            data = line.strip()
            if data:
                out.append(RawRecord(self.source, self.lines, data))
        return out

    def position(self) -> FilePosition:
        return FilePosition(self.lines, self.offset, self.head)

    def close(self) -> None:
        if self.fh is not sys.stdin.buffer:
            self.fh.close()


FilePositions = dict[str, FilePosition]


class _FilesPartition(StatefulSourcePartition[RawRecord, FilePositions]):
    """All input files as ONE partition, read one after the other in the given order.

    One partition keeps the stream's order across files, so ingesting a stream split
    into files gives what the whole stream gives (per-athlete order matters: settings
    apply to the activities that follow them). The resume state remembers a position
    for every file ever read, so a rerun with other files still resumes correctly.
    With ``--follow`` files never end, so they are read in turn instead.
    """

    def __init__(self, paths: list[str], positions: FilePositions, follow: bool) -> None:
        self.paths, self.positions, self.follow = paths, dict(positions), follow
        self.index = 0
        self.reader: _Reader | None = None
        self._awake: datetime | None = None

    def next_batch(self) -> list[RawRecord]:
        self._awake = None
        for _ in range(len(self.paths) + 1):  # at most one full round of the files
            if self.index >= len(self.paths):
                if not self.follow:
                    raise StopIteration
                self.index = 0
            if self.reader is None:
                path = self.paths[self.index]
                self.reader = _Reader.open(path, self.positions.get(path))
            out = self.reader.read(BATCH_LINES, follow=self.follow)
            self.positions[self.reader.source] = self.reader.position()
            if out:
                return out
            self.reader.close()  # at its end (for now): on to the next file
            self.reader = None
            self.index += 1
        self._awake = datetime.now(UTC) + FOLLOW_POLL  # following: nothing new anywhere
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> FilePositions:
        return dict(self.positions)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


class _StdinPartition(StatefulSourcePartition[RawRecord, None]):
    """Standard input; it cannot be rewound, so a rerun reads new data from its start."""

    def __init__(self, follow: bool) -> None:
        # Each run's stdin is new data: name it by the run's start so its dead letters do
        # not collide with an earlier run's line numbers.
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.reader = _Reader(f"stdin@{started}", sys.stdin.buffer, FilePosition(0, 0, ""), "")
        self.follow = follow
        self._awake: datetime | None = None

    def next_batch(self) -> list[RawRecord]:
        self._awake = None
        out = self.reader.read(BATCH_LINES, follow=self.follow)
        if not out:
            if not self.follow:
                raise StopIteration
            self._awake = datetime.now(UTC) + FOLLOW_POLL
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None


class _Finished(StatefulSourcePartition[RawRecord, Any]):
    """A partition this run does not read: keeps its recovered state as it was."""

    def __init__(self, resume_state: Any) -> None:
        self.state = resume_state

    def next_batch(self) -> list[RawRecord]:
        raise StopIteration

    def snapshot(self) -> Any:
        return self.state


FILES = "files"


class JsonlSource(FixedPartitionedSource[RawRecord, Any]):
    """Two fixed partitions: every input file in order (``files``) and stdin (``-``).

    The partition names never change, so recovery works whatever inputs a run names.
    Only the process that owns the terminal lists stdin (``with_stdin``).
    """

    def __init__(self, inputs: list[str], *, follow: bool = False, with_stdin: bool = True) -> None:
        self.files = [i for i in inputs if i != STDIN]
        self.stdin = STDIN in inputs
        self.follow = follow
        self.with_stdin = with_stdin

    def list_parts(self) -> list[str]:
        return [FILES, STDIN] if self.with_stdin else [FILES]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any
    ) -> StatefulSourcePartition[RawRecord, Any]:
        if for_part == STDIN:
            return _StdinPartition(self.follow) if self.stdin else _Finished(resume_state)
        if not self.files:
            return _Finished(resume_state)
        return _FilesPartition(self.files, resume_state or {}, self.follow)


def _skip(fh: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = fh.read(min(n, 1 << 20))
        if not chunk:
            return
        n -= len(chunk)
