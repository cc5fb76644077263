"""What every reducer shares: the pure forms built on ``step`` and the stored encoding."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from ledger.events import Event

S = TypeVar("S")


class Paged(Protocol):
    """A state whose leading items may be stored apart from it, in pages.

    A long session's conversation (a long run's turns, a user's memory history) would
    otherwise be read, folded and written back whole for every batch that touches it.
    The projector (``projections.projector``) moves full pages of the oldest items out
    of the state it stores, always keeping at least one page of the newest (so the last
    item is always held); the state says how many it moved (``offset``: its own items
    come after them), and a fold that must change an item in a page moved out (a tool's
    result for a call made long before) is handed that page back first (``earlier``).
    A state folded from the start (replay, reads) has ``offset`` 0 and everything in it.
    Index items as ``offset + position in the list``.
    """

    offset: int
    #: Pages handed back for a fold, by the index of their first item.
    earlier: dict[int, list[Any]]


def millis(start: datetime, end: datetime) -> float:
    """Milliseconds from ``start`` to ``end`` (never negative: agent clocks drift)."""
    return max(0.0, (end - start).total_seconds() * 1000)


def tokens(usage: dict[str, Any] | None) -> tuple[int, int, int, int]:
    """(input, output, cache_read_input, reasoning) tokens; absent counts are 0."""
    if not usage:
        return 0, 0, 0, 0
    return (
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        int(usage.get("cache_read_input_tokens") or 0),
        int(usage.get("reasoning_tokens") or 0),
    )


class Reducer(Generic[S]):
    """A read model's fold: subclasses give ``state_type``, ``key``, ``initial``, ``step``.

    ``step`` folds in place, because the projector owns the states it decoded and a long
    session must not be copied per event. Everything else here is pure: ``apply`` and
    ``fold`` never change a state the caller passed in.

    Reducers fold domain data, never the chain: projector runners hand them events
    whose ``hash`` and ``prev_hash`` are empty (``to_event(..., hashes=False)``), replay
    hands them the real ones, and the state must not differ.
    """

    state_type: type[S]
    #: The ``Event`` attribute ``key`` returns for every event, when it is one: the runner
    #: then groups a batch by document without a call per event (None: it calls ``key``).
    #: A subclass that overrides ``key`` sets this to match, or to None.
    key_field: str | None = None
    #: The state's list field whose oldest items are paged out (``Paged``); None: states
    #: are stored whole. A page decodes as that field's type.
    paged_field: str | None = None

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(self.state_type)
        fields = {f.name: f.type for f in msgspec.structs.fields(self.state_type)}  # type: ignore[arg-type]
        page_type = list[Any] if self.paged_field is None else fields[self.paged_field]
        self._page_decoder = msgspec.json.Decoder(page_type)

    def key(self, event: Event) -> str | None:
        """The document ``event`` belongs to, or None if this read model ignores it."""
        raise NotImplementedError

    def initial(self, event: Event) -> S:
        """The empty state of the document ``event`` opens (``event`` is not folded in)."""
        raise NotImplementedError

    def step(self, state: S, event: Event) -> None:
        """Fold ``event`` into ``state``, in place."""
        raise NotImplementedError

    def encode(self, state: S) -> bytes:
        """The state as stored bytes (msgspec JSON)."""
        return self._encoder.encode(state)

    def decode(self, data: bytes) -> S:
        """A state back from its stored bytes (of an earlier shape too: ``upgrade``)."""
        try:
            state: S = self._decoder.decode(data)
        except msgspec.ValidationError:
            upgraded = self.upgrade(msgspec.json.decode(data))
            if upgraded is None:
                raise
            state = self._decoder.decode(self._encoder.encode(upgraded))
        return state

    def upgrade(self, stored: Any) -> Any | None:
        """``stored``, a state of an earlier shape as plain JSON, in the current shape
        (None: not a shape this reducer knows).

        A read model whose stored shape changes gets a new projector version, and so a
        rebuild; until the rebuild swaps in, readers of this release still read the
        documents of the earlier one, and must not misread them. Called only for bytes
        the current shape rejects, so documents of the current shape pay nothing.
        """
        return None

    # -- paging (reducers with a ``paged_field``) -------------------------------------
    def items(self, state: S) -> list[Any]:
        """The items ``state`` holds itself (those after its ``offset``)."""
        assert self.paged_field is not None
        items: list[Any] = getattr(state, self.paged_field)
        return items

    def with_items(self, state: S, items: list[Any], offset: int) -> S:
        """A shallow copy of ``state`` holding ``items``, the ones after ``offset``, and
        no pages handed back."""
        assert self.paged_field is not None
        fields = {self.paged_field: items, "offset": offset, "earlier": {}}
        return msgspec.structs.replace(state, **fields)  # type: ignore[type-var]

    def touched(self, state: S, events: Iterable[Event]) -> set[int]:
        """Indices of the items before ``state``'s offset that folding ``events`` into
        it would change: their pages must be handed back first."""
        return set()

    def encode_page(self, items: list[Any]) -> bytes:
        """A page of items as stored bytes."""
        return self._encoder.encode(items)

    def decode_page(self, data: bytes) -> list[Any]:
        """A page of items back from its stored bytes."""
        items: list[Any] = self._page_decoder.decode(data)
        return items

    def copy(self, state: S) -> S:
        """A deep, independent copy of ``state`` (through its encoding, so exact)."""
        return self.decode(self.encode(state))

    def apply(self, state: S, event: Event) -> S:
        """A new state: ``state`` with ``event`` folded in; ``state`` itself is unchanged."""
        new = self.copy(state)
        self.step(new, event)
        return new

    def fold(self, events: Iterable[Event], state: S | None = None) -> S | None:
        """Fold ``events`` (log order) onto a copy of ``state``, or from empty; None if none."""
        current = None if state is None else self.copy(state)
        for event in events:
            if current is None:
                current = self.initial(event)
            self.step(current, event)
        return current
