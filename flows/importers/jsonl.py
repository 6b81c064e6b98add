"""Write stream events as a JSON-lines file, atomically and byte-for-byte reproducibly."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable
from pathlib import Path

import orjson


def write_jsonl(events: Iterable[dict], path: Path) -> int:
    """Write events as compact JSON lines; gzip (mtime 0, no name) when path ends in .gz.

    The file is written beside the target and renamed, so a reader never sees half a file.

    Returns:
        The number of events written.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as raw:
        # Empty filename and mtime=0 keep the gzip header identical across runs.
        out: io.BufferedIOBase = (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
            if path.suffix == ".gz"
            else raw
        )
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
            count += 1
        if out is not raw:
            out.close()
    tmp.replace(path)
    return count
