"""The API's append: one call of ``ledger_append``, sent below psycopg's cursor.

Why not ``Cursor.execute``: every turn an agent records is one call of this one
statement, and the cursor spends ~25 us of client CPU a call beyond what the round trip
needs (converting the query, a Transformer and a dumper lookup per parameter, the
prepared-statement bookkeeping, wrapping the result): 104 -> 80 us of CPU and 461 -> 425
us of wall time a call, one writer, same run. The statement never changes and its
parameters have fixed types, so here it is prepared once per connection under a name
of its own and sent with libpq's ``PQsendQueryPrepared`` through psycopg's ``pq`` layer,
its parameters already encoded (``pg_arrays``). Waiting, errors and the connection's
state stay psycopg's: ``Connection.wait``, ``errors.error_from_result`` and the
connection's lock, so the connection is the pool's as before and after.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.generators import execute
from psycopg.pq import ExecStatus

from ledger.records import RunAppend
from ledger.store import pg_arrays
from ledger.store import postgres_sql as q

#: The statement's name on the server (versioned with APPEND_PARAMS: a different
#: signature gets a different name, never a stale plan).
_NAME = f"ledger_append_{len(q.APPEND_PARAMS)}".encode()

#: ``SELECT ledger_append($1::text, ...)``: the casts give every parameter its type.
_SQL = "SELECT ledger_append({})".format(
    ", ".join(f"${i}::{type_}" for i, (_, type_) in enumerate(q.APPEND_PARAMS, 1))
).encode()

#: Text (0) for text parameters, binary (1) for the rest, in APPEND_PARAMS order.
_FORMATS = [0 if type_ == "text" else 1 for _, type_ in q.APPEND_PARAMS]

#: The connection attribute that says ``_NAME`` is prepared on it.
_PREPARED = "_ledger_append_prepared"

_bigint = struct.Struct(">q").pack


def _text(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def parameters(role: str | None, tenant: str | None, item: RunAppend) -> list[bytes | None]:
    """The wire values of ``ledger_append``'s parameters for ``item``, in order."""
    return [
        _text(role),
        _text(tenant),
        item.user_id.encode(),
        item.run_id.encode(),
        item.session_id.encode(),
        *pg_arrays.binary_event_columns(item.events),
        _bigint(item.expected_version),
        item.expected_hash,
        _text(item.key_id),
        b"\x01" if item.starts_run else b"\x00",
    ]


def call(conn: psycopg.Connection[Any], params: Sequence[bytes | None]) -> int:
    """Run ``ledger_append`` on ``conn`` (autocommit: its own transaction); return how
    many events it inserted. Raises psycopg's error for whatever the server refused."""
    try:
        return _call(conn, params)
    except pg_errors.InvalidSqlStatementName:
        # Deallocated behind our back (DEALLOCATE ALL / DISCARD ALL on this
        # connection): prepare it again, once.
        setattr(conn, _PREPARED, False)
        return _call(conn, params)


def _call(conn: psycopg.Connection[Any], params: Sequence[bytes | None]) -> int:
    pgconn = conn.pgconn
    with conn.lock:
        if not getattr(conn, _PREPARED, False):
            pgconn.send_prepare(_NAME, _SQL)
            _result(conn, conn.wait(execute(pgconn)), ExecStatus.COMMAND_OK)
            setattr(conn, _PREPARED, True)
        pgconn.send_query_prepared(_NAME, params, _FORMATS)
        result = _result(conn, conn.wait(execute(pgconn)), ExecStatus.TUPLES_OK)
    value = result.get_value(0, 0)
    return 0 if value is None else int(value)


def _result(conn: psycopg.Connection[Any], results: Sequence[Any], expected: ExecStatus) -> Any:
    result = results[-1]
    if result.status != expected:
        raise pg_errors.error_from_result(result, encoding=conn.info.encoding)
    return result
