"""Masking places out of text kept for operators (dead letters)."""

from __future__ import annotations

import re

# Numbers with 3 or more decimals (the coordinates in a record's text, ~100 m or finer),
# and any number written with an exponent (42320113e-6 is a coordinate too).
# (An exponent form only as a bare number: "550e8400" inside an id or a quoted string stays.)
_PRECISE = re.compile(r"(?<![\w.\"'-])-?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+(?![\w.\"'-])|-?\d+\.\d{3,}")


def mask_locations(text: str) -> str:
    """``text`` with every number of 3 or more decimals, or with an exponent, replaced
    by ``#`` (in a record's raw text and in the reason it was refused, which may quote
    the fix it refused).

    Raw points never reach the store, and a broken record's neither: its dead letter
    keeps the text's shape (ids, fields, what is wrong) for the operator, who finds the
    whole record at its source and position, but no place the athlete was.
    """
    return _PRECISE.sub("#", text)
