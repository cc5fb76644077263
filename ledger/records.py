"""What the stores take and give back: rows of the event log, independent of any backend.

These are msgspec Structs because they sit on the hot path of every append and read.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import msgspec

#: The ``prev_hash`` of a run's first event.
GENESIS = bytes(32)

#: Types that end a run: once one is a run's last event, every store refuses to append
#: to it (``RunEnded``). (The catalog's ``ENDS_A_RUN``; stores know no catalog.)
ENDING_TYPES = frozenset({"run_completed", "run_failed"})


class LogCursor(NamedTuple):
    """A place in the global log: (transaction id, position).

    The log is ordered and checkpointed by this pair (DESIGN.md invariant 6). On
    Postgres ``tx_id`` is the writer's ``pg_current_xact_id()``; on SQLite and in
    memory, where writers are serialised, it equals ``position``.
    """

    tx_id: int = 0
    position: int = 0


START = LogCursor(0, 0)


class NewEvent(msgspec.Struct, frozen=True):
    """One event ready to be stored: envelope, encoded payload and its link in the chain."""

    version: int
    type: str
    schema: int
    occurred_at: datetime
    payload: bytes
    prev_hash: bytes
    hash: bytes
    key_id: str | None = None


class RunAppend(msgspec.Struct, frozen=True):
    """Events for one run, appended only if the run's head is still what the writer saw.

    A head of ``(0, GENESIS)`` means the run must not exist yet (it is registered for
    ``user_id``); otherwise the head must be exactly (expected_version, expected_hash).
    """

    user_id: str
    session_id: str
    run_id: str
    expected_version: int
    expected_hash: bytes
    events: tuple[NewEvent, ...]

    @property
    def key_id(self) -> str | None:
        """The key this append's personal content is sealed with (one user, one key)."""
        return next((e.key_id for e in self.events if e.key_id is not None), None)

    @property
    def starts_run(self) -> bool:
        """True when this append registers a new run (the writer saw no head at all)."""
        return self.expected_version == 0 and self.expected_hash == GENESIS


class Record(msgspec.Struct, frozen=True):
    """One stored event, exactly as the store holds it."""

    user_id: str
    session_id: str
    run_id: str
    version: int
    position: int
    tx_id: int
    type: str
    schema: int
    occurred_at: datetime
    recorded_at: datetime
    payload: bytes
    prev_hash: bytes
    hash: bytes
    key_id: str | None = None

    @property
    def cursor(self) -> LogCursor:
        """Where this event sits in the global log."""
        return LogCursor(self.tx_id, self.position)


def stored(
    item: RunAppend, event: NewEvent, position: int, tx_id: int, recorded_at: datetime
) -> Record:
    """The Record ``event`` of ``item`` became once the store placed it in the log."""
    return Record(
        user_id=item.user_id,
        session_id=item.session_id,
        run_id=item.run_id,
        version=event.version,
        position=position,
        tx_id=tx_id,
        type=event.type,
        schema=event.schema,
        occurred_at=event.occurred_at,
        recorded_at=recorded_at,
        payload=event.payload,
        prev_hash=event.prev_hash,
        hash=event.hash,
        key_id=event.key_id,
    )


class RunHead(msgspec.Struct, frozen=True, gc=False):
    """A run's registration and its latest event (version 0 and genesis hash if none yet)."""

    user_id: str
    session_id: str
    run_id: str
    version: int
    hash: bytes
    created_at: datetime
    type: str | None = None  # the type of the event at ``version`` (None: no events yet)
    #: Where the event at ``version`` is in the global log (None: no events yet).
    cursor: LogCursor | None = None


class AuditRow(msgspec.Struct, frozen=True, gc=False):
    """One row of ``EventStore.audit_scan``: a stored event beside its run's registration,
    or a registration with no events at all.

    ``registered_user``/``registered_session`` are the runs registry's entry for
    ``run_id`` (None: the registry has none); ``record`` is None for a registered run of
    ``user_id`` that holds no events.
    """

    user_id: str
    run_id: str
    registered_user: str | None
    registered_session: str | None
    record: Record | None


class Tracking(NamedTuple):
    """An eventsourcing application's position in its upstream's notifications, of one
    tenant, committed with its writes."""

    user_id: str
    name: str
    position: int


class LogLag(msgspec.Struct, frozen=True):
    """How far a reader at some cursor is behind the log's head."""

    head: LogCursor | None  # the last committed event readers may see, None if empty
    pending: int  # events after the cursor
    oldest_pending_at: datetime | None  # recorded_at of the first of them
