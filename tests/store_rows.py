"""Read a sharded store in tests: a query over every shard file, rows in one order."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def shard_files(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "shards").glob("[0-9][0-9][0-9][0-9].db"))


def _key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((x is not None, x if x is not None else 0) for x in row)


def query(state_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """``sql`` on every shard (read-only), all rows sorted (leading columns first), so a
    store reads the same whatever shard each athlete landed in."""
    out: list[tuple[Any, ...]] = []
    files = shard_files(state_dir)
    assert files, f"no shard files in {state_dir}"
    for f in files:
        con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
        try:
            out += con.execute(sql, params).fetchall()
        finally:
            con.close()
    return sorted(out, key=_key)
