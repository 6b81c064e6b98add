"""Replayable inputs: JSONL files (plain or gzip), folders of them, and stdin.

Each file is one Bytewax partition whose resume state is how far it was read, so a
rerun after a crash (or after new lines were appended) continues where the last
snapshot left off. Items are ``RawRecord`` (source, 1-based line number, bytes).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from heatmetro.errors import InputError

BATCH_LINES = 1024  # big enough to vectorise trimming well, small enough to stay responsive
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


class _LinePartition(StatefulSourcePartition[RawRecord, FilePosition | None]):
    def __init__(self, source: str, fh: IO[bytes], pos: FilePosition, follow: bool, head: str):
        self.source, self.fh, self.follow, self.head = source, fh, follow, head
        self.lines, self.offset = pos.lines, pos.offset
        self._partial = b""
        self._awake: datetime | None = None

    def next_batch(self) -> list[RawRecord]:
        self._awake = None
        out: list[RawRecord] = []
        for _ in range(BATCH_LINES):
            line = self.fh.readline()
            if not line:
                break
            if not line.endswith(b"\n") and self.follow:
                self._partial += line  # a writer is mid-line: wait for the rest
                break
            line, self._partial = self._partial + line, b""
            self.offset += len(line)
            self.lines += 1
            data = line.strip()
            if data:
                out.append(RawRecord(self.source, self.lines, data))
        if not out:
            if not self.follow:
                raise StopIteration
            self._awake = datetime.now(UTC) + FOLLOW_POLL
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> FilePosition | None:
        if self.source == STDIN:
            return None  # stdin cannot be rewound: a rerun reads new data from the start
        return FilePosition(self.lines, self.offset, self.head)

    def close(self) -> None:
        if self.fh is not sys.stdin.buffer:
            self.fh.close()


class _Finished(StatefulSourcePartition[RawRecord, FilePosition | None]):
    """A partition from an earlier run that this run does not read: keeps its position."""

    def __init__(self, resume_state: FilePosition | None) -> None:
        self.state = resume_state

    def next_batch(self) -> list[RawRecord]:
        raise StopIteration

    def snapshot(self) -> FilePosition | None:
        return self.state


class JsonlSource(FixedPartitionedSource[RawRecord, FilePosition | None]):
    """One partition per input file (and one for stdin).

    Bytewax refuses to resume when a recovered partition is not listed, so the source
    also lists every input of earlier runs (``known``) and builds those as finished.
    """

    def __init__(
        self, inputs: list[str], *, follow: bool = False, known: list[str] | None = None
    ) -> None:
        self.inputs = inputs
        self.follow = follow
        self.known = known or []

    def list_parts(self) -> list[str]:
        return list(dict.fromkeys([*self.known, *self.inputs]))

    def build_part(
        self, step_id: str, for_part: str, resume_state: FilePosition | None
    ) -> StatefulSourcePartition[RawRecord, FilePosition | None]:
        if for_part not in self.inputs:
            return _Finished(resume_state)
        if for_part == STDIN:
            return _LinePartition(STDIN, sys.stdin.buffer, FilePosition(0, 0, ""), self.follow, "")
        head = _head_hash(for_part)
        fh = _open(for_part)
        pos = FilePosition(0, 0, head)
        if resume_state is not None and resume_state.head == head:
            pos = resume_state
            if for_part.endswith(".gz"):
                _skip(fh, resume_state.offset)
            else:
                fh.seek(resume_state.offset)
        return _LinePartition(for_part, fh, pos, self.follow, head)


def known_inputs(registry: Path) -> list[str]:
    """The inputs earlier runs read with this recovery folder."""
    return list(json.loads(registry.read_text())) if registry.exists() else []


def remember_inputs(registry: Path, inputs: list[str]) -> list[str]:
    """Add ``inputs`` to the registry (done once, before any worker starts)."""
    known = known_inputs(registry)
    merged = list(dict.fromkeys([*known, *inputs]))
    if merged != known:
        tmp = registry.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, indent=1))
        tmp.replace(registry)
    return merged


def _skip(fh: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = fh.read(min(n, 1 << 20))
        if not chunk:
            return
        n -= len(chunk)
