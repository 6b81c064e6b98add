"""What the environment hands heatmetro: the build date, and its failures as one line.

Bad settings and a broken environment (a full disk, a corrupt store, a port in use)
are not bugs: the CLI reports them in one line naming the path, never as a traceback.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from datetime import UTC, datetime

from heatmetro.core.errors import ConfigError, HeatmetroError

# datetime's range: 9999-12-31T23:59:59Z is the last second it can represent.
MAX_EPOCH_S = 253_402_300_799


def source_date_epoch() -> datetime | None:
    """``SOURCE_DATE_EPOCH`` (reproducible builds) as a UTC datetime, or None if unset.

    Raises:
        ConfigError: the value is not a whole number of seconds in 0 .. 253402300799.
    """
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_EPOCH_S:
        msg = (
            f"SOURCE_DATE_EPOCH = {raw[:40]!r}: expected whole seconds since 1970 "
            f"(0 .. {MAX_EPOCH_S})"
        )
        raise ConfigError(msg)
    return datetime.fromtimestamp(int(raw), tz=UTC)


def build_time() -> datetime:
    """``SOURCE_DATE_EPOCH`` when set (reproducible builds), else now.

    Raises:
        ConfigError: ``SOURCE_DATE_EPOCH`` is set but not a usable Unix time.
    """
    return source_date_epoch() or datetime.now(UTC)


_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EFBIG: "file size limit reached (disk quota or ulimit -f)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EADDRINUSE: "the port is in use; pick another with --port",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: what failed and on which path."""
    what = _HINTS.get(exc.errno or 0) or exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{what}: {' -> '.join(paths)}" if paths else what


def describe_store_error(exc: sqlite3.Error, db_path: object) -> str:
    """One line for an SQLite error on the store at ``db_path``."""
    text = str(exc)
    if text in ("file is not a database", "database disk image is malformed"):
        return f"store {db_path} is corrupt ({text}); restore it from a backup or re-ingest"
    if "disk I/O error" in text or "full" in text:
        return f"store {db_path}: {text} (is the disk full?)"
    return f"store {db_path}: {text}"


def user_caused(exc: BaseException) -> BaseException | None:
    """The environment error behind ``exc`` (following ``raise ... from``), or None.

    Bytewax wraps what a step raised in its own runtime error; the cause is what the
    user can act on.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, HeatmetroError | OSError | sqlite3.DatabaseError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None
