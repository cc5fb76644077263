"""Point-in-time reconstruction of a run: RunState at any version or time.

A run's state is the fold of its events (with the same reducers the projectors use, so
a replayed state and a projected one never disagree). A fork's history is its parent's
events up to the fork point (recursively: forks of forks) followed by its own.

How a replay stays fast on long runs (docs/benchmarks.md, "Replay"): a version ``at``
reads the run only up to that version; the point is found on the stored records, so
only the events before it are decoded; decoding and both reducers run in one pass, one
event at a time; and the cyclic garbage collector is paused meanwhile (see
``gc_paused``).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import chain
from typing import Protocol

from ledger.errors import InvalidEvent, NotFound
from ledger.events import CATALOG, Event
from ledger.personal import Keyring
from ledger.records import Record
from ledger.store.base import EventStore
from ledger.tenant import readable_event, to_event
from projections.models import RunState
from projections.reducers import ConversationReducer, RunFold, RunMetadataReducer

Point = int | datetime | None


class Placed(Protocol):
    """What ``resolve`` reads of an event or a stored record."""

    @property
    def run_id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def recorded_at(self) -> datetime: ...


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (re-entrant, thread-safe).

    A replay allocates a few container objects per event and frees none of them before
    it returns, so the collector's generation thresholds trip over and over and each
    full collection rescans the growing state: half the time of a 100,000-event replay.
    Nothing a replay builds is cyclic garbage; the collector resumes (if it was on) when
    the last concurrent pause ends.
    """
    global _gc_pauses, _gc_resume
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                gc.enable()


def lineage(store: EventStore, user_id: str | None, run_id: str) -> list[Event]:
    """The run's history: its ancestors' events up to each fork point, then its own."""
    with gc_paused():
        return [to_event(r) for r in lineage_records(store, user_id, run_id)]


def lineage_records(
    store: EventStore, user_id: str | None, run_id: str, upto: int | None = None
) -> list[Record]:
    """The stored records of ``lineage`` (known event types only), not yet decoded.

    ``upto``: the run's own records stop at this version (its ancestors' stop at their
    fork points anyway), so a replay to an early version reads no more than it needs.
    """
    limit = None if upto is None else max(upto, 1)  # the first record tells a fork
    records = store.read_run(user_id, run_id, upto_version=limit)
    if not records and store.run_head(user_id, run_id) is None:
        raise NotFound(f"run {run_id!r} not found")
    if limit is not None and records and records[0].type not in CATALOG:
        records = store.read_run(user_id, run_id)  # which known event opens it? read on
    own = [r for r in records if r.type in CATALOG]
    inherited: list[Record] = []
    if own and own[0].type == "run_started":
        started = to_event(own[0])
        parent = started.data.get("parent_run_id")
        if parent:
            at = int(started.data.get("parent_version") or 0)
            inherited = lineage_records(store, started.user_id, parent, at)
    if upto is not None:
        own = [r for r in own if r.version <= upto]
    return inherited + own


def resolve(events: Sequence[Placed], run_id: str, at: Point) -> int:
    """How many of ``events`` (a lineage, as events or as stored records) lie at or
    before ``at``.

    ``at``: a version of ``run_id`` (None: its head), or a time, which resolves to the
    last event *recorded* at or before it (positions and the store's clock are the
    truth, not agent clocks).
    """
    own = [i for i, e in enumerate(events) if e.run_id == run_id]
    if not own:
        raise NotFound(f"run {run_id!r} has no events")
    if at is None:
        return len(events)
    if isinstance(at, datetime):
        moment = at if at.tzinfo else at.replace(tzinfo=UTC)
        chosen = [i for i in range(len(events)) if events[i].recorded_at <= moment]
        if not chosen or chosen[-1] < own[0]:  # (a fork's lineage starts before it did)
            first = events[own[0]].recorded_at.isoformat()
            raise InvalidEvent(
                f"time {moment.isoformat()} is before run {run_id!r} began (its first "
                f"event was recorded at {first}): there is no state of it to show"
            )
        return chosen[-1] + 1
    head = events[own[-1]].version
    if at < 1 or at > head:
        raise InvalidEvent(f"version {at} is outside run {run_id!r} (versions 1..{head})")
    return next(i for i in own if events[i].version == at) + 1


def fold_state(events: Iterable[Event], run_id: str) -> RunState:
    """RunState after ``events`` (a lineage prefix, non-empty), seen as run ``run_id``.

    A fork's lineage starts with its ancestors' events, so the fold is re-labelled with
    the replayed run's id, its own version and where it was forked from. A fork goes on
    from its lineage (messages, pending tool calls, completed steps) but accounts for
    its own events only (tokens, cost, tool calls, retries, wall time, model, status),
    as its run-metadata read model does: its parent's spending is its parent's. One
    pass: each event goes through the reducers (``initial`` then ``step``, as
    ``Reducer.fold``), so ``events`` may be a generator that decodes as it goes.
    """
    runs, conversations = RunMetadataReducer(), ConversationReducer()
    it = iter(events)
    first = next(it, None)
    if first is None:
        raise ValueError("a run state needs at least one event")
    meta, conversation = runs.initial(first), conversations.initial(first)
    forked = first.run_id != run_id
    own: RunFold | None = None  # a fork's own events' fold (None: not a fork, or none yet)
    started: Event | None = None
    last = first
    for event in chain((first,), it):
        runs.step(meta, event)
        conversations.step(conversation, event)
        if forked and event.run_id == run_id:
            if own is None:
                own = runs.initial(event)
            runs.step(own, event)
        if started is None and event.type == "run_started" and event.run_id == run_id:
            started = event
        last = event
    state = RunState.from_states(
        meta if own is None else own,
        conversation.messages,
        last.recorded_at,
        last.position,
        resume=meta,
    )
    return state.model_copy(
        update={
            "run_id": run_id,
            "user_id": last.user_id,
            "session_id": last.session_id,
            "version": last.version if last.run_id == run_id else 0,
            "parent_run_id": None if started is None else started.data.get("parent_run_id"),
            "parent_version": None if started is None else started.data.get("parent_version"),
        }
    )


def replay(
    store: EventStore,
    user_id: str | None,
    run_id: str,
    at: Point = None,
    keyring: Keyring | None = None,
) -> RunState:
    """The state of ``run_id`` at ``at`` (a version, a time, or None for its head).

    With a ``keyring``, personal content is opened (or marked erased) event by event as
    it is folded, only for events that were sealed; without one it stays sealed."""
    upto = int(at) if isinstance(at, int) and at >= 1 else None
    keyring = None if keyring is None else keyring.for_read()  # keys looked up once
    with gc_paused():
        records = lineage_records(store, user_id, run_id, upto)
        cut = resolve(records, run_id, at)
        return fold_state((readable_event(r, keyring) for r in records[:cut]), run_id)
