"""Masking places out of text kept for operators (dead letters)."""

from __future__ import annotations

import re

# Numbers with 3 or more decimals: the coordinates in a record's text (~100 m or finer).
_PRECISE = re.compile(r"-?\d+\.\d{3,}")


def mask_locations(text: str) -> str:
    """``text`` with every number of 3 or more decimals replaced by ``#``.

    Raw points never reach the store, and a broken record's neither: its dead letter
    keeps the text's shape (ids, fields, what is wrong) for the operator, who finds the
    whole record at its source and position, but no place the athlete was.
    """
    return _PRECISE.sub("#", text)
