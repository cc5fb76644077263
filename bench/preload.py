"""Bulk-load a store with N valid-looking events (benchmark 3), fast: binary COPY.

Rows for ``events / per_run`` runs of ``per_run`` events each (the turn's real payload
bytes, a well-formed chain of fake hashes that need not verify), ten runs per user,
committed in batches so the rows carry a spread of real transaction ids. Then
VACUUM ANALYZE and CHECKPOINT, so the measurements that follow meet a settled table
rather than autovacuum and the checkpointer catching up with the load.

A benchmark that measures its own runs among the loaded ones (``bench.replay``) passes
``after_batch``: it appends a share of its runs after each batch, so their events lie
spread among the others' in the table, as a long-lived agent's do among other agents'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from bench.pgserver import conninfo
from bench.workload import encoded_turn
from ledger.chain import GENESIS

_RUN_COLUMNS = "run_id, user_id, session_id"
#: Columns and COPY types of a pre-built ledger_events row (shared by the benchmarks).
EVENT_COLUMNS = (
    "user_id, run_id, version, session_id, type, schema, occurred_at, payload, prev_hash, hash"
)
EVENT_TYPES = [
    "text",
    "text",
    "int8",
    "text",
    "text",
    "int2",
    "timestamptz",
    "bytea",
    "bytea",
    "bytea",
]


def preload(
    url: str,
    schema: str,
    events: int,
    per_run: int = 100,
    batch_runs: int = 500,
    after_batch: Callable[[int, int], None] | None = None,
) -> None:
    """Add ``events`` events to the (migrated) store in ``schema``.

    ``after_batch(done, batches)``, if given, is called after each committed batch
    (``done`` counts from 1), before the final VACUUM ANALYZE.
    """
    turn = encoded_turn(0)
    runs = events // per_run
    batches = -(-runs // batch_runs)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    with psycopg.connect(conninfo(url, schema), autocommit=True) as conn:
        for done, first in enumerate(range(0, runs, batch_runs), 1):
            batch = range(first, min(runs, first + batch_runs))
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(
                    f"COPY ledger_runs ({_RUN_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "text"])
                    for r in batch:
                        copy.write_row(
                            (f"run_p{r:07d}", f"usr_p{r // 10:06d}", f"sess_p{r // 2:07d}")
                        )
                with cur.copy(
                    f"COPY ledger_events ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(EVENT_TYPES)
                    for r in batch:
                        run_id, user_id, session = (
                            f"run_p{r:07d}",
                            f"usr_p{r // 10:06d}",
                            f"sess_p{r // 2:07d}",
                        )
                        prev = GENESIS
                        start = base + timedelta(seconds=r)
                        for v in range(1, per_run + 1):
                            type_, payload = turn[(v - 1) % len(turn)]
                            digest = hashlib.sha256(prev + run_id.encode() + bytes(v)).digest()
                            copy.write_row(
                                (
                                    user_id,
                                    run_id,
                                    v,
                                    session,
                                    type_,
                                    1,
                                    start + timedelta(milliseconds=v),
                                    payload,
                                    prev,
                                    digest,
                                )
                            )
                            prev = digest
            if after_batch is not None:
                after_batch(done, batches)
        conn.execute("VACUUM ANALYZE ledger_runs")
        conn.execute("VACUUM ANALYZE ledger_events")
        conn.execute("CHECKPOINT")


def table_size(url: str, schema: str) -> str:
    """Total size of ``ledger_events`` (heap, TOAST, indexes), for the report."""
    with psycopg.connect(conninfo(url, schema)) as conn:
        row = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('ledger_events'))"
        ).fetchone()
    return str(row[0]) if row else "?"
