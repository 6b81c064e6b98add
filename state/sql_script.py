"""Run a migration's SQL script one statement at a time, inside its transaction.

``sqlite_utils.Database.executescript`` splits a script inside a transaction by joining
it again after every character (quadratic in a statement's length): creating a store of
16 shards spent ~0.3 s of CPU there, more than all its SQL. This splits at each ``;``
and asks SQLite whether the text so far is a whole statement (a trigger's body holds
``;`` of its own), so the work is linear in the script's pieces.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``, in order, as sqlite-utils splits them."""
    statements: list[str] = []
    pending = ""
    *ended, last = sql.split(";")
    for piece in ended:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    rest = (pending + last).strip()  # after the last ";": run as it is, as sqlite-utils does
    if rest:
        statements.append(rest)
    return statements


def execute_script(db: sqlite_utils.Database, sql: str) -> None:
    """Each statement of ``sql`` on ``db``, in the transaction the caller holds (unlike
    ``sqlite3.Connection.executescript``, which commits first)."""
    for statement in split_statements(sql):
        db.execute(statement)
