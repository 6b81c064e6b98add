"""The migrations' script splitter: the statements sqlite-utils' own splitter finds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlite_utils.db import _iter_complete_sql_statements

from heatmetro.state.sql_script import execute_script, split_statements
from heatmetro.state.store import connect

TRIGGER = """
CREATE TRIGGER t_{n} AFTER INSERT ON t BEGIN
    UPDATE t SET note = 'a; b' WHERE rowid = NEW.rowid;  -- a comment; with a semicolon
    INSERT INTO log VALUES ('{n};');
END;"""

statement = st.one_of(
    st.builds(
        "SELECT '{}';".format,
        st.text(alphabet="ab; '-\n", max_size=8).map(lambda s: s.replace("'", "''")),
    ),
    st.builds(TRIGGER.format, n=st.integers(0, 99)),
    st.just("-- only a comment; here\nSELECT 1;"),
    st.just("/* block; comment */ SELECT 2;"),
    st.just("\n  ;\n"),
)


@given(st.lists(statement, max_size=6), st.sampled_from(["", "SELECT 3", "  \n"]))
def test_the_statements_sqlite_utils_finds(parts: list[str], tail: str) -> None:
    script = "\n".join(parts) + tail
    expected = [s for s in _iter_complete_sql_statements(script) if s.strip(" \t\r\n;")]
    assert split_statements(script) == expected


def test_a_script_runs_in_the_callers_transaction(tmp_path: Path) -> None:
    db = connect(tmp_path / "store.db")
    db.execute("CREATE TABLE t (x TEXT)")
    db.conn.commit()
    with pytest.raises(sqlite3.OperationalError, match="nowhere"), db.atomic():
        execute_script(db, "INSERT INTO t VALUES ('a;b'); INSERT INTO nowhere VALUES (1);")
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)  # rolled back whole
    db.close()
