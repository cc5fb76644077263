"""The Postgres store: the production backend (psycopg 3, a connection pool, one schema).

Why our own recorder rather than eventsourcing's ``PostgresApplicationRecorder``: the
library keeps its notification ids gap-free and in commit order by taking
``LOCK TABLE ... IN EXCLUSIVE MODE`` on every insert, which serialises all writers of
the log; its alternative path (inserting through a database function without the lock)
can hand a reader a notification id beyond an event that has not committed yet, which
that reader then skips for good. Here writers never wait for each other unless they
write the same run: each row records its writer's ``pg_current_xact_id()`` and the log
is read in ``(tx_id, position)`` order, only below ``pg_snapshot_xmin`` of the current
snapshot (DESIGN.md invariant 6), so no committed event can appear behind a cursor a
reader has passed. ``ledger.recorder`` adapts this store to the library's interfaces.

Write path: an append of one run is ONE prepared statement with binary parameters
(``INSERT ... SELECT FROM unnest(...)``) run in autocommit; its optimistic check (the
run's head, or the run's registration for a new run) is part of that statement and is
decided before any position is drawn. Only when nothing was inserted does a second
query find out why. The API's appends (nothing returned) call the ``ledger_append``
function, which sets the tenant scope and runs that statement: one round trip and one
socket wait a turn, sent below psycopg's cursor (``pg_append``). Several runs and/or
a tracking row (or a ``before_commit`` test hook) go in one explicit transaction,
pipelined.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import AdaptersMap, Buffer, Loader
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import Format
from psycopg.rows import RowMaker, tuple_row
from psycopg_pool import PoolTimeout

from ledger import forksafe
from ledger.chain import GENESIS
from ledger.errors import (
    AccessDenied,
    ConcurrencyError,
    InvalidEvent,
    InvalidSetting,
    KeyErased,
    NotErasable,
    NotFound,
    RunIdTaken,
    StoreUnavailable,
)
from ledger.records import (
    AuditRow,
    LogCursor,
    LogLag,
    Record,
    RunAppend,
    RunHead,
    Tracking,
)
from ledger.records import stored as record_of
from ledger.store import pg_append, pg_arrays
from ledger.store import postgres_sql as q
from ledger.store.base import EventStore, RecordConflict, check_head, check_starts
from ledger.store.pg_notify import NoticeThrottle
from ledger.store.pg_pool import LifoPool
from ledger.store.postgres_schema import (
    APP_ROLE,
    AUDITOR_ROLE,
    NOTIFY_CHANNEL,
    acting_role,
    check_schema_name,
)
from ledger.store.postgres_schema import migrate as migrate_schema

_XID8_OID = 5069
_MAX_BIGINT = 2**63 - 1
#: Rows a batch of the audit scan's server-side cursor brings.
_AUDIT_BATCH = 10_000


class _Xid8Loader(Loader):
    def load(self, data: Buffer) -> int:
        return int(bytes(data))


class _Xid8BinaryLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> int:
        return int.from_bytes(data, "big")


_ADAPTERS = AdaptersMap(psycopg.adapters)
_ADAPTERS.register_loader(_XID8_OID, _Xid8Loader)
_ADAPTERS.register_loader(_XID8_OID, _Xid8BinaryLoader)
pg_arrays.register(_ADAPTERS)


def _record_rows(cursor: Any) -> RowMaker[Record]:
    return lambda values: Record(*values)


def _audit_rows(cursor: Any) -> RowMaker[AuditRow]:
    return lambda v: AuditRow(v[0], v[2], v[14], v[15], Record(*v[:14]))


def _head_rows(cursor: Any) -> RowMaker[RunHead]:
    return _head


def _head(values: Sequence[Any]) -> RunHead:
    user_id, session_id, run_id, version, head_hash, created_at, type_, tx_id, position = values
    return RunHead(
        user_id,
        session_id,
        run_id,
        version,
        head_hash,
        created_at,
        type_,
        None if tx_id is None else LogCursor(int(tx_id), position),
    )


# SQLSTATE classes that mean "the server is not there for us" rather than "your request".
_UNAVAILABLE = ("08", "53", "57P", "58")


@contextmanager
def _translated() -> Iterator[None]:
    """Turn psycopg errors into the ledger's errors (by SQLSTATE)."""
    try:
        yield
    except PoolTimeout as exc:
        raise StoreUnavailable(f"no Postgres connection available: {exc}") from exc
    except (
        pg_errors.UniqueViolation,
        pg_errors.SerializationFailure,
        pg_errors.DeadlockDetected,
    ) as exc:
        raise ConcurrencyError(f"concurrent write, nothing was written: {exc}") from exc
    except psycopg.DataError as exc:
        raise InvalidEvent(f"rejected by Postgres: {exc}") from exc
    except pg_errors.InsufficientPrivilege as exc:
        raise AccessDenied(
            f"Postgres refused: {exc.diag.message_primary or exc} (log in as a role granted "
            "ledger_app for tenant work, ledger_auditor for cross-tenant reads, "
            "ledger_owner for migrations, projector runners and forget)"
        ) from exc
    except psycopg.Error as exc:
        state = exc.sqlstate
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
            state is None or state.startswith(_UNAVAILABLE)
        ):
            raise StoreUnavailable(f"Postgres is unavailable: {exc}", in_doubt=True) from exc
        raise


