"""The digest of the source files a cache's content is derived with: any edit to them
invalidates the cache (a new rule must never meet old results)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["code_digest"]


def code_digest(files: Iterable[Path]) -> str:
    """SHA-256 over each file's name and bytes, in the order given; a random value when
    one cannot be read (not installed as files): a key no cache can match."""
    h = hashlib.sha256()
    try:
        for f in files:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    except OSError:
        return os.urandom(16).hex()
    return h.hexdigest()
