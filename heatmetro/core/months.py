"""Calendar months as ``YYYY-MM`` text: the one place that does month arithmetic.

Months are stored and compared as zero-padded text, so only the exact ``YYYY-MM`` form is
accepted (``strptime`` alone would take "2021-6" and " 2021-06").
"""

from __future__ import annotations

import re
from datetime import datetime

from heatmetro.core.errors import ConfigError

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def check_month(month: str, *, what: str = "month") -> str:
    """``month`` if it is exactly ``YYYY-MM`` (year 0001 or later), else ConfigError."""
    if not _MONTH.fullmatch(month) or month < "0001-01":
        shaped = re.fullmatch(r"\d{4}-(\d{2})", month)
        why = f"there is no month {shaped.group(1)}; " if shaped else ""
        msg = f"{what} {month!r}: {why}expected YYYY-MM, e.g. 2021-02"
        raise ConfigError(msg)
    return month


def month_index(month: str) -> int:
    """Months since year 0: ``"2021-02"`` -> 2021 * 12 + 1."""
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1


def month_of_index(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def add_months(month: str, n: int) -> str:
    """``month`` shifted by ``n`` months (negative goes back)."""
    return month_of_index(month_index(month) + n)


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def window_months(month: str, length: int = 12) -> tuple[str, str]:
    """(first, last) month of the ``length``-month window ending with ``month``."""
    return add_months(month, -(length - 1)), month


def last_complete_month(now: datetime) -> str:
    """The month before the one ``now`` falls in."""
    return add_months(month_of(now), -1)
