"""Replayable inputs: JSONL files (plain or gzip), folders of them, and stdin.

All files form one Bytewax partition, read in order, whose resume state is how far each
file was read, so a rerun after a crash (or after new lines were appended) continues
where the last snapshot left off. Items are ``StreamMessage`` (source, 1-based line number,
bytes).

A line longer than ``max_record_bytes`` is never held whole: it is read in bounded
chunks up to its newline and becomes a record carrying only its first bytes and an
``error``, which the ingest turns into a dead letter.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from heatmetro.core.cluster_join import formed
from heatmetro.core.config import DEFAULT_MAX_RECORD_BYTES
from heatmetro.core.errors import InputError
from heatmetro.flows.fatal import end_run_on_environment_error

BATCH_LINES = 1024  # big enough to vectorise trimming well, small enough to stay responsive
# ... and a batch ends after this many bytes, so long activities (up to the contract's
# 200,000 fixes each) do not make a batch of 1,024 of them (GBs once decoded).
BATCH_BYTES = 4 * 2**20
SKIP_CHUNK = 1 << 20  # an over-long line is skipped this much at a time
HEAD_BYTES = 4096  # of an over-long line, kept for its dead letter
FOLLOW_POLL = timedelta(milliseconds=500)
STDIN = "-"


@dataclass(frozen=True, slots=True)
class StreamMessage:
    source: str
    position: int  # line number, 1-based (a Kafka offset for Kafka)
    data: bytes  # the message, or only its head when ``error`` is set
    error: str | None = None  # refused by the source (too long): a dead letter


def too_long(n: int, limit: int) -> str:
    return f"record of {n:,} bytes is longer than max_record_bytes = {limit:,}; not parsed"


@dataclass(frozen=True, slots=True)
class FilePosition:
    lines: int  # lines fully read
    offset: int  # bytes read (of the decompressed stream for gzip)
    head: str  # "hash/n" of the first n bytes, to notice a file replaced by another one


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


def _unfinished(line: bytes) -> bool:
    """Whether a last line without a newline is not (yet) one JSON value."""
    data = line.strip()
    if not data:
        return False
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return True
    return False


def _head_hash(path: str, n: int = HEAD_BYTES) -> str:
    """``"hash/k"`` of the file's first ``k = min(n, size)`` bytes.

    The length is part of the identity: a followed file shorter than ``HEAD_BYTES`` that
    grows is still the same file when its first ``k`` bytes are, so reading resumes
    instead of starting over.
    """
    with _open(path) as fh:
        head = fh.read(n)
    return f"{hashlib.sha256(head).hexdigest()[:16]}/{len(head)}"


def _same_file(path: str, head: str) -> bool:
    """Whether ``path`` still starts with the bytes ``head`` was computed from."""
    digest, _, n = head.partition("/")
    if not n:  # written before the length was recorded: the first HEAD_BYTES bytes
        with _open(path) as fh:
            return hashlib.sha256(fh.read(HEAD_BYTES)).hexdigest()[:16] == digest
    return _head_hash(path, int(n)) == head


def _late_newline(fh: IO[bytes], offset: int) -> int:
    """The bytes of a newline (``\\n`` or ``\\r\\n``) at ``offset`` that end the line
    before it, when that line was read whole without one (a last line, JSON already):
    they belong to that line, not to a new, empty one that would shift every later
    line's number by one."""
    if offset == 0:
        return 0
    fh.seek(offset - 1)
    around = fh.read(3)
    if around[:1] in (b"\n", b""):  # the line before ended with its newline
        return 0
    if around[1:2] == b"\n":
        return 1
    return 2 if around[1:3] == b"\r\n" else 0


