"""A projector: a named, versioned reducer whose states are stored as documents."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from ledger.events import Event

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

    def fold(self, doc: Document[S] | None, events: Iterable[Event]) -> Document[S] | None:
        """Fold ``events`` (all of this document's key, in log order) into ``doc``, in place."""
        step = self.reducer.step
        pending = iter(events)
        if doc is None:
            first = next(pending, None)
            if first is None:
                return None
            doc = Document(self.reducer.initial(first), {first.run_id: first.version})
            step(doc.state, first)
        state, applied = doc.state, doc.applied
        # The run's entry of ``applied`` is kept in locals while the run does not change
        # (a document's events come mostly in runs of one run_id): the same check and
        # the same final ``applied`` as looking it up, and setting it, for every event.
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
        if last:
            applied[run_id] = last
        return doc


def describe(projector: Projector[Any]) -> str:
    """``name@version`` for logs and status."""
    return f"{projector.name}@{projector.version}"
