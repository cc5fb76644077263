"""Read models in the ledger's SQLite file, written through the store's write turn."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.chain import canonical_time
from ledger.records import LogCursor
from ledger.store.sqlite import SQLiteStore
from projections.storage import sqlite_sql as sql
from projections.storage.base import DocKey, ProjectorRow, ReadModelStorage, projection_of

_CHUNK = 400  # (user_id, key) pairs per query, well under SQLite's parameter limit


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def _row(values: tuple[Any, ...]) -> ProjectorRow:
    name, version, generation, tx_id, position, owner, lease_until, updated_at = values
    return ProjectorRow(
        name,
        version,
        generation,
        LogCursor(tx_id, position),
        owner,
        _time(lease_until),
        _time(updated_at),
    )


class SQLiteStorage(ReadModelStorage):
    """Documents and projector rows in tables beside ``ledger_events``."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        with store.transaction() as conn:
            for statement in sql.SCHEMA:
                conn.execute(statement)

    def projector(self, name: str) -> ProjectorRow | None:
        with self._store.connection() as conn:
            found = conn.execute(sql.SELECT_ROW, (name,)).fetchone()
        return None if found is None else _row(found)

    def projectors(self) -> list[ProjectorRow]:
        with self._store.connection() as conn:
            return [_row(r) for r in conn.execute(sql.SELECT_ROWS).fetchall()]

    def claim(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        now = datetime.now(UTC)
        with self._store.transaction() as conn:
            conn.execute(sql.CREATE_ROW, (name, version, _first_generation(conn, name)))
            claimed = conn.execute(
                sql.CLAIM,
                {
                    "name": name,
                    "owner": owner,
                    "now": canonical_time(now),
                    "until": canonical_time(now + timedelta(seconds=ttl)),
                },
            ).rowcount
            row = conn.execute(sql.SELECT_ROW, (name,)).fetchone()
        return _row(row) if claimed == 1 else None

    def release(self, name: str, owner: str) -> None:
        with self._store.transaction() as conn:
            conn.execute(sql.RELEASE, (name, owner))

    def load(self, name: str, generation: int, keys: list[DocKey]) -> dict[DocKey, bytes]:
        projection = projection_of(name)
        found: dict[DocKey, bytes] = {}
        with self._store.connection() as conn:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                pairs = ", ".join(["(?, ?)"] * len(chunk))
                rows = conn.execute(
                    f"{sql.LOAD_DOCS} {pairs})",
                    (projection, generation, *(part for pair in chunk for part in pair)),
                ).fetchall()
                found.update({(u, k): bytes(d) for u, k, d in rows})
        return found

    def commit(
        self,
        name: str,
        generation: int,
        owner: str,
        expected: LogCursor,
        new: LogCursor,
        docs: Mapping[DocKey, bytes],
        ttl: float,
    ) -> bool:
        now = datetime.now(UTC)
        projection = projection_of(name)
        with self._store.transaction() as conn:
            moved = conn.execute(
                sql.ADVANCE,
                {
                    "name": name,
                    "generation": generation,
                    "owner": owner,
                    "tx_id": expected.tx_id,
                    "position": expected.position,
                    "new_tx": new.tx_id,
                    "new_pos": new.position,
                    "now": canonical_time(now),
                    "until": canonical_time(now + timedelta(seconds=ttl)),
                },
            ).rowcount
            if moved != 1:
                return False
            conn.executemany(
                sql.UPSERT_DOC,
                [
                    (user_id, projection, generation, key, doc)
                    for (user_id, key), doc in docs.items()
                ],
            )
        return True

    def get(self, name: str, user_id: str, key: str) -> bytes | None:
        with self._store.connection() as conn:
            row = conn.execute(sql.SELECT_DOC, (user_id, name, key)).fetchone()
        return None if row is None else bytes(row[0])

    def scan(self, name: str, user_id: str | None) -> list[tuple[str, str, bytes]]:
        with self._store.connection() as conn:
            rows = conn.execute(sql.SCAN_DOCS, {"name": name, "user_id": user_id}).fetchall()
        return [(u, k, bytes(d)) for u, k, d in rows]

    def swap(self, name: str, version: int, generation: int, cursor: LogCursor, build: str) -> None:
        with self._store.transaction() as conn:
            conn.execute(
                sql.SWAP_LIVE,
                {
                    "name": name,
                    "version": version,
                    "generation": generation,
                    "tx_id": cursor.tx_id,
                    "position": cursor.position,
                    "now": canonical_time(datetime.now(UTC)),
                },
            )
            conn.execute(sql.DELETE_ROW, (build,))
            conn.execute(sql.DELETE_OTHER_GENERATIONS, (name, generation))

    def drop(self, name: str) -> None:
        with self._store.transaction() as conn:
            row = conn.execute(sql.SELECT_ROW, (name,)).fetchone()
            if row is not None:
                conn.execute(sql.DELETE_GENERATION, (projection_of(name), row[2]))
                conn.execute(sql.DELETE_ROW, (name,))


def _first_generation(conn: sqlite3.Connection, name: str) -> int:
    """A new row's generation: 1 for a live projector; above the live one for a build."""
    live_name = projection_of(name)
    if live_name == name:
        return 1
    live = conn.execute(
        "SELECT generation FROM ledger_projectors WHERE name = ?", (live_name,)
    ).fetchone()
    return 1 if live is None else int(live[0]) + 1
