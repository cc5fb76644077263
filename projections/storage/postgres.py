"""Read models in the ledger's Postgres schema, committed with the projector's cursor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger.errors import AccessDenied
from ledger.records import LogCursor, RunHead
from ledger.store.base import EventStore
from ledger.store.postgres import PostgresStore
from ledger.store.postgres_schema import hand_to_owner
from projections.storage import postgres_sql as sql
from projections.storage.base import (
    DocKey,
    Load,
    ProjectorRow,
    SQLStorage,
    Stored,
    Write,
    projection_of,
    stored_of,
)


def _ready(conn: Any) -> bool:
    row = conn.execute(sql.SCHEMA_READY).fetchone()
    return bool(row and row[0])


def _make_tables(conn: Any, schema: str) -> None:
    """Make the read models' tables (or add what an earlier release's lack).

    Only a login that may act as the owner of the store's tables may: a table an app
    login made (where the schema lets any role create, as ``public`` did before
    Postgres 15) would be that login's, and its owner reads every tenant's rows past
    row-level security. A table someone else made is refused, naming it: its maker may
    have given it triggers, rules or policies that would run for the runner."""
    found = conn.execute(sql.MAY_MAKE).fetchone()
    if not (found and found[0]):
        raise AccessDenied(
            f"the read models' tables in schema {schema!r} are missing or not as the ledger"
            " makes them, and this login may not make them: run `ledger init` once as"
            " ledger_owner or a superuser, then connect again"
        )
    hand_to_owner(conn, schema)  # runners log in as its members
    foreign = conn.execute(sql.FOREIGN_TABLES, {"tables": list(sql.TABLES)}).fetchall()
    if foreign:
        owned = ", ".join(f"{table} (owned by {owner})" for table, owner in foreign)
        raise AccessDenied(
            f"tables of the read models in schema {schema!r} were made by a role that does"
            f" not own the ledger: {owned}; drop them (as their owner or a superuser) and"
            " run `ledger init` again; keep the app role from creating in that schema"
            f" (REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC)"
        )
    for statement in sql.SCHEMA:
        conn.execute(statement)
    hand_to_owner(conn, schema)


class PostgresStorage(SQLStorage):
    """Documents and projector rows in tables beside ``ledger_events``.

    Batches travel as binary arrays (``%(name)b``): documents are sent and received as
    raw bytes, never hex-escaped text.
    """

    statements = sql.STATEMENTS

    def __init__(self, store: PostgresStore) -> None:
        super().__init__(store)
        self._pg = store
        with store.transaction() as conn:
            if not _ready(conn):  # an app login may not run DDL: only when needed
                conn.execute(sql.SCHEMA_LOCK)
                # Again under the lock: those who waited on it while the first creator
                # built the tables must not run the DDL again, whose exclusive locks
                # deadlock with readers that already use the tables.
                if not _ready(conn):
                    _make_tables(conn, store.schema)
            found = conn.execute(sql.HAS_LZ4).fetchone()
        self._lz4 = bool(found and found[0])

    def get_with_runs(
        self,
        store: EventStore,
        name: str,
        user_id: str,
        session_id: str,
        key: str,
        last_pages: int | None = None,
    ) -> tuple[list[RunHead], Stored | None]:
        if store is not self._pg:
            return super().get_with_runs(store, name, user_id, session_id, key, last_pages)
        params = {"name": name, "user_id": user_id, "key": key, "pages": last_pages}
        runs, rows = self._pg.list_runs_and_read(user_id, session_id, sql.SELECT_DOC, params)
        return runs, stored_of(rows)

    def _row(self, values: Sequence[Any]) -> ProjectorRow:
        name, version, generation, tx_id, position, owner, lease_until, updated_at, skipped = values
        cursor = LogCursor(int(tx_id), int(position))
        return ProjectorRow(
            name, version, generation, cursor, owner, lease_until, updated_at, int(skipped)
        )

    def _lease(self, ttl: float) -> dict[str, Any]:
        return {"ttl": ttl}  # leases run on the server's clock

    def _run(self, conn: Any, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        return conn.execute(statement, params, prepare=True)

    def _limit(self, count: int | None) -> Any:
        return count  # LIMIT NULL: no limit

    def _numbers(self, numbers: Sequence[int]) -> Any:
        return list(numbers)

    def load_many(self, loads: Sequence[Load]) -> list[dict[DocKey, bytes]]:
        params: dict[str, list[Any]] = {
            "projections": [],
            "generations": [],
            "which": [],
            "user_ids": [],
            "keys": [],
        }
        for i, load in enumerate(loads, 1):
            params["projections"].append(projection_of(load.name))
            params["generations"].append(load.generation)
            params["which"] += [i] * len(load.keys)
            params["user_ids"] += [u for u, _ in load.keys]
            params["keys"] += [k for _, k in load.keys]
        found: list[dict[DocKey, bytes]] = [{} for _ in loads]
        if not params["keys"]:
            return found
        with self._store.connection() as conn:
            cur = conn.cursor(binary=True)
            for i, user_id, key, doc in cur.execute(sql.LOAD_DOCS, params, prepare=True):
                found[i - 1][(user_id, key)] = doc
        return found

    def commit_many(self, owner: str, writes: Sequence[Write], ttl: float) -> list[bool]:
        if not writes:
            return []
        which: list[int] = []
        user_ids: list[str] = []
        keys: list[str] = []
        docs: list[bytes] = []
        paged: dict[str, list[Any]] = {
            "page_which": [],
            "page_user_ids": [],
            "page_keys": [],
            "page_numbers": [],
            "page_items": [],
        }
        for i, write in enumerate(writes, 1):
            which += [i] * len(write.docs)
            user_ids += [u for u, _ in write.docs]
            keys += [k for _, k in write.docs]
            docs += write.docs.values()
            for (user_id, key, number), items in write.pages.items():
                paged["page_which"].append(i)
                paged["page_user_ids"].append(user_id)
                paged["page_keys"].append(key)
                paged["page_numbers"].append(number)
                paged["page_items"].append(items)
        params = {
            "owner": owner,
            "ttl": ttl,
            "names": [w.name for w in writes],
            "projections": [projection_of(w.name) for w in writes],
            "generations": [w.generation for w in writes],
            "tx_ids": [w.expected.tx_id for w in writes],
            "positions": [w.expected.position for w in writes],
            "new_tx_ids": [w.new.tx_id for w in writes],
            "new_positions": [w.new.position for w in writes],
            "skipped": [w.skipped for w in writes],
            "which": which,
            "user_ids": user_ids,
            "keys": keys,
            "docs": docs,
            **paged,
        }
        # One statement (after a setting for its implicit transaction, pipelined): atomic
        # on its own, and no transaction is open while Python builds the parameters (an
        # open one would hold back the log horizon of every reader).
        with self._store.connection() as conn:
            cur = conn.cursor(binary=True)
            with conn.pipeline():
                if self._lz4:
                    conn.execute(sql.USE_LZ4, prepare=True)
                cur.execute(sql.COMMIT_WRITES, params, prepare=True)
            moved = {i for (i,) in cur.fetchall()}
        return [i in moved for i in range(1, len(writes) + 1)]
