"""The raw psycopg floor of benchmark 1: the same bytes into the same table, nothing else."""

from __future__ import annotations

from typing import Any

import psycopg

import ledger
from bench.ours import prebuilt
from bench.pgserver import conninfo
from ledger.store.postgres_schema import STEPS

#: The floor: one INSERT of the turn's 5 rows, nothing checked, nothing returned.
RAW_INSERT = """
INSERT INTO ledger_events (user_id, run_id, version, session_id, type, schema,
                           occurred_at, payload, key_id, prev_hash, hash)
SELECT %b::text, %b::text, e.version, %b::text, e.type, e.schema,
       e.occurred_at, e.payload, e.key_id, e.prev_hash, e.hash
FROM unnest(%b::bigint[], %b::text[], %b::smallint[], %b::timestamptz[], %b::bytea[],
            %s::text[], %b::bytea[], %b::bytea[])
     AS e(version, type, schema, occurred_at, payload, key_id, prev_hash, hash)
"""


def create_raw_table(url: str, schema: str) -> None:
    """``ledger_events`` in ``schema`` from the store's own DDL (same columns, indexes)."""
    event_log = next(step for step in STEPS if step.name == "event log")
    with psycopg.connect(conninfo(url, schema), autocommit=True) as conn:
        for statement in event_log.statements:
            conn.execute(statement)


class RawPg:
    """psycopg, autocommit, prepared, binary: the fastest honest way to store the bytes."""

    def __init__(
        self, index: int, url: str, schema: str, total: int, runs: int = 4, **_: Any
    ) -> None:
        with ledger.connect("memory://") as scratch:  # seal real chains, off the clock
            appends = prebuilt(scratch, f"usr_w{index}", f"sess_{index}", runs, total)
        self.params: list[tuple[Any, ...]] = []
        for a in appends:
            ev = a.events
            self.params.append(
                (
                    a.user_id,
                    a.run_id,
                    a.session_id,
                    [e.version for e in ev],
                    [e.type for e in ev],
                    [e.schema for e in ev],
                    [e.occurred_at for e in ev],
                    [e.payload for e in ev],
                    [e.key_id for e in ev],
                    [e.prev_hash for e in ev],
                    [e.hash for e in ev],
                )
            )
        self.conn = psycopg.connect(conninfo(url, schema), autocommit=True)
        self.cur = self.conn.cursor()

    def turn(self, n: int) -> None:
        self.cur.execute(RAW_INSERT, self.params[n], prepare=True)

    def close(self) -> None:
        self.conn.close()
