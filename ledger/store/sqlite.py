"""The SQLite store: the embedded default, one file, no server, several processes.

Design (DESIGN.md "Write path invariants"):

* WAL mode and ``synchronous=NORMAL``: readers never block the writer nor each other.
* Writers use ``BEGIN IMMEDIATE``, so SQLite itself serialises them across processes
  (threads of one process first queue on an in-process lock rather than on SQLite's
  sleeping busy handler). Because a position is drawn only inside the write lock and
  becomes visible at that writer's commit, before the next writer can draw one,
  position order is commit order: ``read_log`` by ``position > after.position`` never
  skips an event (invariant 6) without any horizon.
* ``tx_id`` is stored with each row: the position of the first event of its append
  (as in ``MemoryStore``). All events of one append share it; ``(tx_id, position)``
  order equals ``position`` order.
* Heads are checked before a position is drawn, so a losing writer burns nothing.
* Triggers refuse UPDATE and DELETE on ``ledger_events`` and ``ledger_runs`` (with
  triggers present, SQLite's truncate optimisation is off too). SQLite has no
  privileges, so ``DROP TABLE`` by whoever holds the file cannot be refused; the hash
  chain still makes such tampering evident.
* The write-ahead log is kept bounded (``WAL_LIMIT_BYTES``). SQLite's own automatic
  checkpoint never waits, so with writers of several processes committing back to back
  (each writer's snapshot is also a reader of the log) the log is never wholly copied
  back and never rewound: it grew to 568 MB in a minute of six agents. A writer that
  finds the -wal file past the limit after its commit checkpoints the log and truncates
  it, waiting at most ``_CHECKPOINT_WAIT`` for others to leave it; a reader that keeps an
  old snapshot (an audit's scan) puts the next try off by a quarter of the limit.
* Connections are pooled (one per concurrent caller, ``check_same_thread=False``);
  nothing about the file's contents is cached, so other processes' writes are seen.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from ledger.chain import GENESIS, canonical_time
from ledger.errors import (
    ConcurrencyError,
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
from ledger.store import sqlite_sql as sql
from ledger.store.base import EventStore, RecordConflict, check_head, check_starts

_Params = tuple[object, ...] | dict[str, object]
_MAX_IDLE = 8
_AUDIT_BATCH = 2000
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

#: The -wal file's size past which a committing writer checkpoints and truncates it.
WAL_LIMIT_BYTES = 32 * 1024 * 1024
#: How long that checkpoint waits for other writers and readers (it holds up writers).
_CHECKPOINT_WAIT = 0.25

_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _forget_locks_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _write_locks_guard
    _write_locks.clear()
    _write_locks_guard = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork either
    os.register_at_fork(after_in_child=_forget_locks_after_fork)


def _write_lock_for(path: str) -> threading.Lock:
    """One in-process writer lock per file, shared by every store open on it."""
    with _write_locks_guard:
        return _write_locks.setdefault(path, threading.Lock())


#: Reads back what ``canonical_time`` wrote, as an aware UTC datetime.
_parse_time = datetime.fromisoformat


class SQLiteStore(EventStore):
    """Event store in one SQLite file (``sqlite:///path/to/ledger.db``)."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise StoreUnavailable(
                f"SQLite store needs a file path, not {raw!r} (use memory:// for a throwaway store)"
            )
        resolved = Path(raw).expanduser().resolve()
        if not resolved.parent.is_dir():
            raise StoreUnavailable(
                f"cannot open SQLite ledger {str(resolved)!r}: directory "
                f"{str(resolved.parent)!r} does not exist"
            )
        self.path = resolved
        self.timeout = timeout
        self._closed = False
        self._pid = os.getpid()
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._write_lock = _write_lock_for(str(resolved))
        self._wal = Path(f"{resolved}-wal")
        self._next_checkpoint = WAL_LIMIT_BYTES  # -wal bytes at which to try one
        conn = self._connect()
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._idle.append(conn)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """``sqlite:///relative.db`` or ``sqlite:////abs/path.db`` (``?timeout=5``)."""
        prefix = "sqlite:///"
        rest, _, query = url[len(prefix) :].partition("?")
        if not url.startswith(prefix) or not rest:
            raise InvalidSetting(
                f"bad SQLite ledger URL {url!r}: use sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        timeout = parse_qs(query).get("timeout", ["30"])[-1]
        try:
            seconds = float(timeout)
        except ValueError:
            raise InvalidSetting(
                f"bad timeout {timeout!r} in {url!r}: give the seconds a writer waits for "
                "the file's write lock"
            ) from None
        return cls(unquote(rest), timeout=seconds)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connections ----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=64,
            )
            conn.execute(sql.SET_SYNCHRONOUS)
            conn.execute(sql.SET_WAL_SIZE_LIMIT.format(limit=WAL_LIMIT_BYTES))
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL and apply pending migrations (safe under races)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode = conn.execute(sql.SET_WAL).fetchone()[0]
                sql.migrate(conn)
                break
            except sqlite3.OperationalError as exc:
                # Switching a brand-new file to WAL can report BUSY at once, without
                # consulting the busy handler, while another process does the same.
                if not self._is_busy(exc) or time.monotonic() > deadline:
                    raise self._unavailable(exc) from exc
                time.sleep(0.01)
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
        if str(mode).lower() != "wal":
            raise StoreUnavailable(f"could not put {str(self.path)!r} in WAL mode ({mode})")

    def _borrow(self) -> sqlite3.Connection:
        """An idle connection of this process's pool, or a new one."""
        if self._closed:
            raise StoreUnavailable(f"{self!r} is closed")
        if os.getpid() != self._pid:
            self._after_fork()
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # an error escaped mid-transaction
            conn.rollback()
        with self._pool_lock:
            if not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def _after_fork(self) -> None:
        # Never share the parent's connections or locks (a lock held by a thread of
        # the parent at fork time would stay held in the child).
        self._pid = os.getpid()
        self._idle = []
        self._pool_lock = threading.Lock()
        self._write_lock = _write_lock_for(str(self.path))

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = self._borrow()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        finally:
            self._give_back(conn)

    @staticmethod
    def _is_busy(exc: sqlite3.Error) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return "locked" in str(exc)
        return (code & 0xFF) in _BUSY_CODES

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        if self._is_busy(exc):
            return StoreUnavailable(
                f"SQLite ledger {str(self.path)!r} stayed locked by another writer for "
                f"more than {self.timeout:g}s ({exc})"
            )
        return StoreUnavailable(f"SQLite ledger {str(self.path)!r}: {exc}")

    # -- write path -----------------------------------------------------------------

    def append(
        self,
        appends: Sequence[RunAppend],
        *,
        tracking: Tracking | None = None,
        returning: bool = True,
    ) -> list[Record]:
        check_starts(appends)
        with self.transaction() as conn:
            records = self._write(conn, appends, tracking, returning)
            if self.before_commit is not None:
                self.before_commit()
        return records

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE``, holding this file's write turn.

        Commits when the block ends, rolls back if it raises. The append path and the
        read side (projections keep their tables in the same file) both write through it.
        """
        if os.getpid() != self._pid:
            self._after_fork()
        lock = self._write_lock
        if not lock.acquire(timeout=self.timeout):
            raise StoreUnavailable(
                f"SQLite ledger {str(self.path)!r}: no write turn within {self.timeout:g}s"
            )
        try:
            conn = self._borrow()
            try:
                conn.execute(sql.BEGIN_WRITE)
                try:
                    yield conn
                    conn.execute(sql.COMMIT)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute(sql.ROLLBACK)
                    raise
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
            finally:
                self._give_back(conn)
        finally:
            lock.release()
        self._bound_wal()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection, wait: float) -> tuple[int, int, int]:
        """``CHECKPOINT_TRUNCATE``, retried for up to ``wait`` seconds while another
        connection's checkpoint (SQLite's automatic one after each commit past 1,000
        pages) holds the checkpoint lock: that lock is not waited for by the busy
        handler, the checkpoint reports (1, -1, -1) at once."""
        deadline = time.monotonic() + wait
        while True:
            busy, frames, copied = conn.execute(sql.CHECKPOINT_TRUNCATE).fetchone()
            if frames != -1 or time.monotonic() > deadline:
                return busy, frames, copied
            time.sleep(0.001)

    def _wal_size(self) -> int:
        try:
            return self._wal.stat().st_size
        except OSError:  # no -wal file (yet)
            return 0

    def _bound_wal(self) -> None:
        """After a commit: checkpoint and truncate the -wal file once past WAL_LIMIT_BYTES."""
        size = self._wal_size()
        if size < self._next_checkpoint:
            return
        try:
            conn = self._borrow()
        except StoreUnavailable:
            return  # closed meanwhile: the commit stands
        try:
            # At once, while the write lock just released is still free: writers of
            # other processes sleep in their busy handlers and would take it first.
            conn.execute(sql.SET_BUSY_TIMEOUT.format(ms=int(_CHECKPOINT_WAIT * 1000)))
            try:
                done = not self._checkpoint(conn, _CHECKPOINT_WAIT)[0]
            finally:
                conn.execute(sql.SET_BUSY_TIMEOUT.format(ms=int(self.timeout * 1000)))
        except sqlite3.Error:
            done = False  # the commit stands; the next writer past the limit tries again
        finally:
            self._give_back(conn)
        if not done:  # kept (an old snapshot) or just emptied by another process
            done = (size := self._wal_size()) < WAL_LIMIT_BYTES
        # Kept: try again soon (the read may end any time), after a quarter of the limit
        # more, not at each commit (a try holds writers up for up to _CHECKPOINT_WAIT).
        self._next_checkpoint = WAL_LIMIT_BYTES if done else size + WAL_LIMIT_BYTES // 4

    def read_as(
        self, user_id: str | None, statement: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of one read ``statement`` of ``user_id``'s data (SQLite has no roles:
        the statement itself names the tenant; the seam of ``PostgresStore.read_as``)."""
        with self._conn() as conn:
            rows: list[tuple[Any, ...]] = conn.execute(statement, params).fetchall()
        return rows

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection for reads (autocommit; each statement sees the latest commit)."""
        with self._conn() as conn:
            yield conn

    def _write(
        self,
        conn: sqlite3.Connection,
        appends: Sequence[RunAppend],
        tracking: Tracking | None,
        returning: bool = True,
    ) -> list[Record]:
        now = datetime.now(UTC)
        now_text = canonical_time(now)
        next_position: int | None = None  # no event is inserted until all are checked
        for item in appends:
            next_position = self._check(conn, item, now_text) or next_position
        if tracking is not None:
            cursor = conn.execute(sql.UPSERT_TRACKING, tracking)
            if cursor.rowcount != 1:
                last = conn.execute(
                    sql.SELECT_TRACKING, (tracking.user_id, tracking.name)
                ).fetchone()
                raise RecordConflict(f"tracking {tracking} not above {last[0]}")
        if not any(item.events for item in appends):
            return []
        if next_position is None:
            next_position = int(conn.execute(sql.SELECT_NEXT_POSITION).fetchone()[0])
        tx_id = position = next_position
        params: list[object] = []  # the events' columns, one event after another
        stored: list[Record] = []
        for item in appends:
            user_id, session_id, run_id = item.user_id, item.session_id, item.run_id
            for e in item.events:
                # Columns and records share Record's field order (see sql.insert_events).
                head = (user_id, session_id, run_id, e.version, position, tx_id, e.type, e.schema)
                tail = (e.payload, e.prev_hash, e.hash, e.key_id)
                params += head
                params += (canonical_time(e.occurred_at), now_text)
                params += tail
                if returning:
                    stored.append(Record(*head, e.occurred_at.astimezone(UTC), now, *tail))
                position += 1
        chunk = sql.MAX_EVENTS_A_STATEMENT * sql.EVENT_WIDTH
        try:
            for start in range(0, len(params), chunk):
                part = params if len(params) <= chunk else params[start : start + chunk]
                conn.execute(sql.insert_events(len(part) // sql.EVENT_WIDTH), part)
        except sqlite3.IntegrityError as exc:
            raise ConcurrencyError(f"version already stored: {exc}") from exc
        return stored

    def _check(self, conn: sqlite3.Connection, item: RunAppend, now_text: str) -> int | None:
        """Raise unless the run's registration and head are what ``item`` expects.

        Registers new runs. Returns the next position to draw when it was read.
        """
        key_id = item.key_id
        if (
            key_id is not None
            and not conn.execute(sql.CHECK_KEY, (key_id, item.user_id)).fetchone()
        ):
            raise KeyErased(f"key {key_id!r} of this user was destroyed; nothing written")
        if item.starts_run:
            cursor = conn.execute(
                sql.INSERT_RUN, (item.run_id, item.user_id, item.session_id, now_text)
            )
            if cursor.rowcount == 1:
                return None
            owner = conn.execute(sql.SELECT_RUN_OWNER, (item.run_id,)).fetchone()
            if owner is not None and owner[0] != item.user_id:
                raise RunIdTaken(f"run_id {item.run_id!r} is already in use")
            raise ConcurrencyError(f"run {item.run_id!r} already exists")
        row = conn.execute(sql.CHECK_HEAD, (item.run_id,)).fetchone()
        if row is None or row[0] != item.user_id:
            raise NotFound(f"run {item.run_id!r} not found")
        check_head(item, row[1], GENESIS if row[2] is None else row[2], row[4])
        return int(row[3])

    def insert_tracking(self, tracking: Tracking) -> None:
        self.append([], tracking=tracking)

    # -- read path ------------------------------------------------------------------

    def _records(self, statement: str, params: _Params) -> list[Record]:
        with self._conn() as conn:
            rows = conn.execute(statement, params).fetchall()
        recorded_times: dict[str, datetime] = {}  # one per append: parse each once
        return [_record(row, recorded_times) for row in rows]

    def audit_scan(
        self, user_id: str | None = None, run_id: str | None = None
    ) -> Iterator[AuditRow]:
        with self._conn() as conn:
            # One read transaction: both statements see the same snapshot of the file
            # (ended by giving the connection back, which rolls back whatever is open).
            conn.execute(sql.BEGIN_READ)
            if run_id is not None and user_id is None:
                owner = conn.execute(sql.SELECT_RUN_OWNER, (run_id,)).fetchone()
                user_id = None if owner is None else owner[0]
            scope = {"user_id": user_id, "run_id": run_id}
            given = (user_id is not None, run_id is not None)
            recorded_times: dict[str, datetime] = {}
            rows = conn.execute(sql.audit_events(*given), scope)
            user = run = owner = session = None
            while batch := rows.fetchmany(_AUDIT_BATCH):
                if len(recorded_times) > _AUDIT_BATCH:
                    recorded_times.clear()  # a cache of the latest appends, not the store
                for row in batch:
                    record = _record(row, recorded_times)
                    if record.run_id != run or record.user_id != user:
                        user, run = record.user_id, record.run_id
                        entry = conn.execute(sql.REGISTRATION, (run,)).fetchone()
                        owner, session = (None, None) if entry is None else entry
                    yield AuditRow(record.user_id, record.run_id, owner, session, record)
            for owner, run, session in conn.execute(sql.audit_empty_runs(*given), scope).fetchall():
                yield AuditRow(owner, run, owner, session, None)

    @staticmethod
    def _head(row: Any) -> RunHead:
        user_id, session_id, run_id, version, head_hash, created_at, type_, tx_id, position = row
        return RunHead(
            user_id=user_id,
            session_id=session_id,
            run_id=run_id,
            version=version,
            hash=GENESIS if head_hash is None else head_hash,
            created_at=_parse_time(created_at),
            type=type_,
            cursor=None if tx_id is None else LogCursor(tx_id, position),
        )

    def run_head(self, user_id: str | None, run_id: str) -> RunHead | None:
        with self._conn() as conn:
            row = conn.execute(
                sql.SELECT_RUN_HEAD, {"run_id": run_id, "user_id": user_id}
            ).fetchone()
        return None if row is None else self._head(row)

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
        return self._records(
            sql.SELECT_RUN_DESC if desc else sql.SELECT_RUN_ASC,
            {
                "run_id": run_id,
                "user_id": user_id,
                "after": after_version,
                "upto": sql.MAX_INT if upto_version is None else upto_version,
                "limit": -1 if limit is None else limit,
            },
        )

    def read_log(
        self, after: LogCursor, limit: int = 1000, *, user_id: str | None = None
    ) -> list[Record]:
        if user_id is None:
            return self._records(sql.SELECT_LOG, (after.position, limit))
        return self._records(sql.SELECT_TENANT_LOG, (user_id, after.position, limit))

    def list_runs(self, user_id: str | None = None, session_id: str | None = None) -> list[RunHead]:
        params = {"user_id": user_id, "session_id": session_id}
        statement = sql.LIST_RUNS if user_id is None else sql.LIST_TENANT_RUNS
        with self._conn() as conn:
            rows = conn.execute(statement, params).fetchall()
        return [self._head(row) for row in rows]

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
        high = sql.MAX_INT if stop is None else stop
        if not types:
            return self._records(sql.SELECT_NOTIFICATIONS, (user_id, low, high, limit))
        statement = sql.SELECT_NOTIFICATIONS_OF_TYPES.format(types=", ".join("?" * len(types)))
        return self._records(statement, (user_id, low, high, *types, limit))

    def max_notification_id(self, user_id: str) -> int | None:
        with self._conn() as conn:
            row = conn.execute(sql.SELECT_MAX_NOTIFICATION, (user_id,)).fetchone()
        return None if row[0] is None else int(row[0])

    def lag(self, after: LogCursor) -> LogLag:
        with self._conn() as conn:
            count, oldest = conn.execute(sql.SELECT_LAG, (after.position,)).fetchone()
            head = conn.execute(sql.SELECT_LOG_HEAD).fetchone()
        return LogLag(
            None if head is None else LogCursor(int(head[0]), int(head[1])),
            int(count),
            None if oldest is None else _parse_time(oldest).astimezone(UTC),
        )

    def max_position(self) -> int | None:
        with self._conn() as conn:
            row = conn.execute(sql.SELECT_MAX_POSITION).fetchone()
        return None if row[0] is None else int(row[0])

    def max_tracking(self, user_id: str, name: str) -> int | None:
        with self._conn() as conn:
            row = conn.execute(sql.SELECT_TRACKING, (user_id, name)).fetchone()
        return None if row is None else int(row[0])

    # -- keys -----------------------------------------------------------------------

    def live_key(self, user_id: str) -> tuple[str, bytes] | None:
        with self._conn() as conn:
            row = conn.execute(sql.LIVE_KEY, (user_id,)).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def add_key(self, user_id: str, key_id: str, key: bytes) -> tuple[str, bytes]:
        with self.transaction() as conn:
            conn.execute(sql.ADD_KEY, (key_id, user_id, key))
            row = conn.execute(sql.LIVE_KEY, (user_id,)).fetchone()
        return row[0], bytes(row[1])

    def read_key(self, user_id: str, key_id: str) -> bytes | None:
        with self._conn() as conn:
            row = conn.execute(sql.READ_KEY, (user_id, key_id)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def key_ids(self, user_id: str) -> list[str]:
        with self._conn() as conn:
            return [r[0] for r in conn.execute(sql.KEY_IDS, (user_id,)).fetchall()]

    def destroy_keys(self, user_id: str) -> list[str]:
        with self.transaction() as conn:
            # Overwrite the old key bytes as the rows change, on this very connection
            # (a pooled one: the setting is put back for whatever it does next).
            (secure,) = conn.execute(sql.SECURE_DELETE).fetchone()
            conn.execute(sql.SET_SECURE_DELETE.format(on=1))
            try:
                destroyed = [r[0] for r in conn.execute(sql.DESTROY_KEYS, (user_id,)).fetchall()]
            finally:
                conn.execute(sql.SET_SECURE_DELETE.format(on=int(secure)))
        # And from the WAL, and the file's pages: checkpointing and truncating it waits
        # (up to ``timeout``) for every reader, and until then the old bytes stay.
        with self._conn() as conn:
            (busy, *_) = self._checkpoint(conn, self.timeout)
        if busy:
            raise NotErasable(
                f"the keys of {user_id!r} are destroyed (their content reads as erased), but "
                f"their old bytes are still in {self.path} (or its -wal): another connection "
                f"kept a read of it open for over {self.timeout:g}s, so the write-ahead log "
                "could not be checkpointed and truncated; nothing was recorded. "
                f"Run 'ledger forget --user {user_id}' again once it has finished"
            )
        return destroyed

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _record(row: Sequence[Any], recorded_times: dict[str, datetime]) -> Record:
    """A Record from a row of _EVENT_COLUMNS (timestamps as text); ``recorded_times``
    caches parsed ``recorded_at`` texts (one per append, shared by its events)."""
    fields = list(row)
    recorded = recorded_times.get(fields[9])
    if recorded is None:
        recorded = recorded_times[fields[9]] = _parse_time(fields[9])
    fields[8], fields[9] = _parse_time(fields[8]), recorded
    return Record(*fields)
