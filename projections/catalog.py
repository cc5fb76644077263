"""The read models this package maintains: their names, versions and reducers.

Bump a version when its reducer changes what it stores: runners then rebuild that read
model beside the live one and swap it in (``ledger projections rebuild`` does the same
by hand).
"""

from __future__ import annotations

from typing import Any

from ledger.errors import InvalidEvent
from projections.prices import PriceTable
from projections.projector import Projector
from projections.reducers import ConversationReducer, MemoryReducer, RunMetadataReducer

CONVERSATION = "conversation"
RUN_METADATA = "run_metadata"
MEMORY = "memory"


def default_projectors(prices: PriceTable | None = None) -> list[Projector[Any]]:
    """Conversation per session, run metadata per run, memory per user."""
    return [
        # 3: a result goes to the earliest open call of its call_id (ids may repeat).
        Projector(CONVERSATION, 3, ConversationReducer()),
        # 3: costs of models that only start like a known one are None, not its price.
        # 4: the same pairing; pending calls are a list (a call_id may repeat).
        Projector(RUN_METADATA, 4, RunMetadataReducer(prices)),
        # 2: memory slots no longer collide when a namespace or key holds the separator.
        Projector(MEMORY, 2, MemoryReducer()),
    ]


def projector_named(name: str) -> Projector[Any]:
    """One of the default projectors; InvalidEvent naming the known ones otherwise."""
    for projector in default_projectors():
        if projector.name == name:
            return projector
    known = ", ".join(p.name for p in default_projectors())
    raise InvalidEvent(f"no read model named {name!r} (known: {known})")
