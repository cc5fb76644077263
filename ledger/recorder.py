"""The eventsourcing library's recorder interfaces, served by any of our stores.

``LedgerRecorder`` is an eventsourcing ``ProcessRecorder`` (so also an
``ApplicationRecorder`` and ``TrackingRecorder``). An eventsourcing ``Application``
can keep its aggregates in the ledger, and the library's own recorder test cases
(``eventsourcing.tests.persistence``) run against our Postgres and SQLite stores.

Mapping: originator_id -> run_id (a UUID is stored as its canonical text and comes
back as a UUID), originator_version -> version, topic -> type, state -> payload
(stored byte for byte, hash-chained like every other event), notification id ->
position. Every row is recorded under the recorder's ``tenant``.

Notification ids: the library's interface follows the log by one integer. Positions
are drawn at insert, so under concurrent writers a single-integer cursor cannot be
exact without a lock that serialises writers (the library's own Postgres recorder
takes one). ``select_notifications`` therefore only returns events of transactions
older than the store's visibility horizon; the ledger's own readers (projections,
tail) use ``EventStore.read_log`` with a ``(tx_id, position)`` cursor, which is exact.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    InfrastructureFactory,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
)
from eventsourcing.persistence import (
    IntegrityError as ESIntegrityError,
)
from eventsourcing.persistence import (
    OperationalError as ESOperationalError,
)
from eventsourcing.persistence import (
    Tracking as ESTracking,
)

from ledger.chain import GENESIS, Unsealed, seal
from ledger.errors import ConcurrencyError, InvalidEvent, RunIdTaken, StoreUnavailable
from ledger.events import CATALOG
from ledger.records import NewEvent, Record, RunAppend, Tracking
from ledger.store.base import EventStore, RecordConflict

if TYPE_CHECKING:
    from ledger.connection import Ledger

#: Tenant under which rows written through the eventsourcing interface are kept.
DEFAULT_TENANT = "_eventsourcing"


P = ParamSpec("P")
R = TypeVar("R")


def _operational(method: Callable[P, R]) -> Callable[P, R]:
    """``StoreUnavailable`` raised as the library's ``OperationalError`` (what its
    applications and its own recorders raise for a lost or unreachable database)."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except StoreUnavailable as exc:
            raise ESOperationalError(str(exc)) from exc

    return translated


def _as_originator_id(run_id: str) -> UUID | str:
    try:
        parsed = UUID(run_id)
    except ValueError:
        return run_id
    return parsed if str(parsed) == run_id else run_id


class LedgerAggregateRecorder(AggregateRecorder):
    """An eventsourcing AggregateRecorder over a ledger ``EventStore``."""

    def __init__(self, store: EventStore, tenant: str = DEFAULT_TENANT) -> None:
        self.store = store
        self.tenant = tenant

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._insert(stored_events, kwargs.get("tracking"))
        return None

    @_operational
    def _insert(
        self, stored_events: Sequence[StoredEvent], tracking: ESTracking | None
    ) -> list[Record]:
        """Chain and append ``stored_events`` (and ``tracking``) in one transaction."""
        by_run: dict[str, list[StoredEvent]] = {}
        for event in stored_events:
            if event.topic in CATALOG:
                # Stored as the ledger's own event type, its state would be read as that
                # type's payload (schema 0, unvalidated) by every reader and projector.
                raise InvalidEvent(
                    f"topic {event.topic!r} is an event type of the ledger's catalog; "
                    "give the aggregate's events topics of their own (module:Class)"
                )
            by_run.setdefault(str(event.originator_id), []).append(event)
        now = datetime.now(UTC)
        appends: list[RunAppend] = []
        for run_id, events in by_run.items():
            versions = [e.originator_version for e in events]
            if len(set(versions)) != len(versions):
                raise ESIntegrityError(f"duplicate version in batch for {run_id}")
            head = self.store.run_head(self.tenant, run_id)
            head_version, head_hash = (head.version, head.hash) if head else (0, GENESIS)
            sealed: list[NewEvent] = []
            prev_version, prev_hash = head_version, head_hash
            for event in events:
                sealed.extend(
                    seal(
                        self.tenant,
                        "",
                        run_id,
                        prev_version,
                        prev_hash,
                        [
                            Unsealed(
                                type=event.topic, schema=0, occurred_at=now, payload=event.state
                            )
                        ],
                        first_version=event.originator_version,
                    )
                )
                prev_version, prev_hash = sealed[-1].version, sealed[-1].hash
            appends.append(
                RunAppend(
                    user_id=self.tenant,
                    session_id="",
                    run_id=run_id,
                    expected_version=head_version,
                    expected_hash=head_hash,
                    events=tuple(sealed),
                )
            )
        try:
            records = self.store.append(
                appends,
                tracking=None if tracking is None else self._tracking(tracking),
            )
        except (ConcurrencyError, RunIdTaken, RecordConflict) as exc:
            raise ESIntegrityError(str(exc)) from exc
        return records

    def _tracking(self, tracking: ESTracking) -> Tracking:
        """The library's tracking object as this tenant's (tenants' applications of the
        same name follow their upstreams apart)."""
        return Tracking(self.tenant, tracking.application_name, tracking.notification_id)

    @_operational
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        records = self.store.read_run(
            self.tenant,
            str(originator_id),
            after_version=-1 if gt is None else gt,
            upto_version=lte,
            desc=desc,
            limit=limit,
        )
        return [
            StoredEvent(
                originator_id=originator_id,
                originator_version=r.version,
                topic=r.type,
                state=r.payload,
            )
            for r in records
        ]


