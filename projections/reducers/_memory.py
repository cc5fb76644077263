"""The memory read model (one document per user): current memories, with the run that
wrote each, across all the user's runs; and every write and forget, in order."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from ledger.events import Event
from projections.reducers._base import Reducer


class MemoryItem(msgspec.Struct):
    """One current memory and the run that wrote it."""

    namespace: str
    key: str
    value: Any
    run_id: str
    written_at: datetime
    version: int


class MemoryChange(msgspec.Struct):
    """One write or forget, as kept in the history."""

    op: Literal["write", "forget"]
    namespace: str
    key: str
    run_id: str
    at: datetime
    value: Any = None


class Memories(msgspec.Struct):
    """A user's long-term memory: the current view and the history behind it."""

    user_id: str
    current: dict[str, MemoryItem] = {}  # memory_slot(namespace, key) -> item
    history: list[MemoryChange] = []
    # ``reducers.Paged``: ``history`` holds the changes from ``offset`` on; the stored
    # read model keeps the earlier ones in pages (0 when folded whole).
    offset: int = 0
    earlier: dict[int, list[MemoryChange]] = {}


def memory_slot(namespace: str, key: str) -> str:
    """Where a (namespace, key) lives in ``Memories.current``: one slot per pair, whatever
    characters either holds (the namespace's length marks where it ends)."""
    return f"{len(namespace)}:{namespace}\x1f{key}"


class MemoryReducer(Reducer[Memories]):
    """Folds a user's memory events (across all runs, log order) into Memories."""

    state_type = Memories
    paged_field = "history"

    key_field = "user_id"

    def key(self, event: Event) -> str | None:
        """The user, for every event: other events change nothing, but keying them too
        lets the document record how far each run has been read (``applied``), so a read
        folds only what is new instead of rescanning every run after its last memory."""
        return event.user_id

    def initial(self, event: Event) -> Memories:
        """An empty memory for the user of ``event``."""
        return Memories(event.user_id)

    def step(self, state: Memories, event: Event) -> None:
        """Fold ``event`` into ``state`` in place (only memory events change it)."""
        if event.type not in ("memory_written", "memory_forgotten"):
            return
        d, when = event.data, event.occurred_at
        namespace, key = d["namespace"], d["key"]
        run_id = d.get("source_run") or event.run_id
        slot = memory_slot(namespace, key)
        if event.type == "memory_written":
            value = d["value"]
            state.current[slot] = MemoryItem(namespace, key, value, run_id, when, event.version)
            state.history.append(MemoryChange("write", namespace, key, run_id, when, value))
        else:
            state.current.pop(slot, None)
            state.history.append(MemoryChange("forget", namespace, key, run_id, when))
