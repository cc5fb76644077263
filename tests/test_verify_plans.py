"""``verify`` of one run (with or without its user), or of one user, reads index ranges
of the log and the runs registry, never a whole table: the statements the store really
runs are recorded and their plans checked, on a store with thousands of other runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import ledger
from ledger.store.sqlite import SQLiteStore
from tests.pg import raw_connection
from tests.writers import turn

OTHER_RUNS = 3000

#: Audits whose scope is narrower than the whole store: each must read ranges only.
SCOPES: list[Callable[[ledger.Auditor, str], Any]] = [
    lambda auditor, run_id: auditor.verify(run_id=run_id),
    lambda auditor, run_id: auditor.verify(user_id="usr_real", run_id=run_id),
    lambda auditor, run_id: auditor.verify(user_id="usr_real"),
]


def real_run(url: str) -> str:
    """One run written through the API, beside the seeded ones."""
    with ledger.connect(url) as led:
        run = led.tenant("usr_real").start_run(session_id="s")
        turn(run, 1)
        return run.run_id


def touches_the_ledger(statement: str) -> bool:
    return "ledger_events" in statement or "ledger_runs" in statement


@pytest.fixture
def sqlite_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement (parameters inlined) the SQLite store's connections run."""
    statements: list[str] = []
    connect = SQLiteStore._connect

    def traced(self: SQLiteStore) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(SQLiteStore, "_connect", traced)
    yield statements


@pytest.mark.parametrize("scope", SCOPES, ids=["run", "user-and-run", "user"])
def test_a_scoped_verify_on_sqlite_searches_indexes(
    sqlite_url: str, sqlite_statements: list[str], scope: Callable[[ledger.Auditor, str], Any]
) -> None:
    run_id = real_run(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:  # other users' runs, three events each
        raw.executemany(
            "INSERT INTO ledger_runs (run_id, user_id, session_id, created_at)"
            " VALUES (?, ?, 's', '2026-01-01T00:00:00.000000Z')",
            [(f"run_{n}", f"usr_{n % 100}") for n in range(OTHER_RUNS)],
        )
        raw.executemany(
            "INSERT INTO ledger_events (tx_id, user_id, run_id, version, session_id, type,"
            " schema, occurred_at, recorded_at, payload, prev_hash, hash) VALUES (?, ?, ?, ?,"
            " 's', 'message_received', 1, '2026-01-01T00:00:00.000000Z',"
            " '2026-01-01T00:00:00.000000Z', x'7b7d', x'00', x'00')",
            [(n + 10, f"usr_{n % 100}", f"run_{n}", v) for n in range(OTHER_RUNS) for v in (1, 2)],
        )
    with ledger.connect(sqlite_url) as led:
        sqlite_statements.clear()
        report = scope(led.auditor(), run_id)
    assert (report.ok, report.runs, report.events) == (True, 1, 6)
    reads = [s for s in sqlite_statements if touches_the_ledger(s) and "SELECT" in s]
    assert reads
    with sqlite3.connect(path) as raw:
        for statement in reads:
            plan = [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement)]
            assert not [step for step in plan if step.startswith("SCAN")], (statement, plan)


@pytest.fixture
def pg_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """Every statement (with its parameters) psycopg cursors run in this process."""
    statements: list[tuple[str, Any]] = []
    for cursor in (psycopg.Cursor, psycopg.ServerCursor):
        execute = cursor.execute

        def recorded(
            self: Any, query: Any, params: Any = None, *a: Any, _e: Any = execute, **k: Any
        ) -> Any:
            statements.append((str(query), params))
            return _e(self, query, params, *a, **k)

        monkeypatch.setattr(cursor, "execute", recorded)
    yield statements


@pytest.mark.parametrize("scope", SCOPES, ids=["run", "user-and-run", "user"])
def test_a_scoped_verify_on_postgres_reads_no_table_whole(
    pg_url: str, pg_statements: list[tuple[str, Any]], scope: Callable[[ledger.Auditor, str], Any]
) -> None:
    run_id = real_run(pg_url)
    with raw_connection(pg_url, autocommit=True) as raw:
        raw.execute(
            "INSERT INTO ledger_runs (run_id, user_id, session_id)"
            " SELECT 'run_' || n, 'usr_' || n %% 100, 's' FROM generate_series(1, %s) n",
            (OTHER_RUNS,),
        )
        raw.execute(
            "INSERT INTO ledger_events (user_id, run_id, version, session_id, type, schema,"
            " occurred_at, payload, prev_hash, hash) SELECT 'usr_' || n %% 100, 'run_' || n, v,"
            " 's', 'message_received', 1, now(), '\\x7b7d', '\\x00', '\\x00'"
            " FROM generate_series(1, %s) n, generate_series(1, 2) v",
            (OTHER_RUNS,),
        )
        raw.execute("ANALYZE ledger_runs")
        raw.execute("ANALYZE ledger_events")
        with ledger.connect(pg_url) as led:
            pg_statements.clear()
            report = scope(led.auditor(), run_id)
        assert (report.ok, report.runs, report.events) == (True, 1, 6)
        reads = [(s, p) for s, p in pg_statements if touches_the_ledger(s)]
        assert reads
        for statement, params in reads:
            plan = "\n".join(row[0] for row in raw.execute("EXPLAIN " + statement, params))
            assert "Seq Scan" not in plan, (statement, params, plan)
