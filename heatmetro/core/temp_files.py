"""Temporary files through which a cache is written atomically (complete, then renamed
over the cache): named for the host and process writing them, so the next writer can
remove those of a process that is gone (killed mid-write) without touching a live one's."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def temporary_for(path: Path) -> Path:
    """The temporary file this process writes ``path`` through; any that a process of
    this host no longer running left beside ``path`` are removed first."""
    host = socket.gethostname().replace(".", "-")
    prefix = f".{path.name}.{host}."
    for old in path.parent.glob(f"{prefix}*.tmp"):
        pid = old.name[len(prefix) : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            old.unlink(missing_ok=True)
    return path.with_name(f"{prefix}{os.getpid()}.tmp")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True
