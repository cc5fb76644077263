"""The reducers: the one place where events are folded into state.

Used by BOTH the projector runner (read models) and the replay engine, so a replayed
state and a projected state agree by construction. Each reducer has:

* ``key(event)``: the document an event belongs to (None: this model ignores it);
* ``initial(event)``: the empty state of the document that event opens;
* ``step(state, event)``: fold one event into ``state`` in place (the runner owns the
  states it decoded, and long sessions must not be copied per event);
* the pure forms built on it: ``apply(state, event)`` returns a new state and leaves
  ``state`` alone; ``fold(events, state=None)``; ``copy(state)``;
* ``encode``/``decode``: the state as stored bytes (msgspec JSON).

States are msgspec Structs; the public shapes (pydantic) are built from them in
``projections.models``. Nothing here does I/O, reads a clock or changes a global.
"""

from projections.reducers._base import Paged, Reducer, millis
from projections.reducers._conversation import (
    Conversation,
    ConversationReducer,
    Message,
    Span,
)
from projections.reducers._memory import (
    Memories,
    MemoryChange,
    MemoryItem,
    MemoryReducer,
    memory_slot,
)
from projections.reducers._runs import (
    RunFold,
    RunMetadataReducer,
    Step,
    ToolCallRef,
    ToolStats,
    Turn,
)

__all__ = [
    "Conversation",
    "ConversationReducer",
    "Memories",
    "MemoryChange",
    "MemoryItem",
    "MemoryReducer",
    "Message",
    "Paged",
    "Reducer",
    "RunFold",
    "RunMetadataReducer",
    "Span",
    "Step",
    "ToolCallRef",
    "ToolStats",
    "Turn",
    "memory_slot",
    "millis",
]
