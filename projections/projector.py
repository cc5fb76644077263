"""A projector: a named, versioned reducer whose states are stored as documents.

A stored event that cannot be folded does not stop the read side. The API validates
what it stores, but a login of the application role can INSERT any row for its own
tenant, and one such row would otherwise stall every projector, for every tenant, at
its position. Such an event (its payload does not decode, or the reducer raises on it)
is skipped, logged as an error naming the run and version, and counted as folded, in
the same way wherever read models are computed (live, rebuilds, read-your-writes), so
a read model still equals the fold of its log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from ledger.errors import InvalidEvent
from ledger.events import CATALOG, Event
from ledger.records import Record
from ledger.tenant import to_event

log = logging.getLogger(__name__)

S = TypeVar("S")


class Reducer(Protocol[S]):
    """A pure fold of events into one state per key (see ``projections.reducers``)."""

    def key(self, event: Event) -> str | None:
        """The document an event belongs to, or None if this read model ignores it."""

    @property
    def key_field(self) -> str | None:
        """The ``Event`` attribute ``key`` always returns, if it is one (None otherwise):
        lets the runner group a batch by document without calling ``key`` per event."""

    def initial(self, event: Event) -> S:
        """The empty state of the document ``event`` opens."""

    def step(self, state: S, event: Event) -> None:
        """Fold ``event`` into ``state`` in place."""

    def encode(self, state: S) -> bytes:
        """The state as stored bytes."""

    def decode(self, data: bytes) -> S:
        """The state back from stored bytes."""


class _Envelope(msgspec.Struct):
    """What a document holds: the state and, per run, the last version folded into it.

    ``applied`` makes applying idempotent per run (an event at or below it is skipped)
    and lets readers fold the events a projector has not reached yet (read your writes).
    """

    applied: dict[str, int]
    state: msgspec.Raw


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Envelope).decode


@dataclass
class Document(Generic[S]):
    """A decoded document: its state and the per-run versions it includes."""

    state: S
    applied: dict[str, int]


@dataclass(frozen=True)
class Projector(Generic[S]):
    """A read model: ``name`` in storage, ``version`` bumps force a rebuild."""

    name: str
    version: int
    reducer: Reducer[S]

    def load(self, data: bytes) -> Document[S]:
        """Decode a stored document."""
        envelope = _decode(data)
        return Document(self.reducer.decode(bytes(envelope.state)), envelope.applied)

    def dump(self, doc: Document[S]) -> bytes:
        """Encode a document for storage."""
        return _encode(_Envelope(doc.applied, msgspec.Raw(self.reducer.encode(doc.state))))

    def fold_stored(
        self,
        data: bytes | None,
        events: Sequence[Event],
        *,
        loaded: Document[S] | None = None,
        quiet: bool = False,
    ) -> tuple[Document[S] | None, int]:
        """``fold`` of ``events`` onto the stored document ``data`` (None: none yet;
        ``loaded``: ``data`` already decoded, folded into), skipping each event the
        reducer raises on: the document is folded again from ``data`` without it (a
        reducer folds in place, so the failed attempt is thrown away), and the event
        counts as folded. Logged as an error (``quiet``: at debug, for reads, which fold
        what the projector reports). Returns the document and how many were skipped."""
        skipped: dict[int, Event] = {}  # by id(): the very events given
        while True:
            doc: Document[S] | None = loaded
            if doc is None and data is not None:
                doc = self.load(data)
            loaded = None
            todo = [e for e in events if id(e) not in skipped] if skipped else events
            try:
                folded = self.fold(doc, todo)
            except Unfoldable as exc:
                skipped[id(exc.event)] = exc.event
                report(exc.event, f"{self.name} raised {exc.cause!r}", quiet)
                continue
            if folded is not None:
                for event in skipped.values():
                    if folded.applied.get(event.run_id, 0) < event.version:
                        folded.applied[event.run_id] = event.version
            return folded, len(skipped)

    def fold(self, doc: Document[S] | None, events: Sequence[Event]) -> Document[S] | None:
        """Fold ``events`` (all of this document's key, in log order) into ``doc``, in
        place; ``Unfoldable``, naming the event, if the reducer raises on one. (A
        sequence, not any iterable: what raises while iterating must not be taken for
        the reducer raising on the event before it.)"""
        step = self.reducer.step
        pending = iter(events)
        event: Event | None = None
        try:
            if doc is None:
                event = next(pending, None)
                if event is None:
                    return None
                doc = Document(self.reducer.initial(event), {event.run_id: event.version})
                step(doc.state, event)
            state, applied = doc.state, doc.applied
            # The run's entry of ``applied`` is kept in locals while the run does not
            # change (a document's events come mostly in runs of one run_id): the same
            # check and the same final ``applied`` as looking it up, and setting it, for
            # every event.
            run_id, last = "", 0  # last: the version of run_id folded in so far
            for event in pending:
                if event.run_id != run_id:
                    if last:
                        applied[run_id] = last
                    run_id = event.run_id
                    last = applied.get(run_id, 0)
                version = event.version
                if version <= last:
                    continue  # already in this document: never apply twice
                step(state, event)
                last = version
        except Exception as exc:
            if event is None:  # not the reducer's
                raise
            raise Unfoldable(event, exc) from exc
        if last:
            applied[run_id] = last
        return doc


class Unfoldable(Exception):
    """The reducer raised ``cause`` on ``event``."""

    def __init__(self, event: Event, cause: Exception) -> None:
        super().__init__(f"{event.type} at version {event.version} of run {event.run_id!r}")
        self.event = event
        self.cause = cause


def decode(records: Sequence[Record]) -> list[Event]:
    """The catalog events among ``records`` (rows of other writers are not projected),
    as readers of the log get them, hashes and all."""
    return [to_event(r) for r in records if r.type in _KNOWN_TYPES]


def decode_for_fold(records: Sequence[Record], *, quiet: bool = False) -> tuple[list[Event], int]:
    """The catalog events among ``records`` (rows of other writers are not projected),
    decoded for reducers: ``hash`` and ``prev_hash`` are left empty, as no reducer reads
    them (a sixth of decoding is their hex). A record that does not decode is skipped
    and reported (see the module docstring; ``quiet`` as for ``fold_stored``). Returns
    the events and how many records were skipped."""
    try:
        return [to_event(r, hashes=False) for r in records if r.type in _KNOWN_TYPES], 0
    except Exception:  # (an upcaster may raise anything, as a reducer may)
        pass  # the slow way, one by one, to skip exactly the records that do not decode
    events, skipped = [], 0
    for record in records:
        if record.type in _KNOWN_TYPES:
            try:
                events.append(to_event(record, hashes=False))
            except Exception as exc:
                skipped += 1
                report(record, str(exc) if isinstance(exc, InvalidEvent) else repr(exc), quiet)
    return events, skipped


_KNOWN_TYPES = frozenset(CATALOG.names)


def report(event: Event | Record, why: str, quiet: bool = False) -> None:
    """Log that ``event`` was skipped by the read side, and why."""
    log.log(
        logging.DEBUG if quiet else logging.ERROR,
        "skipped stored event %s of run %r (user %r, %s) in the read models: %s; the "
        "read models go on without it",
        event.version,
        event.run_id,
        event.user_id,
        event.type,
        why,
    )


def describe(projector: Projector[Any]) -> str:
    """``name@version`` for logs and status."""
    return f"{projector.name}@{projector.version}"
