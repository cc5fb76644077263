"""Read models in the ledger's SQLite file, written through the store's write turn."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.chain import canonical_time
from ledger.records import LogCursor
from ledger.store.sqlite import SQLiteStore
from projections.storage import sqlite_sql as sql
from projections.storage.base import (
    DocKey,
    Load,
    ProjectorRow,
    SQLStorage,
    Write,
    projection_of,
)

_CHUNK = 400  # (user_id, key) pairs per query, well under SQLite's parameter limit


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


class SQLiteStorage(SQLStorage):
    """Documents and projector rows in tables beside ``ledger_events``."""

    statements = sql.STATEMENTS

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__(store)
        with store.transaction() as conn:
            for statement in sql.SCHEMA:
                conn.execute(statement)
            if not conn.execute(sql.HAS_SKIPPED).fetchone()[0]:
                conn.execute(sql.ADD_SKIPPED)

    def _row(self, values: Sequence[Any]) -> ProjectorRow:
        name, version, generation, tx_id, position, owner, lease_until, updated_at, skipped = values
        cursor = LogCursor(tx_id, position)
        return ProjectorRow(
            name,
            version,
            generation,
            cursor,
            owner,
            _time(lease_until),
            _time(updated_at),
            skipped,
        )

    def _lease(self, ttl: float) -> dict[str, Any]:
        now = datetime.now(UTC)  # the file has no clock: leases use the runners' clocks
        return {
            "now": canonical_time(now),
            "until": canonical_time(now + timedelta(seconds=ttl)),
        }

    def _swap_time(self) -> dict[str, Any]:
        return {"now": canonical_time(datetime.now(UTC))}

    def _limit(self, count: int | None) -> Any:
        return -1 if count is None else count  # LIMIT -1: no limit

    def _numbers(self, numbers: Sequence[int]) -> Any:
        return json.dumps(list(numbers))

    def load_many(self, loads: Sequence[Load]) -> list[dict[DocKey, bytes]]:
        found: list[dict[DocKey, bytes]] = []
        with self._store.connection() as conn:
            for load in loads:
                docs: dict[DocKey, bytes] = {}
                for start in range(0, len(load.keys), _CHUNK):
                    chunk = load.keys[start : start + _CHUNK]
                    statement = sql.LOAD_DOCS.format(pairs=", ".join(["(?, ?)"] * len(chunk)))
                    params: list[Any] = [part for pair in chunk for part in pair]
                    params += [projection_of(load.name), load.generation]
                    docs.update({(u, k): d for u, k, d in conn.execute(statement, params)})
                found.append(docs)
        return found

    def commit_many(self, owner: str, writes: Sequence[Write], ttl: float) -> list[bool]:
        lease = self._lease(ttl)
        # Everything built before the write turn is taken: writers wait while it is held.
        steps = [
            (
                {
                    "name": w.name,
                    "generation": w.generation,
                    "owner": owner,
                    "tx_id": w.expected.tx_id,
                    "position": w.expected.position,
                    "new_tx": w.new.tx_id,
                    "new_pos": w.new.position,
                    "skipped": w.skipped,
                    **lease,
                },
                [
                    (user_id, projection_of(w.name), w.generation, key, doc)
                    for (user_id, key), doc in w.docs.items()
                ],
                [
                    (user_id, projection_of(w.name), w.generation, key, number, items)
                    for (user_id, key, number), items in w.pages.items()
                ],
            )
            for w in writes
        ]
        moved: list[bool] = []
        with self._store.transaction() as conn:
            for advance, docs, pages in steps:
                moved.append(conn.execute(sql.ADVANCE, advance).rowcount == 1)
                if moved[-1]:
                    conn.executemany(sql.UPSERT_DOC, docs)
                    if pages:
                        conn.executemany(sql.UPSERT_PAGE, pages)
        return moved
