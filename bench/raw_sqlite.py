"""The raw sqlite3 floor of benchmark 2: same table, WAL, synchronous=NORMAL, and per turn
one ``BEGIN IMMEDIATE; executemany(5 rows); COMMIT`` of rows built in advance."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import ledger
from bench.ours import prebuilt
from ledger.chain import canonical_time
from ledger.store import sqlite_sql

RAW_INSERT = """
INSERT INTO ledger_events (
    tx_id, user_id, run_id, version, session_id, type, schema,
    occurred_at, recorded_at, payload, key_id, prev_hash, hash
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def _open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def create_raw_file(path: str) -> None:
    """A file with the store's own schema (its migrations), in WAL mode."""
    conn = _open(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        sqlite_sql.migrate(conn)
    finally:
        conn.close()


class RawSqlite:
    def __init__(self, index: int, path: str, total: int, runs: int = 4, **_: Any) -> None:
        with ledger.connect("memory://") as scratch:  # seal real chains, off the clock
            appends = prebuilt(scratch, f"usr_w{index}", f"sess_{index}", runs, total)
        recorded = canonical_time(datetime.now(UTC))
        self.rows: list[list[tuple[Any, ...]]] = []
        for n, a in enumerate(appends):
            tx_id = index * 10**9 + n
            self.rows.append(
                [
                    (
                        tx_id,
                        a.user_id,
                        a.run_id,
                        e.version,
                        a.session_id,
                        e.type,
                        e.schema,
                        canonical_time(e.occurred_at),
                        recorded,
                        e.payload,
                        e.key_id,
                        e.prev_hash,
                        e.hash,
                    )
                    for e in a.events
                ]
            )
        self.conn = _open(path)

    def turn(self, n: int) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(RAW_INSERT, self.rows[n])
        conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
