"""Athlete-month aggregates: derived from the ``activities`` rows, never incremented.

``month_rows`` is a pure read (the snapshot uses it for months ingest has not rebuilt
yet); ``recompute`` and ``rebuild_dirty`` write, inside the caller's transaction.
"""

from __future__ import annotations

import time

import numpy as np
import sqlite_utils

from heatmetro.state.aggregates import merge_records
from heatmetro.state.records import (
    EDGE_DTYPE,
    HEAT_DTYPE,
    HEX_DTYPE,
    OD_DTYPE,
    from_blob,
    to_blob,
)

#: One ``athlete_months`` row: (athlete_id, month, layer, activities, heat, edges, hexagons, od).
MonthRow = tuple[str, str, str, int, bytes, bytes, bytes, bytes]


def month_rows(db: sqlite_utils.Database, athlete_id: str, month: str) -> list[MonthRow]:
    """The ``athlete_months`` rows the athlete-month should have, from its activities."""
    rows = db.execute(
        "SELECT layer, heat, edges, hexagons, od FROM activities "
        "WHERE athlete_id = ? AND month = ? AND status = 'active' ORDER BY activity_id",
        (athlete_id, month),
    ).fetchall()
    by_layer: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for layer, heat, edges, hexes, od in rows:
        by_layer.setdefault(layer, []).append(
            (
                from_blob(heat, HEAT_DTYPE),
                from_blob(edges, EDGE_DTYPE),
                from_blob(hexes, HEX_DTYPE),
                from_blob(od, OD_DTYPE),
            )
        )
    out: list[MonthRow] = []
    for layer in sorted(by_layer):
        agg = merge_records(by_layer[layer])  # type: ignore[arg-type]
        if agg.activities == 0:
            continue
        out.append(
            (
                athlete_id, month, layer, agg.activities, to_blob(agg.heat),
                to_blob(agg.edges), to_blob(agg.hexagons), to_blob(agg.od),
            )
        )  # fmt: skip
    return out


def recompute(db: sqlite_utils.Database, athlete_id: str, month: str) -> None:
    """Rebuild one athlete-month's aggregate rows (inside the caller's transaction)."""
    db.execute("DELETE FROM athlete_months WHERE athlete_id = ? AND month = ?", (athlete_id, month))
    db.conn.executemany(
        "INSERT INTO athlete_months VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        month_rows(db, athlete_id, month),
    )


def rebuild_dirty(db: sqlite_utils.Database) -> int:
    """Rebuild every athlete-month marked dirty (by any writer); returns how many."""
    dirty = db.execute(
        "SELECT athlete_id, month FROM dirty_months ORDER BY athlete_id, month"
    ).fetchall()
    for athlete_id, month in dirty:
        recompute(db, athlete_id, month)
    db.conn.executemany("DELETE FROM dirty_months WHERE athlete_id = ? AND month = ?", dirty)
    return len(dirty)


class RefreshClock:
    """When a deferred rebuild is due (``every_s`` 0: after every batch)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def reset(self) -> None:
        self.last = time.monotonic()
