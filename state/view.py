"""A consistent, read-only view of the store for the snapshot (it never writes the store).

Each shard is read inside one WAL read transaction, all begun together before anything is
read, so the snapshot sees exactly what was committed when it began while ``ingest
--follow`` keeps committing (WAL readers never block the writer, nor it them).

Hide-more settings need no pass here: ingest enforces them in the transaction that stores
them. Aggregates ingest has not rebuilt yet (``dirty_months``, deferred by up to a few
seconds, or left by an interrupted run) are derived from the activities in memory, so the
view is complete without taking the write lock.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from operator import itemgetter
from typing import Any

import sqlite_utils

from heatmetro.state.rebuild import MonthRow, month_rows


class ReadView(AbstractContextManager["ReadView"]):
    """``with ReadView(dbs) as view:`` one read transaction per shard, begun together."""

    def __init__(self, dbs: Sequence[sqlite_utils.Database]) -> None:
        self.dbs = list(dbs)

    def __enter__(self) -> ReadView:
        for db in self.dbs:
            db.execute("BEGIN")  # deferred: the snapshot of the WAL is taken at the first read
        for db in self.dbs:
            db.execute("SELECT count(*) FROM dirty_months").fetchone()
        return self

    def __exit__(self, *_: Any) -> None:
        for db in self.dbs:
            db.execute("ROLLBACK")

    def merged(self, sql: str, params: Sequence[object] = ()) -> Iterator[tuple[Any, ...]]:
        """``sql`` on every shard, rows merged on their first column (the athlete id; the
        SQL must order by it first): an athlete's rows come from one shard, in SQL order."""
        return heapq.merge(*(db.execute(sql, tuple(params)) for db in self.dbs), key=itemgetter(0))

    def merged_sorted(
        self, sql: str, params: Sequence[object] = (), *, columns: int
    ) -> Iterator[tuple[Any, ...]]:
        """``merged``, with each shard's rows sorted here on their first ``columns``
        columns (which must tell every row apart) rather than by an ORDER BY."""
        key = itemgetter(*range(columns))
        return heapq.merge(
            *(sorted(db.execute(sql, tuple(params)), key=key) for db in self.dbs),
            key=itemgetter(0),
        )

    def window_rows(
        self, first: str, last: str, athletes: Collection[str] | None = None
    ) -> Iterator[MonthRow]:
        """Every contributing athlete-month-layer row in ``first..last``, in
        (athlete_id, month, layer) order over all shards, opted-out athletes left out
        (only those of ``athletes`` when given)."""
        return heapq.merge(*(_shard_rows(db, first, last, athletes) for db in self.dbs))

    def stamps(self) -> dict[str, bytes]:
        """Per athlete, the stamps every write to their rows redraws (``athlete_stamps``),
        joined over the shards that hold one."""
        out: dict[str, bytes] = {}
        for shard, db in enumerate(self.dbs):
            for athlete_id, stamp in db.execute("SELECT athlete_id, stamp FROM athlete_stamps"):
                out[athlete_id] = out.get(athlete_id, b"") + shard.to_bytes(4, "little") + stamp
        return out


def only_athletes(column: str, athletes: Collection[str] | None) -> tuple[str, tuple[str, ...]]:
    """SQL condition and parameters keeping the rows of ``athletes`` (all when None)."""
    if athletes is None:
        return "1", ()
    return f"{column} IN (SELECT value FROM json_each(?))", (json.dumps(sorted(athletes)),)


def _shard_rows(
    db: sqlite_utils.Database, first: str, last: str, athletes: Collection[str] | None
) -> Iterator[MonthRow]:
    cond_d, par_d = only_athletes("d.athlete_id", athletes)
    dirty = db.execute(
        "SELECT d.athlete_id, d.month FROM dirty_months d LEFT JOIN athletes a "
        "ON a.athlete_id = d.athlete_id WHERE d.month BETWEEN ? AND ? "
        f"AND coalesce(a.opt_out, 0) = 0 AND {cond_d} ORDER BY d.athlete_id, d.month",
        (first, last, *par_d),
    ).fetchall()
    skip = {(a, m) for a, m in dirty}
    fresh: list[MonthRow] = [r for a, m in dirty for r in month_rows(db, a, m)]
    cond_m, par_m = only_athletes("m.athlete_id", athletes)
    stored = (
        r
        for r in db.execute(
            "SELECT m.athlete_id, m.month, m.layer, m.activities, m.heat, m.edges, m.hexagons, m.od "
            "FROM athlete_months m LEFT JOIN athletes a ON a.athlete_id = m.athlete_id "
            f"WHERE m.month BETWEEN ? AND ? AND coalesce(a.opt_out, 0) = 0 AND {cond_m} "
            "ORDER BY m.athlete_id, m.month, m.layer",
            (first, last, *par_m),
        )
        if (r[0], r[1]) not in skip
    )
    return heapq.merge(stored, iter(fresh))
