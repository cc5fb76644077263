"""The one interface every store implements: memory (tests), SQLite (embedded), Postgres.

A store knows rows, positions and transactions; it knows nothing of event types or
payload shapes. Everything above it (the append API, the eventsourcing recorder
adapter, projections, replay) talks to this interface only.

Contract every implementation keeps (the backend test suite in tests/ checks it):

* ``append`` is atomic over all its ``RunAppend`` items and the optional tracking
  row: everything commits or nothing does.
* Optimistic concurrency: for ``starts_run`` appends the run must not exist
  (``ConcurrencyError`` if it does for the same tenant; ``RunIdTaken`` if another
  tenant owns the id); otherwise the run's head must be exactly
  ``(expected_version, expected_hash)`` (``ConcurrencyError``) and the run must belong
  to ``user_id`` (``NotFound`` if it does not exist for that tenant).
* A ``starts_run`` append brings the run's first events (``InvalidEvent`` if it has
  none): a run is registered only together with them, which ``verify`` relies on.
* The head check happens before any position is drawn where the backend allows it.
* ``read_log`` returns committed events in log order strictly after ``after`` and
  never returns an event behind a cursor a reader has already been given while a
  lower one can still commit (invariant 6).
* Stored events are never updated or deleted; the database itself refuses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from ledger.errors import ConcurrencyError, InvalidEvent, RunEnded, StoreUnavailable
from ledger.records import (
    ENDING_TYPES,
    AuditRow,
    LogCursor,
    LogLag,
    Record,
    RunAppend,
    RunHead,
    Tracking,
)


class EventStore(ABC):
    """Backend-neutral storage of the event log, run registry and tracking positions."""

    #: "memory", "sqlite" or "postgres"
    backend: str

    #: Test seam: when set, called inside every append transaction after its rows are
    #: written and before it commits (crash and ordering tests hold turns open with it).
    before_commit: Callable[[], None] | None = None

    @abstractmethod
    def append(
        self,
        appends: Sequence[RunAppend],
        *,
        tracking: Tracking | None = None,
        returning: bool = True,
    ) -> list[Record]:
        """Store all events of all ``appends`` (and ``tracking``) atomically; return them.

        With ``returning=False`` nothing is returned (the agent's hot path does not need
        positions back, and not reading them back is measurably cheaper).
        """

    @abstractmethod
    def run_head(self, user_id: str | None, run_id: str) -> RunHead | None:
        """The run's head, or None if it does not exist (for this tenant, if given)."""

    @abstractmethod
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
        """A run's events by version; ``user_id=None`` reads across tenants (admin)."""

    @abstractmethod
    def read_log(
        self, after: LogCursor, limit: int = 1000, *, user_id: str | None = None
    ) -> list[Record]:
        """Committed events of the global log after ``after``, in log order."""

    @abstractmethod
    def lag(self, after: LogCursor) -> LogLag:
        """The log's head, and how many committed events lie after ``after``."""

    @abstractmethod
    def list_runs(self, user_id: str | None = None, session_id: str | None = None) -> list[RunHead]:
        """Registered runs, oldest first, optionally narrowed to a tenant and session."""

    @abstractmethod
    def audit_scan(
        self, user_id: str | None = None, run_id: str | None = None
    ) -> Iterator[AuditRow]:
        """Every stored event in scope beside its run's registration, by (user, run,
        version), then every registered run in scope that holds no events: what
        ``ledger verify`` checks, streamed (never the whole store in memory).

        Rows are matched to the registry by ``run_id`` alone, so an event row of a run
        nobody registered, or registered to another user, is yielded too (with what the
        registry says), never skipped: that is what a verifier must see.

        A ``run_id`` given alone is read as the run's registered owner's (a primary-key
        range, not a walk of the whole log); rows of that run id under another user are
        read by a scan of every user or of that user. A run id the registry does not
        know is read under every user."""

    @abstractmethod
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
        """``user_id``'s aggregate events (rows of no session: what the eventsourcing
        adapter writes) by position, for the library's ``select_notifications``: never
        another tenant's, never an agent run's."""

    @abstractmethod
    def max_notification_id(self, user_id: str) -> int | None:
        """The largest position of ``user_id``'s aggregate events, or None if none."""

    @abstractmethod
    def max_position(self) -> int | None:
        """The largest position stored, or None when the log is empty."""

    @abstractmethod
    def insert_tracking(self, tracking: Tracking) -> None:
        """Record a tracking position on its own (raises RecordConflict if not higher)."""

    @abstractmethod
    def max_tracking(self, user_id: str, name: str) -> int | None:
        """The highest tracking position recorded for ``name`` of tenant ``user_id``."""

    # -- per-user keys (DESIGN.md invariant 7) ----------------------------------------
    # Appends whose ``key_id`` is not a live key of their user raise ``KeyErased``.

    @abstractmethod
    def live_key(self, user_id: str) -> tuple[str, bytes] | None:
        """The user's live key (id, key material), if there is one."""

    @abstractmethod
    def add_key(self, user_id: str, key_id: str, key: bytes) -> tuple[str, bytes]:
        """Store a new live key for the user unless one exists; return the live key."""

    @abstractmethod
    def read_key(self, user_id: str, key_id: str) -> bytes | None:
        """Key material of ``key_id`` of the user, or None if destroyed or unknown."""

    @abstractmethod
    def key_ids(self, user_id: str) -> list[str]:
        """Every key id the user ever had, live or destroyed."""

    @abstractmethod
    def destroy_keys(self, user_id: str) -> list[str]:
        """Destroy the user's live keys (crypto-shredding); return their ids."""

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until everything committed before this call can be read from the log.

        Postgres shows the log only below the oldest running transaction (invariant 6),
        so an event committed a moment ago may sit behind a transaction that began
        earlier. This waits (at most ``timeout`` seconds) until every transaction that
        was running at the call has ended; True if it got there. The embedded stores
        serialise writers, so everything committed is readable at once."""
        return True

    def for_auditor(self) -> EventStore:
        """This store as the auditor sees it: every tenant readable, nothing writable.

        Postgres enforces that with a role; the embedded stores are single-user by
        nature and return themselves (the API's checks hold in their queries)."""
        return self

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_starts(appends: Sequence[RunAppend]) -> None:
    """Every store's first check of an append: InvalidEvent for one that would start a
    run without events (nothing is written), since a run is registered only together
    with its first events."""
    for item in appends:
        if item.starts_run and not item.events:
            raise InvalidEvent(
                f"run {item.run_id!r}: an append that starts a run must hold its first "
                "event (a run is registered only together with its events); nothing written"
            )


def check_head(item: RunAppend, version: int, head_hash: bytes, head_type: str | None) -> None:
    """Every store's head check of an append to an existing run, given the run's head
    (version, hash and type of its last event; 0, GENESIS and None if it has none):
    ConcurrencyError unless the head is the one ``item`` states, RunEnded if that head
    ends the run and ``item`` brings events."""
    if (version, head_hash) != (item.expected_version, item.expected_hash):
        raise ConcurrencyError(
            f"run {item.run_id!r} is at version {version}, not {item.expected_version}"
        )
    if item.events and head_type in ENDING_TYPES:
        raise RunEnded(
            f"run {item.run_id!r} has ended ({head_type} at version {version}), so it "
            "takes no more events; nothing was written (start a new run in its session "
            "to go on)"
        )


class RecordConflict(Exception):
    """A row that must be unique already exists (tracking position not above the last).

    Internal to the stores and the eventsourcing adapter, which maps it to the
    library's ``IntegrityError``.
    """


class Step(NamedTuple):
    """One schema migration step: its version number, a name, and its DDL statements in order."""

    version: int
    name: str
    statements: tuple[str, ...]
    #: Whether releases before this step would misread or break the schema after it.
    #: Recorded with the step, so that those releases refuse to start on it; a step
    #: that only adds (a table, a column with a default, an index, a function that
    #: does the same as before) leaves it False and earlier releases carry on.
    breaks_older: bool = False


def schema_too_new(found: int, latest: int, needs: int) -> StoreUnavailable:
    """The refusal of a store that a later release migrated past ``latest`` with a step
    (``needs``) that code before it would misread or break: this code does not start."""
    return StoreUnavailable(
        f"this database is at schema version {found}, newer than this release's {latest},"
        f" and its step {needs} is one that earlier releases cannot run on: upgrade ledger"
    )
