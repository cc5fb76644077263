"""Point-in-time reconstruction of a run: RunState at any version or time.

A run's state is the fold of its events (with the same reducers the projectors use, so
a replayed state and a projected one never disagree). A fork's history is its parent's
events up to the fork point (recursively: forks of forks) followed by its own.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ledger.errors import InvalidEvent, NotFound
from ledger.events import CATALOG, Event
from ledger.store.base import EventStore
from ledger.tenant import to_event
from projections.models import RunState
from projections.reducers import ConversationReducer, RunMetadataReducer

Point = int | datetime | None


def lineage(store: EventStore, user_id: str | None, run_id: str) -> list[Event]:
    """The run's history: its ancestors' events up to each fork point, then its own."""
    records = store.read_run(user_id, run_id)
    if not records and store.run_head(user_id, run_id) is None:
        raise NotFound(f"run {run_id!r} not found")
    own = [to_event(r) for r in records if r.type in CATALOG.names]
    if own and own[0].type == "run_started" and own[0].data.get("parent_run_id"):
        parent = own[0].data["parent_run_id"]
        upto = int(own[0].data.get("parent_version") or 0)
        inherited = [e for e in lineage(store, own[0].user_id, parent) if _within(e, parent, upto)]
        return inherited + own
    return own


def _within(event: Event, parent: str, upto: int) -> bool:
    # The parent's own events stop at the fork point; its ancestors' were cut already.
    return event.run_id != parent or event.version <= upto


def resolve(events: list[Event], run_id: str, at: Point) -> int:
    """How many of ``events`` (a lineage) lie at or before ``at``.

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
        if not chosen:
            first = events[0].recorded_at.isoformat()
            raise InvalidEvent(
                f"--at-time {moment.isoformat()} is before run {run_id!r} "
                f"began (first event recorded at {first})"
            )
        return chosen[-1] + 1
    head = events[own[-1]].version
    if at < 1 or at > head:
        raise InvalidEvent(f"version {at} is outside run {run_id!r} (versions 1..{head})")
    return next(i for i in own if events[i].version == at) + 1


def fold_state(events: list[Event], run_id: str) -> RunState:
    """RunState after ``events`` (a lineage prefix, non-empty), seen as run ``run_id``.

    A fork's lineage starts with its ancestors' events, so the fold is re-labelled with
    the replayed run's id, its own version and where it was forked from.
    """
    meta = RunMetadataReducer().fold(events)
    conversation = ConversationReducer().fold(events)
    assert meta is not None and conversation is not None
    last = events[-1]
    started = next((e for e in events if e.run_id == run_id and e.type == "run_started"), None)
    state = RunState.from_states(meta, conversation.messages, last.recorded_at, last.position)
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


def replay(store: EventStore, user_id: str | None, run_id: str, at: Point = None) -> RunState:
    """The state of ``run_id`` at ``at`` (a version, a time, or None for its head)."""
    events = lineage(store, user_id, run_id)
    return fold_state(events[: resolve(events, run_id, at)], run_id)