class LedgerRecorder(LedgerAggregateRecorder, ProcessRecorder):
    """An eventsourcing ProcessRecorder (application + tracking) over an ``EventStore``."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        records = self._insert(stored_events, kwargs.get("tracking"))
        return [r.position for r in records] if records else None

    # -- ApplicationRecorder -----------------------------------------------------
    @_operational
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        records = self.store.read_notifications(
            self.tenant, start, limit, stop, topics, inclusive_of_start=inclusive_of_start
        )
        return [_notification(r) for r in records]

    @_operational
    def max_notification_id(self) -> int | None:
        return self.store.max_notification_id(self.tenant)

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[LedgerRecorder]:
        return PollingSubscription(self, gt=gt, topics=topics)

    # -- TrackingRecorder --------------------------------------------------------
    @_operational
    def insert_tracking(self, tracking: ESTracking) -> None:
        try:
            self.store.insert_tracking(self._tracking(tracking))
        except RecordConflict as exc:
            raise ESIntegrityError(str(exc)) from exc

    @_operational
    def max_tracking_id(self, application_name: str) -> int | None:
        return self.store.max_tracking(self.tenant, application_name)


def _notification(r: Record) -> Notification:
    return Notification(
        id=r.position,
        originator_id=_as_originator_id(r.run_id),
        originator_version=r.version,
        topic=r.type,
        state=r.payload,
    )


class PollingSubscription(Subscription[LedgerRecorder]):
    """Follows ``select_notifications`` by polling; stops promptly when asked."""

    poll_interval = 0.05

    def __init__(
        self, recorder: LedgerRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._buffer: list[Notification] = []
        self._wake = threading.Event()

    def stop(self) -> None:
        super().stop()
        self._wake.set()

    def __next__(self) -> Notification:
        while not self._has_been_stopped:
            if self._buffer:
                notification = self._buffer.pop(0)
                self._last_notification_id = notification.id
                return notification
            self._buffer = list(
                self._recorder.select_notifications(
                    start=self._last_notification_id or 0,
                    limit=500,
                    topics=self._topics,
                    inclusive_of_start=False,
                )
            )
            if not self._buffer:
                self._wake.wait(self.poll_interval)
        raise StopIteration


class LedgerFactory(InfrastructureFactory[LedgerRecorder]):
    """The library's infrastructure factory for the ledger: an eventsourcing
    ``Application`` run with ``PERSISTENCE_MODULE=ledger.recorder`` keeps its aggregates
    in the ledger named by ``LEDGER_URL`` (as ``ledger.connect``: unset, ``$LEDGER_URL``,
    then the SQLite default), under the tenant ``LEDGER_TENANT`` (default
    ``_eventsourcing``). Both may be prefixed with the application's name, as every
    setting of the library may (``BANK_LEDGER_URL``). Its events are hash-chained and
    verified like the ledger's own.

    Snapshots are not offered: a snapshot is a second, per-aggregate record keyed by the
    same id and version as the aggregate's events, which the ledger's runs (one
    version per id, ids unique across tenants) cannot hold beside them.
    """

    LEDGER_URL = "LEDGER_URL"
    LEDGER_TENANT = "LEDGER_TENANT"

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        from ledger.connection import connect  # the factory is the one user of it here

        self._ledger: Ledger | None = connect(self.env.get(self.LEDGER_URL) or None)
        self._tenant = self.env.get(self.LEDGER_TENANT) or DEFAULT_TENANT

    @property
    def _store(self) -> EventStore:
        if self._ledger is None:
            raise StoreUnavailable("this eventsourcing factory's ledger is closed")
        return self._ledger.store

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose != "events":
            raise InvalidEvent(
                f"the ledger recorder keeps aggregate events only, not {purpose!r}: "
                "leave IS_SNAPSHOTTING_ENABLED unset with PERSISTENCE_MODULE=ledger.recorder"
            )
        return LedgerAggregateRecorder(self._store, self._tenant)

    def application_recorder(self) -> LedgerRecorder:
        return LedgerRecorder(self._store, self._tenant)

    def tracking_recorder(
        self, tracking_recorder_class: type[LedgerRecorder] | None = None
    ) -> LedgerRecorder:
        return (tracking_recorder_class or LedgerRecorder)(self._store, self._tenant)

    def process_recorder(self) -> LedgerRecorder:
        return LedgerRecorder(self._store, self._tenant)

    def close(self) -> None:
        # Once: an Application closes its factory again from __del__, which may run
        # at interpreter exit, when what a second close would call is gone.
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger.close()