def _open(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 - closed by the partition


class _Reader:
    """Reads one file (or stdin) line by line from a position, never a line past the limit.

    ``offset`` and ``lines`` count complete lines only, so a snapshot taken while a line is
    half-written (``--follow``) or half-skipped resumes at that line's start.
    """

    def __init__(
        self,
        source: str,
        fh: IO[bytes],
        pos: FilePosition,
        head: str,
        max_bytes: int,
        *,
        hold_partial: bool = False,
    ) -> None:
        self.source, self.fh, self.head = source, fh, head
        # A file's last line without a newline that is not JSON yet is a writer mid-line
        # (a file ingested while it grows): left for the next run, never a dead letter.
        self.hold_partial = hold_partial
        self.lines, self.offset = pos.lines, pos.offset
        self.max_bytes = max_bytes
        self._partial = b""
        self._long_head = b""
        self._long_size = 0  # > 0 while skipping the rest of an over-long line
        # The last read stopped at the end of the data (for now, when following), not
        # at a batch limit: a batch of blank lines only is empty but not the end.
        self.at_end = False
        self.held = False  # a last line was left for the next run (a writer mid-line)

    @classmethod
    def open(cls, path: str, resume: FilePosition | None, max_bytes: int) -> _Reader:
        head = _head_hash(path)
        fh = _open(path)
        pos = FilePosition(0, 0, head)
        if resume is not None and _same_file(path, resume.head):  # same file: continue
            pos = FilePosition(resume.lines, resume.offset, head)
            if path.endswith(".gz"):
                _skip(fh, resume.offset)
            else:
                late = _late_newline(fh, resume.offset)
                pos = FilePosition(resume.lines, resume.offset + late, head)
                fh.seek(pos.offset)
        return cls(path, fh, pos, head, max_bytes, hold_partial=not path.endswith(".gz"))

    def read(self, n: int, *, follow: bool) -> list[StreamMessage]:
        out: list[StreamMessage] = []
        size = 0
        self.at_end = False
        while len(out) < n and size < BATCH_BYTES:
            if self._long_size:
                chunk = self.fh.readline(SKIP_CHUNK)
                if not chunk and follow:
                    self.at_end = True
                    break  # a writer is mid-line: wait for its end
                self._long_size += len(chunk)
                if chunk and not chunk.endswith(b"\n"):
                    continue
                out.append(self._finish_long(newline=bool(chunk)))
                continue
            line = self.fh.readline(self.max_bytes + 1 - len(self._partial))
            if not line:
                self.at_end = True
                break
            if not line.endswith(b"\n"):
                if len(self._partial) + len(line) > self.max_bytes:  # too long: skip the rest
                    self._long_head = (self._partial + line)[:HEAD_BYTES]
                    self._long_size, self._partial = len(self._partial) + len(line), b""
                    continue
                if follow:
                    self._partial += line  # a writer is mid-line: wait for the rest
                    self.at_end = True
                    break
                if self.hold_partial and _unfinished(self._partial + line):
                    print(
                        f"warning: {self.source}: line {self.lines + 1} has no newline and "
                        "is not whole JSON yet (a writer mid-line?): left for the next run",
                        file=sys.stderr,
                    )
                    self.at_end = self.held = True
                    break
            line, self._partial = self._partial + line, b""
            self.offset += len(line)
            size += len(line)
            self.lines += 1
            data = line.strip()
            if data:
                out.append(StreamMessage(self.source, self.lines, data))
        return out

    def _finish_long(self, *, newline: bool) -> StreamMessage:
        self.offset += self._long_size
        self.lines += 1
        length = self._long_size - newline  # the record's own bytes
        rec = StreamMessage(
            self.source, self.lines, self._long_head, too_long(length, self.max_bytes)
        )
        self._long_head, self._long_size = b"", 0
        return rec

    def position(self) -> FilePosition:
        return FilePosition(self.lines, self.offset, self.head)

    def close(self) -> None:
        if self.fh is not sys.stdin.buffer:
            self.fh.close()


FilePositions = dict[str, FilePosition]


class _FilesPartition(StatefulSourcePartition[StreamMessage, FilePositions]):
    """All input files as ONE partition, read one after the other in the given order.

    One partition keeps the stream's order across files, so ingesting a stream split
    into files gives what the whole stream gives (per-athlete order matters: settings
    apply to the activities that follow them). The resume state remembers a position
    for every file ever read, so a rerun with other files still resumes correctly.
    With ``--follow`` files never end, so they are read in turn instead.
    """

    def __init__(
        self, paths: list[str], positions: FilePositions, follow: bool, max_bytes: int
    ) -> None:
        self.paths, self.positions, self.follow = paths, dict(positions), follow
        self.max_bytes = max_bytes
        self.index = 0
        self.reader: _Reader | None = None
        self._awake: datetime | None = None

    def next_batch(self) -> list[StreamMessage]:
        self._awake = None
        for _ in range(len(self.paths) + 1):  # at most one full round of the files
            if self.index >= len(self.paths):
                if not self.follow:
                    raise StopIteration
                self.index = 0
            path = self.paths[self.index]
            # A file that vanished or a broken .gz ends the run in one line naming it.
            with end_run_on_environment_error(), _naming(path):
                if self.reader is None:
                    self.reader = _Reader.open(path, self.positions.get(path), self.max_bytes)
                out = self.reader.read(BATCH_LINES, follow=self.follow)
            self.positions[self.reader.source] = self.reader.position()
            if out or not self.reader.at_end:
                return out
            held = self.reader.held
            self.reader.close()  # at its end (for now): on to the next file
            self.reader = None
            self.index += 1
            if held and self.index < len(self.paths):
                # One stream in the order given: what follows the held line waits for it.
                later = ", ".join(Path(p).name for p in self.paths[self.index :])
                print(
                    f"warning: {path}: the later files ({later}) wait for it too, so that "
                    "the stream keeps its order: run ingest again once it is written",
                    file=sys.stderr,
                )
                raise StopIteration
        self._awake = datetime.now(UTC) + FOLLOW_POLL  # following: nothing new anywhere
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> FilePositions:
        return dict(self.positions)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


class _StdinPartition(StatefulSourcePartition[StreamMessage, None]):
    """Standard input; it cannot be rewound, so a rerun reads new data from its start."""

    def __init__(self, follow: bool, max_bytes: int) -> None:
        # Each run's stdin is new data: name it by the run's start so its dead letters do
        # not collide with an earlier run's line numbers.
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.reader = _Reader(
            f"stdin@{started}", sys.stdin.buffer, FilePosition(0, 0, ""), "", max_bytes
        )
        self.follow = follow
        self._awake: datetime | None = None

    def next_batch(self) -> list[StreamMessage]:
        self._awake = None
        out = self.reader.read(BATCH_LINES, follow=self.follow)
        if not out and self.reader.at_end:
            if not self.follow:
                raise StopIteration
            self._awake = datetime.now(UTC) + FOLLOW_POLL
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None


class _Finished(StatefulSourcePartition[StreamMessage, Any]):
    """A partition this run does not read: keeps its recovered state as it was."""

    def __init__(self, resume_state: Any) -> None:
        self.state = resume_state

    def next_batch(self) -> list[StreamMessage]:
        raise StopIteration

    def snapshot(self) -> Any:
        return self.state


FILES = "files"


class JsonlSource(FixedPartitionedSource[StreamMessage, Any]):
    """Two fixed partitions: every input file in order (``files``) and stdin (``-``).

    The partition names never change, so recovery works whatever inputs a run names.
    Only the process that owns the terminal lists stdin (``with_stdin``).
    """

    def __init__(
        self,
        inputs: list[str],
        *,
        follow: bool = False,
        with_stdin: bool = True,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.max_record_bytes = max_record_bytes
        self.files = [i for i in inputs if i != STDIN]
        self.stdin = STDIN in inputs
        self.follow = follow
        self.with_stdin = with_stdin

    def list_parts(self) -> list[str]:
        formed()  # every worker lists them, once connected (heatmetro.core.cluster_join)
        return [FILES, STDIN] if self.with_stdin else [FILES]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any
    ) -> StatefulSourcePartition[StreamMessage, Any]:
        if for_part == STDIN:
            if not self.stdin:
                return _Finished(resume_state)
            return _StdinPartition(self.follow, self.max_record_bytes)
        if not self.files:
            return _Finished(resume_state)
        return _FilesPartition(self.files, resume_state or {}, self.follow, self.max_record_bytes)


@contextmanager
def _naming(path: str) -> Iterator[None]:
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        msg = f"input {path} cannot be read: {what}"
        raise InputError(msg) from None


def _skip(fh: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = fh.read(min(n, 1 << 20))
        if not chunk:
            return
        n -= len(chunk)
