"""Masking places out of text kept for operators (dead letters)."""

from __future__ import annotations

import re

# Numbers with 3 or more decimals (the coordinates in a record's text, ~100 m or finer),
# any number written with an exponent (42320113e-6 is a coordinate too), and any bare
# integer of 6 or more digits (a coordinate scaled to an integer: 6016991 is 60.16991).
# (The exponent and integer forms only as bare numbers: "550e8400" or "r-1234567" inside
# an id or a quoted string stays.)
_BARE_BEFORE, _BARE_AFTER = r"(?<![\w.\"'-])", r"(?![\w.\"'-])"
_PRECISE = re.compile(
    rf"{_BARE_BEFORE}-?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+{_BARE_AFTER}"
    r"|-?\d+\.\d{3,}"
    rf"|{_BARE_BEFORE}-?\d{{6,}}(?:\.\d+)?{_BARE_AFTER}"
)


def mask_locations(text: str) -> str:
    """``text`` with every number of 3 or more decimals, with an exponent, or a bare
    integer of 6 or more digits, replaced by ``#`` (in a record's raw text and in the reason it was refused, which may quote
    the fix it refused).

    Raw points never reach the store, and a broken record's neither: its dead letter
    keeps the text's shape (ids, fields, what is wrong) for the operator, who finds the
    whole record at its source and position, but no place the athlete was.
    """
    return _PRECISE.sub("#", text)