#: The per-event parameters of an append, in ``ledger_append``'s order.
_ARRAYS = tuple(name for name, type_ in q.APPEND_PARAMS if type_.endswith("[]"))


def _event_params(item: RunAppend) -> dict[str, Any]:
    return {
        "user_id": item.user_id,
        "session_id": item.session_id,
        "run_id": item.run_id,
        **dict(zip(_ARRAYS, pg_arrays.event_columns(item.events), strict=True)),
        "expected_version": item.expected_version,
        "expected_hash": item.expected_hash,
        "key_id": item.key_id,
    }


def _records(item: RunAppend, rows: Sequence[tuple[Any, ...]]) -> list[Record]:
    placed = {int(r[0]): r for r in rows}
    out: list[Record] = []
    for e in item.events:
        _, position, tx_id, recorded_at = placed[e.version]
        out.append(record_of(item, e, position, tx_id, recorded_at))
    return out


class PostgresStore(EventStore):
    """Events, runs and tracking positions in Postgres tables of one schema."""

    backend = "postgres"

    #: At most one notification of appends per this many seconds from this store, the
    #: last append of a burst included (see ``pg_notify``).
    notify_interval = 0.1

    #: The role reads across tenants (``user_id=None``) run as: None is the login role
    #: (projector runners, migrations); ``for_auditor()`` views run everything as
    #: ``ledger_auditor``.
    _cross_role: str | None = None

    #: The ledger role whose policies hold for the login without a role switch (see
    #: ``postgres_schema.acting_role``): statements as that role skip ``SET ROLE``.
    acts_as: str | None = None

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: int = 10,
        pool_timeout: float = 30.0,
        forget_timeout: float = 60.0,
    ) -> None:
        self.schema = check_schema_name(schema or "public")
        self.forget_timeout = forget_timeout
        params = conninfo_to_dict(conninfo)
        options = str(params.get("options") or "")
        options = f"{options} -c search_path={self.schema} -c TimeZone=UTC".strip()
        params.update(options=options)
        params.setdefault("connect_timeout", connect_timeout)
        self._conninfo = make_conninfo("", **params)
        self._notices = NoticeThrottle(self._send_notice)
        self._notice = {"channel": NOTIFY_CHANNEL, "schema": self.schema}
        self.migrate()
        self._pool_settings = {"min_size": min_size, "max_size": max_size, "timeout": pool_timeout}
        self._origin: PostgresStore | None = None  # the store an auditor view shares a pool with
        self._pool = self._open_pool()

    def _open_pool(self) -> LifoPool:
        pool = LifoPool(
            self._conninfo,
            open=False,
            kwargs={"autocommit": True, "context": _ADAPTERS},
            name=f"ledger-{self.schema}",
            **self._pool_settings,
        )
        with _translated():
            pool.open(wait=False)
        self._pid = os.getpid()
        return pool

    def _after_fork(self) -> None:
        """In a child process forked with this store open (a preloading web server, a
        forking worker pool): a pool of its own.

        The inherited pool's connections are the parent's sockets: a statement sent on
        one interleaves with the parent's (replies read by the wrong process), and
        closing one terminates the parent's session. So it is abandoned untouched (its
        ``__del__`` told it is closed already, so it stops nothing; psycopg does not
        finish a connection in a process other than the one that opened it), and a new
        pool and notice throttle (whose lock another thread may have held at the fork)
        take over. An auditor view follows the store it was made from."""
        origin = self._origin or self
        with _fork_lock:
            if origin._pid != os.getpid():
                origin._pool._closed = True  # type: ignore[attr-defined]
                origin._pool = origin._open_pool()
                origin._notices = NoticeThrottle(origin._send_notice)
        self._pool, self._notices, self._pid = origin._pool, origin._notices, origin._pid

    @property
    def conninfo(self) -> str:
        """The libpq connection string this store uses (search_path included)."""
        return self._conninfo

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> PostgresStore:
        """A store for ``postgresql://...?schema=name&pool_timeout=seconds``; other
        parameters go to psycopg. ``pool_timeout`` (default 30): how long a call waits
        for a connection (the server down, or every connection busy) before
        ``StoreUnavailable``. ``forget_timeout`` (default 60): how long ``forget`` waits
        for the transactions running when it destroyed the keys (``destroy_keys``)."""
        conninfo, own = _own_params(url)
        for name in ("pool_timeout", "forget_timeout"):
            for value in own.get(name, ()):
                kwargs[name] = _seconds(name, value)
        return cls(conninfo, schema=_first(own, "schema"), **kwargs)

    def migrate(self) -> int:
        """Create the schema and tables if missing; return how many steps were applied.

        Also learns which ledger role the login already acts as (``acts_as``)."""
        with _translated(), psycopg.connect(self._conninfo, autocommit=True) as conn:
            applied = migrate_schema(conn, self.schema)
            self.acts_as = acting_role(conn, self.schema)
            return applied

    def for_auditor(self) -> PostgresStore:
        """A view of this store (same pool) whose cross-tenant reads run as the auditor
        role: it reads every tenant and the database refuses any write it tries."""
        view = copy.copy(self)
        view._origin = self._origin or self
        view._cross_role = AUDITOR_ROLE
        # Whatever was built on this store for its own role (read-model storage) is
        # built again on the view, so it reads as the auditor too.
        view.__dict__.pop("_read_model_storage", None)
        return view

    def _scope(self, user_id: str | None) -> dict[str, str | None] | None:
        """The role and tenant a statement for ``user_id`` must run under (None: as is).

        An auditor view reads everything as the auditor, also when a query names one
        tenant (the query narrows it); anything else about a tenant runs as the app role
        with that tenant set."""
        if self._cross_role is not None:
            return {"role": self._switch_to(self._cross_role), "user_id": ""}
        if user_id is not None:
            return {"role": self._switch_to(APP_ROLE), "user_id": user_id}
        return None

    def _switch_to(self, role: str) -> str | None:
        """``role``, or None when the login already acts as it (no switch needed)."""
        return None if role == self.acts_as else role

    def _enter_scope(self, conn: psycopg.Connection[Any], user_id: str | None) -> None:
        """Switch ``conn``'s current transaction to ``user_id``'s scope (see ``_scope``)."""
        scope = self._scope(user_id)
        if scope is not None:
            conn.execute(q.SET_SCOPE, scope, prepare=True)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        # getconn/putconn rather than pool.connection(): that one also enters the
        # connection's own block, whose commit is a no-op in autocommit but still a
        # locked wait; putconn rolls back whatever a failure left open. ~8 us of CPU an
        # append (interleaved A/B, one writer).
        if self._pid != os.getpid():
            self._after_fork()
        with _translated():
            conn = self._pool.getconn()
            try:
                yield conn
            finally:
                self._pool.putconn(conn)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction: commits when the block ends.

        For the read side, which keeps its tables in the same database and must commit
        read-model rows and its position together.
        """
        with self._conn() as conn, conn.transaction():
            yield conn

    def read_as(
        self, user_id: str | None, statement: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of one read ``statement`` run as ``user_id``'s tenant (the app role,
        row-level security on), or across tenants as this view's role; one round trip.

        For reads of tenant data kept beside the log (read models): the database, not
        the query's WHERE clause, keeps them to one tenant."""
        rows: list[tuple[Any, ...]] = self._fetch(statement, params, tuple_row, user_id)
        return rows

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection (search_path set to the ledger's schema)."""
        with self._conn() as conn:
            yield conn

    # -- writes ------------------------------------------------------------------
    def append(
        self,
        appends: Sequence[RunAppend],
        *,
        tracking: Tracking | None = None,
        returning: bool = True,
    ) -> list[Record]:
        check_starts(appends)
        if (
            len(appends) == 1
            and tracking is None
            and appends[0].events
            and self.before_commit is None
        ):
            if returning:
                stored = self._append_one(appends[0])
            else:
                self._append_quiet(appends[0])
                stored = []
        elif not appends and tracking is None:
            return []
        else:
            stored = self._append_many(appends, tracking)
        if any(item.events for item in appends):
            if self._notices.due(self.notify_interval):
                self._send_notice()
            else:
                self._notices.later(self.notify_interval)
        return stored

    def _send_notice(self) -> None:
        """Tell live readers this schema has new events (in a transaction of its own)."""
        with self._conn() as conn:
            conn.execute(q.NOTIFY, self._notice, prepare=True)

    def _append_one(self, item: RunAppend) -> list[Record]:
        statement = q.START_RUN if item.starts_run else q.APPEND_RUN
        with self._conn() as conn:
            cur = conn.cursor(binary=True)
            with conn.pipeline():
                self._enter_scope(conn, item.user_id)
                cur.execute(statement, _event_params(item), prepare=True)
            rows = cur.fetchall()
            if len(rows) != len(item.events):
                self._explain(conn, item)
        return _records(item, rows)

    def _append_quiet(self, item: RunAppend) -> None:
        """The hot path (one run, nothing returned): one call of ``ledger_append``,
        which sets the scope and inserts in a single statement (``pg_append``)."""
        scope = self._scope(item.user_id)
        role, tenant = (None, None) if scope is None else (scope["role"], scope["user_id"])
        with self._conn() as conn:
            inserted = pg_append.call(conn, pg_append.parameters(role, tenant, item))
            if inserted != len(item.events):
                self._explain(conn, item)

    def _append_many(self, appends: Sequence[RunAppend], tracking: Tracking | None) -> list[Record]:
        with self._conn() as conn, conn.pipeline() as pipeline, conn.transaction():
            cursors: list[psycopg.Cursor[Any]] = []
            for item in appends:
                self._enter_scope(conn, item.user_id)
                cur = conn.cursor(binary=True)
                if item.events:
                    statement = q.START_RUN if item.starts_run else q.APPEND_RUN
                    cur.execute(statement, _event_params(item), prepare=True)
                else:  # nothing to store, only the head to check
                    cur.execute(q.RUN_STATE, {"run_id": item.run_id}, prepare=True)
                cursors.append(cur)
            tracking_cur = conn.cursor()
            if tracking is not None:
                self._enter_scope(conn, tracking.user_id)
                tracking_cur.execute(q.UPSERT_TRACKING, tracking._asdict(), prepare=True)
            pipeline.sync()
            stored: list[Record] = []
            for item, cur in zip(appends, cursors, strict=True):
                if item.events:
                    rows = cur.fetchall()
                    if len(rows) != len(item.events):
                        self._explain(conn, item)
                    stored.extend(_records(item, rows))
                else:
                    self._judge(item, cur.fetchone())
            if tracking is not None and tracking_cur.rowcount != 1:
                last = self.max_tracking(tracking.user_id, tracking.name)
                raise RecordConflict(f"tracking {tracking} not above {last}")
            if self.before_commit is not None:
                self.before_commit()
        return stored

    def _explain(self, conn: psycopg.Connection[Any], item: RunAppend) -> NoReturn:
        """Raise the reason ``item`` inserted nothing (seen from inside its transaction,
        and as its tenant: another tenant's run is invisible, like a missing one)."""
        cur = conn.cursor(binary=True)
        key = conn.cursor()
        with conn.pipeline():
            self._enter_scope(conn, item.user_id)
            cur.execute(q.RUN_STATE, {"run_id": item.run_id}, prepare=True)
            key.execute(q.KEY_STATE, {"key_id": item.key_id}, prepare=True)
        if item.key_id is not None and key.fetchone() != (True,):
            raise KeyErased(f"key {item.key_id!r} of this user was destroyed; nothing written")
        self._judge(item, cur.fetchone())
        raise ConcurrencyError(f"run {item.run_id!r} changed concurrently; nothing written")

    @staticmethod
    def _judge(item: RunAppend, state: tuple[Any, ...] | None) -> None:
        """Raise the store-contract error for ``item`` given its run's (owner, head)."""
        if item.starts_run:
            if state is None or state[0] != item.user_id:
                # The id is taken but not visible to this tenant: someone else's run.
                raise RunIdTaken(f"run_id {item.run_id!r} is already in use")
            raise ConcurrencyError(f"run {item.run_id!r} already exists")
        if state is None or state[0] != item.user_id:
            raise NotFound(f"run {item.run_id!r} not found")
        version = 0 if state[1] is None else int(state[1])
        head_hash = GENESIS if state[2] is None else bytes(state[2])
        check_head(item, version, head_hash, state[3])

    def insert_tracking(self, tracking: Tracking) -> None:
        self._append_many([], tracking)

    # -- reads -------------------------------------------------------------------
    def _fetch(
        self,
        statement: str,
        params: dict[str, Any],
        rows: Callable[[Any], RowMaker[Any]],
        user_id: str | None = None,
    ) -> list[Any]:
        """Rows of ``statement``, run as ``user_id``'s tenant (or across tenants)."""
        return self._fetch_all([(statement, params, rows)], user_id)[0]

    def _fetch_all(
        self,
        reads: Sequence[tuple[str, dict[str, Any], Callable[[Any], RowMaker[Any]]]],
        user_id: str | None = None,
    ) -> list[list[Any]]:
        """The rows of each ``(statement, params, row factory)`` of ``reads``, all run as
        ``user_id``'s tenant (or across tenants) in one round trip.

        Reads change nothing, so one that loses its connection (a server restart under a
        connection used too recently for the pool to check it) is run once more on
        another: the pool then checks every idle connection before handing it out."""
        try:
            return self._fetch_once(reads, user_id)
        except StoreUnavailable as exc:
            if not isinstance(exc.__cause__, psycopg.OperationalError):
                raise
        return self._fetch_once(reads, user_id)

    def _fetch_once(
        self,
        reads: Sequence[tuple[str, dict[str, Any], Callable[[Any], RowMaker[Any]]]],
        user_id: str | None,
    ) -> list[list[Any]]:
        scope = self._scope(user_id)
        with self._conn() as conn:
            cursors = [conn.cursor(binary=True, row_factory=rows) for _, _, rows in reads]
            if scope is None and len(reads) == 1:
                cursors[0].execute(reads[0][0], reads[0][1], prepare=True)
            else:
                with conn.pipeline():
                    if scope is not None:
                        conn.execute(q.SET_SCOPE, scope, prepare=True)
                    for cur, (statement, params, _) in zip(cursors, reads, strict=True):
                        cur.execute(statement, params, prepare=True)
            return [cur.fetchall() for cur in cursors]

    def run_head(self, user_id: str | None, run_id: str) -> RunHead | None:
        heads: list[RunHead] = self._fetch(
            q.RUN_HEAD,
            {"user_id": user_id, "run_id": run_id, "genesis": GENESIS},
            _head_rows,
            user_id,
        )
        return heads[0] if heads else None

    def read_run(
        self,
        user_id: str | None,
        run_id: str,
        *,
        after_version: int = 0,
        upto_version: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[Record]:
        if user_id is None:
            statement = q.READ_ANY_RUN_DESC if desc else q.READ_ANY_RUN_ASC
        else:
            statement = q.READ_RUN_DESC if desc else q.READ_RUN_ASC
        return self._fetch(
            statement,
            {
                "user_id": user_id,
                "run_id": run_id,
                "after_version": after_version,
                "upto_version": _MAX_BIGINT if upto_version is None else upto_version,
                "limit": limit,
            },
            _record_rows,
            user_id,
        )

    def read_log(
        self, after: LogCursor, limit: int = 1000, *, user_id: str | None = None
    ) -> list[Record]:
        params = {
            "tx_id": str(after.tx_id),
            "position": after.position,
            "limit": limit,
            "user_id": user_id,
        }
        statement = q.READ_LOG if user_id is None else q.READ_LOG_TENANT
        return self._fetch(statement, params, _record_rows, user_id)

    def settle(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._conn() as conn:
            row = conn.execute(q.NEXT_XID).fetchone()
            xid = None if row is None else row[0]
            while True:
                passed = conn.execute(q.HORIZON_PASSED, {"xid": xid}, prepare=True).fetchone()
                if passed is not None and passed[0]:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.005)

    def lag(self, after: LogCursor) -> LogLag:
        # In this view's cross-tenant scope (the auditor's, for an auditor view): as the
        # app role, row-level security would show an empty log and "lag 0".
        counted, heads = self._fetch_all(
            [
                (q.LAG, {"tx_id": str(after.tx_id), "position": after.position}, tuple_row),
                (q.LOG_HEAD, {}, tuple_row),
            ]
        )
        count, oldest = counted[0] if counted else (0, None)
        head = heads[0] if heads else None
        return LogLag(
            None if head is None else LogCursor(int(head[0]), int(head[1])), int(count), oldest
        )

    def list_runs(self, user_id: str | None = None, session_id: str | None = None) -> list[RunHead]:
        return self._fetch(
            q.LIST_RUNS,
            {"user_id": user_id, "session_id": session_id, "genesis": GENESIS},
            _head_rows,
            user_id,
        )

    def list_runs_and_read(
        self, user_id: str, session_id: str, statement: str, params: dict[str, Any]
    ) -> tuple[list[RunHead], list[tuple[Any, ...]]]:
        """``list_runs(user_id, session_id)`` and the rows of one more read as that
        tenant (``read_as``), in ONE round trip: what an agent's conversation read
        costs on every model call."""
        runs = {"user_id": user_id, "session_id": session_id, "genesis": GENESIS}
        heads, rows = self._fetch_all(
            [(q.LIST_RUNS, runs, _head_rows), (statement, params, tuple_row)], user_id
        )
        return heads, rows

    def audit_scan(
        self, user_id: str | None = None, run_id: str | None = None
    ) -> Iterator[AuditRow]:
        params = {"user_id": user_id, "run_id": run_id}
        with self._conn() as conn, conn.transaction():
            conn.execute(q.AUDIT_SNAPSHOT)  # the statements below see the same rows
            self._enter_scope(conn, user_id)
            if run_id is not None and user_id is None:  # its owner's: a primary key range
                owner = conn.execute(q.RUN_OWNER, params).fetchone()
                params["user_id"] = None if owner is None else owner[0]
            # A server-side cursor: the rows arrive in batches, never the whole store.
            with conn.cursor("ledger_audit_scan", binary=True, row_factory=_audit_rows) as cur:
                cur.execute(q.AUDIT_EVENTS, params)
                # fetchmany, not iteration: iterating costs a Python call per row.
                while batch := cur.fetchmany(_AUDIT_BATCH):
                    yield from batch
            with conn.cursor(binary=True) as empty:
                empty.execute(q.AUDIT_EMPTY_RUNS, params)
                for owner, run, session in empty:
                    yield AuditRow(owner, run, owner, session, None)

    def read_notifications(
        self,
        user_id: str,
        start: int | None,
        limit: int,
        stop: int | None = None,
        types: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Record]:
        low = 0 if start is None else (start if inclusive_of_start else start + 1)
        return self._fetch(
            q.READ_NOTIFICATIONS,
            {"user_id": user_id, "low": low, "stop": stop, "types": list(types), "limit": limit},
            _record_rows,
            user_id,
        )

    def max_notification_id(self, user_id: str) -> int | None:
        rows = self._fetch(q.MAX_NOTIFICATION_ID, {"user_id": user_id}, tuple_row, user_id)
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def max_position(self) -> int | None:
        with self._conn() as conn:
            row = conn.execute(q.MAX_POSITION, prepare=True).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def max_tracking(self, user_id: str, name: str) -> int | None:
        rows = self._fetch(q.MAX_TRACKING, {"user_id": user_id, "name": name}, tuple_row, user_id)
        return int(rows[0][0]) if rows else None

    # -- keys -----------------------------------------------------------------------
    # Read and created as the user's tenant; destroyed by the login role (the owner).

    def _one(self, statement: str, params: dict[str, Any], user_id: str | None) -> Any:
        rows = self._fetch(statement, params, lambda cursor: lambda values: values, user_id)
        return rows[0] if rows else None

    def live_key(self, user_id: str) -> tuple[str, bytes] | None:
        row = self._one(q.LIVE_KEY, {"user_id": user_id}, user_id)
        return None if row is None else (row[0], bytes(row[1]))

    def add_key(self, user_id: str, key_id: str, key: bytes) -> tuple[str, bytes]:
        params = {"user_id": user_id, "key_id": key_id, "key": key}
        with self._conn() as conn, conn.transaction():
            self._enter_scope(conn, user_id)
            conn.execute(q.ADD_KEY, params)
            row = conn.execute(q.LIVE_KEY, params, binary=True).fetchone()
        if row is None:
            raise ConcurrencyError(f"no live key for {user_id!r} after creating one")
        return row[0], bytes(row[1])

    def read_key(self, user_id: str, key_id: str) -> bytes | None:
        row = self._one(q.READ_KEY, {"user_id": user_id, "key_id": key_id}, user_id)
        return None if row is None or row[0] is None else bytes(row[0])

    def key_ids(self, user_id: str) -> list[str]:
        rows = self._fetch(q.KEY_IDS, {"user_id": user_id}, lambda c: lambda v: v[0], user_id)
        return list(rows)

    def destroy_keys(self, user_id: str) -> list[str]:
        """Destroy the keys (committed at once), then return only once every transaction
        that was running at that commit has ended.

        An append checks its key is live at READ COMMITTED, with no lock (the hot path
        stays one statement), so one whose snapshot saw the key before this commit may
        commit after it, sealed under the dead key. Waiting it out orders every such
        append before whatever the caller writes next (the erasure record) and lets
        every later one find the key destroyed (``KeyErased``). Transactions with no
        real id yet count too: their snapshot may predate the commit all the same.
        Waits at most ``forget_timeout`` seconds, then ``NotErasable`` (the keys stay
        destroyed: running forget again completes it)."""
        with self._conn() as conn:
            ids = [r[0] for r in conn.execute(q.DESTROY_KEYS, {"user_id": user_id}).fetchall()]
            self._outlast(conn, user_id)
            # Best effort: have the old key bytes' dead tuples reclaimed now, not later
            # (after the wait: no snapshot from before the destruction holds them).
            conn.execute("VACUUM ledger_keys")
        return ids

    def _outlast(self, conn: psycopg.Connection[Any], user_id: str) -> None:
        """Wait until the transactions running now (on this database) have ended."""
        deadline = time.monotonic() + self.forget_timeout
        running = conn.execute(q.RUNNING_TRANSACTIONS, {"virtualxids": None}).fetchall()
        while running:
            if time.monotonic() >= deadline:
                pids = ", ".join(f"pid {pid}" for _, pid in running)
                raise NotErasable(
                    f"the keys of {user_id!r} are destroyed (their content reads as erased), "
                    "but the erasure is not recorded: transactions that began before that "
                    f"were still running after {self.forget_timeout:g}s ({pids}; see "
                    "pg_stat_activity), and appends among them must be logged before it. "
                    "Let them finish or end them (pg_terminate_backend), then run "
                    f"'ledger forget --user {user_id}' again"
                )
            time.sleep(0.01)
            virtualxids = [virtualxid for virtualxid, _ in running]
            running = conn.execute(q.RUNNING_TRANSACTIONS, {"virtualxids": virtualxids}).fetchall()

    def close(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()  # never close the parent's connections from a child
        self._notices.close()
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self


#: Serialises taking over after a fork (``PostgresStore._after_fork``); made anew in
#: each child, since another thread of the parent may have held it at the fork.
_fork_lock = forksafe.Lock()

#: Query parameters of a ledger URL that are the ledger's own, not libpq's.
_OWN_PARAMS = frozenset({"schema", "pool_timeout", "forget_timeout"})


def _own_params(url: str) -> tuple[str, dict[str, list[str]]]:
    """``url`` without the ledger's own query parameters (what libpq may be given), and
    their values by name, in order; InvalidSetting if it is not a URL at all (said
    without the URL, which may hold a password)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (read to check it: it is parsed on access)
    except ValueError as exc:
        raise InvalidSetting(
            f"malformed Postgres URL ({exc}): use postgresql://user@host:port/dbname"
        ) from None
    own: dict[str, list[str]] = {}
    rest = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OWN_PARAMS:
            own.setdefault(key, []).append(value)
        else:
            rest.append((key, value))
    # quote, not quote_plus: libpq decodes %20 in a URL but leaves a "+" as it is.
    return urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote))), own


def _first(own: dict[str, list[str]], name: str) -> str | None:
    values = own.get(name)
    return values[0] if values else None


def _seconds(name: str, value: str) -> float:
    """``value`` of the URL parameter ``name`` as seconds > 0."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise InvalidSetting(f"bad {name} {value!r} in the ledger URL: give seconds > 0")
    return seconds


def split_url(url: str) -> tuple[str, str | None]:
    """``url`` without the ledger's own query parameters (``schema``, ``pool_timeout``),
    and its ``schema`` (or None)."""
    conninfo, own = _own_params(url)
    return conninfo, _first(own, "schema")


def migrate(url: str, *, schema: str | None = None) -> int:
    """``ledger init``: create or upgrade the store's schema; return the steps applied.

    ``url`` may carry ``?schema=name``; an explicit ``schema`` wins over it.
    """
    conninfo, url_schema = split_url(url)
    with _translated(), psycopg.connect(conninfo, autocommit=True) as conn:
        return migrate_schema(conn, check_schema_name(schema or url_schema or "public"))
