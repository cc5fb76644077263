"""The tenant handle: everything one user may do and see, and nothing more."""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ledger.chain import GENESIS
from ledger.errors import InvalidEvent, NotFound
from ledger.events import CATALOG, Event
from ledger.forks import check_fork_point
from ledger.ids import check_id, new_run_id
from ledger.personal import Keyring, reveal_event
from ledger.read_side import check_count, check_listing
from ledger.records import Record, RunHead
from ledger.run import Run

if TYPE_CHECKING:
    from ledger.connection import Ledger


class RunSummary(msgspec.Struct, frozen=True):
    """A registered run and how far it has got (the basic listing of ``runs``)."""

    run_id: str
    user_id: str
    session_id: str
    created_at: datetime
    version: int


def to_event(record: Record, *, hashes: bool = True) -> Event:
    """Decode a stored record (upcasting old schemas) into the public ``Event``.

    ``hashes=False`` leaves ``hash`` and ``prev_hash`` empty: for projector runners,
    whose reducers never read the chain (a sixth of decoding is its hex)."""
    try:
        data = CATALOG.decode_data(record.type, record.schema, record.payload)
    except (InvalidEvent, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidEvent(
            f"stored event {record.version} of run {record.run_id!r} cannot be read as "
            f"{record.type!r}: {exc}"
        ) from None
    return _event(record, data, hashes)


def _event(record: Record, data: dict[str, Any], hashes: bool = True) -> Event:
    return Event(
        user_id=record.user_id,
        session_id=record.session_id,
        run_id=record.run_id,
        version=record.version,
        position=record.position,
        type=record.type,
        schema=record.schema,
        occurred_at=record.occurred_at,
        recorded_at=record.recorded_at,
        data=data,
        hash=record.hash.hex() if hashes else "",
        prev_hash=record.prev_hash.hex() if hashes else "",
    )


def readable_event(record: Record, keyring: Keyring | None) -> Event:
    """``to_event`` with its personal content opened (or marked erased). Only a record
    with a key id holds sealed content: the others are not walked for tokens (stored
    input never starts like one: ``ledger.storable``)."""
    event = to_event(record)
    if record.key_id is None or keyring is None:
        return event
    return reveal_event(event, keyring)


def readable_events(
    records: Iterable[Record], keyring: Keyring | None, *, mark_unreadable: bool = False
) -> list[Event]:
    """``readable_event`` of each record. One that no reader can decode (a row written
    behind the ledger's back) raises InvalidEvent naming it, or with ``mark_unreadable``
    comes back among the others with ``data`` saying why, and its stored bytes in
    base64 (what a debugging tool shows: the rest of the run stays visible). Keys are
    looked up once for them all (``Keyring.for_read``)."""
    keyring = None if keyring is None else keyring.for_read()
    if not mark_unreadable:
        return [readable_event(r, keyring) for r in records]
    out = []
    for record in records:
        try:
            out.append(readable_event(record, keyring))
        except InvalidEvent as exc:
            data = {"unreadable": str(exc), "payload_base64": b64encode(record.payload).decode()}
            out.append(_event(record, data))
    return out


def to_summary(head: RunHead) -> RunSummary:
    """The listing row for a run head."""
    return RunSummary(
        run_id=head.run_id,
        user_id=head.user_id,
        session_id=head.session_id,
        created_at=head.created_at,
        version=head.version,
    )


class Tenant:
    """Scoped to one ``user_id``: another tenant's runs are ``NotFound``, never visible."""

    def __init__(self, ledger: Ledger, user_id: str) -> None:
        self._ledger = ledger
        self.user_id = check_id("user_id", user_id)

    def __repr__(self) -> str:
        return f"Tenant({self.user_id!r})"

    def start_run(
        self,
        session_id: str,
        run_id: str | None = None,
        agent: str | None = None,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
        parent_run_id: str | None = None,
        parent_version: int | None = None,
    ) -> Run:
        """Register a new run in ``session_id`` and record its ``run_started`` event.

        ``parent_run_id``/``parent_version`` mark a fork (see ``fork``)."""
        session_id = check_id("session_id", session_id)
        run_id = check_id("run_id", run_id) if run_id is not None else new_run_id()
        started = CATALOG.validate(
            "run_started",
            {
                "agent": agent,
                "model": model,
                "metadata": metadata,
                "parent_run_id": parent_run_id,
                "parent_version": parent_version,
            },
        )
        # After the fields' types are checked: the fork point is compared and looked up.
        check_fork_point(self._ledger.store, self.user_id, parent_run_id, parent_version)
        run = Run(self, run_id, session_id, 0, GENESIS)
        run._emit("run_started", msgspec.to_builtins(started), occurred_at)
        return run

    def run(self, run_id: str) -> Run:
        """A handle on an existing run at its current head (to resume it elsewhere)."""
        return Run.at_head(self, self._head(run_id))

    def events(
        self,
        run_id: str,
        *,
        after_version: int = 0,
        upto_version: int | None = None,
        mark_unreadable: bool = False,
    ) -> list[Event]:
        """The run's events in version order, those after ``after_version`` up to
        ``upto_version`` (``mark_unreadable``: see ``readable_events``)."""
        check_count("after_version", after_version)
        check_count("upto_version", upto_version)
        head = self._head(run_id)
        if after_version >= head.version:
            return []  # (a bound past the head would overflow a store's integers)
        if upto_version is not None and upto_version >= head.version:
            upto_version = None
        records = self._ledger.store.read_run(
            self.user_id, run_id, after_version=after_version, upto_version=upto_version
        )
        return readable_events(records, self._ledger.keyring, mark_unreadable=mark_unreadable)

    def _first_erased_version(self, run_id: str) -> int | None:
        """The first version of the run whose sealed content was erased (``ledger
        forget`` destroyed its key), or None: known by its key, not by its text, so
        content a user wrote as ``[erased]`` is never taken for an erasure."""
        keyring = self._ledger.keyring.for_read()
        for record in self._ledger.store.read_run(self.user_id, run_id):
            if (
                record.key_id is not None
                and keyring.reading_key(self.user_id, record.key_id) is None
            ):
                return record.version
        return None

    def runs(
        self,
        session_id: str | None = None,
        *,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """RunMetadata of this tenant's runs, oldest first, optionally in one session;
        ``order_by`` "cost", "tokens" or "wall_time" (largest first) or "created", and
        at most ``limit`` of them (only those are turned into RunMetadata: a top ten
        of a million runs costs a scan, not a million models)."""
        check_listing(order_by, limit)
        if session_id is not None:
            check_id("session_id", session_id)
        return self._ledger.read_side.runs(self, session_id, order_by, limit)

    def run_metadata(self, run_id: str) -> Any:
        """Tokens, cost, tool calls, retries, wall time and status of one run, per turn."""
        return self._ledger.read_side.run_metadata(self, check_id("run_id", run_id))

    def conversation(self, session_id: str, *, last: int | None = None) -> Any:
        """The ConversationState agents read on every LLM call (includes the latest turn).

        ``last``: only the session's last ``last`` messages (its totals still cover the
        whole session); read from the stored pages that hold them, so its cost does not
        grow with the session."""
        check_count("last", last)
        return self._ledger.read_side.conversation(self, check_id("session_id", session_id), last)

    def memories(self, namespace: str | None = None) -> list[Any]:
        """This user's current long-term memories, with the run that wrote each."""
        if namespace is not None and not isinstance(namespace, str):
            raise InvalidEvent(f"namespace must be a string, got {type(namespace).__name__}")
        return self._ledger.read_side.memories(self, namespace)

    def replay(self, run_id: str, at: int | datetime | None = None) -> Any:
        """RunState of one of this tenant's runs at a version or a time (None: its head)."""
        # The replayer opens personal content as it folds (only the sealed events).
        return self._ledger.replayer.replay(self.user_id, check_id("run_id", run_id), at)

    def fork(self, run_id: str, at: int) -> Run:
        """Start a new run in the same session whose history up to version ``at`` is the
        parent's (recorded in its run_started), to try another continuation."""
        forked: Run = self._ledger.replayer.fork(self, check_id("run_id", run_id), at)
        return forked

    def summaries(self, session_id: str | None = None) -> list[RunSummary]:
        """This tenant's registered runs and their heads (no read model needed)."""
        if session_id is not None:
            check_id("session_id", session_id)
        return [to_summary(h) for h in self._ledger.store.list_runs(self.user_id, session_id)]

    def _head(self, run_id: str) -> RunHead:
        head = self._ledger.store.run_head(self.user_id, check_id("run_id", run_id))
        if head is None:
            raise NotFound(f"run {run_id!r} not found for user {self.user_id!r}")
        return head
