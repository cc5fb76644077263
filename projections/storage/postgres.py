"""Read models in the ledger's Postgres schema, committed with the projector's cursor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.records import LogCursor
from ledger.store.postgres import PostgresStore
from projections.storage import postgres_sql as sql
from projections.storage.base import DocKey, ProjectorRow, ReadModelStorage, projection_of


def _row(values: tuple[Any, ...]) -> ProjectorRow:
    name, version, generation, tx_id, position, owner, lease_until, updated_at = values
    return ProjectorRow(
        name,
        version,
        generation,
        LogCursor(int(tx_id), int(position)),
        owner,
        lease_until,
        updated_at,
    )


class PostgresStorage(ReadModelStorage):
    """Documents and projector rows in tables beside ``ledger_events``."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        with store.transaction() as conn:
            conn.execute(sql.SCHEMA_LOCK)
            for statement in sql.SCHEMA:
                conn.execute(statement)

    def projector(self, name: str) -> ProjectorRow | None:
        with self._store.connection() as conn:
            found = conn.execute(sql.SELECT_ROW, {"name": name}).fetchone()
        return None if found is None else _row(found)

    def projectors(self) -> list[ProjectorRow]:
        with self._store.connection() as conn:
            return [_row(r) for r in conn.execute(sql.SELECT_ROWS).fetchall()]

    def claim(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        with self._store.transaction() as conn:
            conn.execute(
                sql.CREATE_ROW, {"name": name, "version": version, "live": projection_of(name)}
            )
            row = conn.execute(sql.CLAIM, {"name": name, "owner": owner, "ttl": ttl}).fetchone()
        return None if row is None else _row(row)

    def release(self, name: str, owner: str) -> None:
        with self._store.connection() as conn:
            conn.execute(sql.RELEASE, {"name": name, "owner": owner})

    def load(self, name: str, generation: int, keys: list[DocKey]) -> dict[DocKey, bytes]:
        if not keys:
            return {}
        with self._store.connection() as conn:
            rows = conn.execute(
                sql.LOAD_DOCS,
                {
                    "projection": projection_of(name),
                    "generation": generation,
                    "user_ids": [u for u, _ in keys],
                    "keys": [k for _, k in keys],
                },
                prepare=True,
            ).fetchall()
        return {(u, k): bytes(d) for u, k, d in rows}

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
        with self._store.transaction() as conn:
            moved = conn.execute(
                sql.ADVANCE,
                {
                    "name": name,
                    "generation": generation,
                    "owner": owner,
                    "ttl": ttl,
                    "tx_id": expected.tx_id,
                    "position": expected.position,
                    "new_tx": new.tx_id,
                    "new_pos": new.position,
                },
                prepare=True,
            ).rowcount
            if moved != 1:
                return False
            if docs:
                conn.execute(
                    sql.UPSERT_DOCS,
                    {
                        "projection": projection_of(name),
                        "generation": generation,
                        "user_ids": [u for u, _ in docs],
                        "keys": [k for _, k in docs],
                        "docs": list(docs.values()),
                    },
                    prepare=True,
                )
        return True

    def get(self, name: str, user_id: str, key: str) -> bytes | None:
        with self._store.connection() as conn:
            row = conn.execute(
                sql.SELECT_DOC, {"user_id": user_id, "name": name, "key": key}, prepare=True
            ).fetchone()
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
                },
            )
            conn.execute(sql.DELETE_ROW, {"name": build})
            conn.execute(sql.DELETE_OTHER_GENERATIONS, {"name": name, "generation": generation})

    def drop(self, name: str) -> None:
        with self._store.transaction() as conn:
            row = conn.execute(sql.SELECT_ROW, {"name": name}).fetchone()
            if row is not None:
                conn.execute(
                    sql.DELETE_GENERATION, {"projection": projection_of(name), "generation": row[2]}
                )
                conn.execute(sql.DELETE_ROW, {"name": name})
