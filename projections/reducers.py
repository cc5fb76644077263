"""The reducers: the one place where events are folded into state.

Used by BOTH the projector runner (read models) and the replay engine, so a replayed
state and a projected state agree by construction. Each reducer has:

* ``key(event)``: the document an event belongs to (None: this model ignores it);
* ``initial(event)``: the empty state of the document that event opens;
* ``step(state, event)``: fold one event into ``state`` in place (the runner owns the
  states it decoded, and long sessions must not be copied per event);
* ``copy(state)``, and the pure forms built on them: ``apply(state, event)`` returns a
  new state and leaves ``state`` alone; ``fold(events, state=None)``;
* ``encode``/``decode``: the state as stored bytes (msgspec JSON).

States are msgspec Structs; the public shapes (pydantic) are built from them in
``projections.models``. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from ledger.events import Event
from projections.prices import PriceTable

S = TypeVar("S")


def millis(start: datetime, end: datetime) -> float:
    """Milliseconds from ``start`` to ``end`` (never negative: agent clocks drift)."""
    return max(0.0, (end - start).total_seconds() * 1000)


def _tokens(event: Event) -> tuple[int, int, int, int]:
    usage = event.data.get("usage") or {}
    return (
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        int(usage.get("cache_read_input_tokens") or 0),
        int(usage.get("reasoning_tokens") or 0),
    )


class Reducer(Generic[S]):
    """Shared pure forms (``apply``, ``fold``) and the msgspec coding of a state type."""

    state_type: type[S]

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(self.state_type)

    def key(self, event: Event) -> str | None:
        raise NotImplementedError

    def initial(self, event: Event) -> S:
        raise NotImplementedError

    def step(self, state: S, event: Event) -> None:
        raise NotImplementedError

    def encode(self, state: S) -> bytes:
        """The state as stored bytes."""
        return self._encoder.encode(state)

    def decode(self, data: bytes) -> S:
        """A state back from stored bytes."""
        state: S = self._decoder.decode(data)
        return state

    def copy(self, state: S) -> S:
        """An independent copy of ``state`` (via its encoding: deep, and exact)."""
        return self.decode(self.encode(state))

    def apply(self, state: S, event: Event) -> S:
        """``state`` with ``event`` folded in; ``state`` itself is left unchanged."""
        new = self.copy(state)
        self.step(new, event)
        return new

    def fold(self, events: Iterable[Event], state: S | None = None) -> S | None:
        """Fold ``events`` (in log order) onto a copy of ``state``, or from empty."""
        current = None if state is None else self.copy(state)
        for event in events:
            if current is None:
                current = self.initial(event)
            self.step(current, event)
        return current


# -- conversation ---------------------------------------------------------------------


class Message(msgspec.Struct, omit_defaults=True):
    """One entry of a conversation; fields left UNSET are absent from its JSON."""

    role: str
    timestamp: datetime
    content: str | UnsetType = UNSET
    tool_calls: list[Any] | UnsetType = UNSET
    call_id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    input: Any | UnsetType = UNSET
    output: Any | UnsetType = UNSET
    error: str | UnsetType = UNSET
    duration_ms: float | UnsetType = UNSET


class Span(msgspec.Struct):
    """When a run's first and last events happened."""

    first: datetime
    last: datetime


class Conversation(msgspec.Struct):
    """The state agents read on every LLM call (one per session)."""

    session_id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    messages: list[Message] = []
    model: str | None = None
    total_tokens: int = 0
    tool_calls: int = 0
    retries: int = 0
    spans: dict[str, Span] = {}
    open_calls: dict[str, int] = {}  # call_id -> index of its tool entry in messages

    @property
    def wall_time_ms(self) -> float:
        """Summed over the session's runs: last event minus first, per run."""
        return sum(millis(s.first, s.last) for s in self.spans.values())


class ConversationReducer(Reducer[Conversation]):
    """Folds a session's events into its Conversation."""

    state_type = Conversation

    def key(self, event: Event) -> str | None:
        return event.session_id

    def initial(self, event: Event) -> Conversation:
        return Conversation(
            event.session_id,
            event.user_id,
            event.occurred_at,
            event.occurred_at,
            [],
            spans={},
            open_calls={},
        )

    def step(self, state: Conversation, event: Event) -> None:
        when, d = event.occurred_at, event.data
        state.updated_at = max(state.updated_at, when)
        span = state.spans.get(event.run_id)
        if span is None:
            state.spans[event.run_id] = Span(when, when)
        else:
            span.first, span.last = min(span.first, when), max(span.last, when)
        match event.type:
            case "run_started":
                state.model = d.get("model") or state.model
            case "message_received":
                state.messages.append(Message(d["role"], when, content=d["content"]))
            case "model_responded":
                state.model = d.get("model") or state.model
                tokens_in, tokens_out, _, _ = _tokens(event)
                state.total_tokens += tokens_in + tokens_out
                calls = d.get("tool_calls") or []
                state.messages.append(
                    Message(
                        "assistant",
                        when,
                        content=d.get("content") or "",
                        tool_calls=calls if calls else UNSET,
                    )
                )
            case "tool_called":
                state.tool_calls += 1
                state.open_calls[d["call_id"]] = len(state.messages)
                state.messages.append(
                    Message(
                        "tool", when, call_id=d["call_id"], name=d["name"], input=d.get("input")
                    )
                )
            case "tool_returned":
                index = state.open_calls.pop(d["call_id"], None)
                if index is None:
                    entry = Message("tool", when, call_id=d["call_id"], name=d["name"])
                    state.messages.append(entry)
                else:
                    entry = state.messages[index]
                if d.get("error") is not None:
                    entry.error = d["error"]
                else:
                    entry.output = d.get("output")
                if d.get("duration_ms") is not None:
                    entry.duration_ms = d["duration_ms"]
            case "retry_attempted":
                state.retries += 1
            case _:
                pass


# -- run metadata ---------------------------------------------------------------------


class ToolStats(msgspec.Struct):
    """Calls of one tool within a run."""

    calls: int = 0
    errors: int = 0
    total_duration_ms: float = 0.0
    max_duration_ms: float = 0.0


class Turn(msgspec.Struct):
    """One turn: from a message the agent received to the next one."""

    index: int
    started_at: datetime
    ended_at: datetime
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    model_calls: int = 0
    model_latency_ms: float = 0.0
    tool_calls: int = 0
    tool_duration_ms: float = 0.0
    retries: int = 0
    retry_delay_ms: float = 0.0
    errors: int = 0

    @property
    def wall_time_ms(self) -> float:
        """From the turn's first event to its last."""
        return millis(self.started_at, self.ended_at)


class ToolCallRef(msgspec.Struct):
    """A tool call, where it happened, and how long it took."""

    call_id: str
    name: str
    input: Any = None
    turn: int = 0
    duration_ms: float | None = None


class Step(msgspec.Struct):
    """A completed step: the resume marker for interrupted runs."""

    step: str
    index: int


class RunFold(msgspec.Struct):
    """Everything an operator asks of one run, per run and per turn."""

    run_id: str
    user_id: str
    session_id: str
    started_at: datetime
    updated_at: datetime
    agent: str | None = None
    model: str | None = None
    parent_run_id: str | None = None
    parent_version: int | None = None
    status: str = "running"
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = 0.0
    model_calls: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    retries: int = 0
    tools: dict[str, ToolStats] = {}
    turns: list[Turn] = []
    pending: dict[str, ToolCallRef] = {}
    slowest_tool_call: ToolCallRef | None = None
    completed_steps: list[Step] = []
    version: int = 0
    position: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    @property
    def wall_time_ms(self) -> float:
        """From the run's first event to its last."""
        return millis(self.started_at, self.updated_at)


def _add_cost(total: float | None, cost: float | None) -> float | None:
    return None if total is None or cost is None else total + cost


class RunMetadataReducer(Reducer[RunFold]):
    """Folds a run's events into its RunFold, pricing model calls with ``prices``."""

    state_type = RunFold

    def __init__(self, prices: PriceTable | None = None) -> None:
        super().__init__()
        self.prices = prices or PriceTable.default()

    def key(self, event: Event) -> str | None:
        return event.run_id

    def initial(self, event: Event) -> RunFold:
        return RunFold(
            event.run_id,
            event.user_id,
            event.session_id,
            event.occurred_at,
            event.occurred_at,
            tools={},
            turns=[],
            pending={},
            completed_steps=[],
        )

    def _turn(self, state: RunFold, event: Event) -> Turn:
        opens = event.type == "message_received"
        if opens or not state.turns:
            state.turns.append(Turn(len(state.turns), event.occurred_at, event.occurred_at))
        turn = state.turns[-1]
        turn.ended_at = max(turn.ended_at, event.occurred_at)
        return turn

    def step(self, state: RunFold, event: Event) -> None:
        d = event.data
        state.updated_at = max(state.updated_at, event.occurred_at)
        state.version, state.position = event.version, event.position
        if event.type == "run_started":
            state.agent, state.model = d.get("agent"), d.get("model")
            state.parent_run_id, state.parent_version = (
                d.get("parent_run_id"),
                d.get("parent_version"),
            )
            return
        turn = self._turn(state, event)
        match event.type:
            case "model_responded":
                tokens_in, tokens_out, cached, reasoning = _tokens(event)
                state.model = d.get("model") or state.model
                cost = self.prices.cost(
                    d.get("model") or state.model, tokens_in, tokens_out, cached
                )
                state.input_tokens += tokens_in
                state.output_tokens += tokens_out
                state.cache_read_input_tokens += cached
                state.reasoning_tokens += reasoning
                state.model_calls += 1
                state.cost_usd = _add_cost(state.cost_usd, cost)
                turn.input_tokens += tokens_in
                turn.output_tokens += tokens_out
                turn.cost_usd = _add_cost(turn.cost_usd, cost)
                turn.model_calls += 1
                turn.model_latency_ms += float(d.get("latency_ms") or 0)
            case "tool_called":
                state.tool_calls += 1
                turn.tool_calls += 1
                state.tools.setdefault(d["name"], ToolStats()).calls += 1
                state.pending[d["call_id"]] = ToolCallRef(
                    d["call_id"], d["name"], d.get("input"), turn.index
                )
            case "tool_returned":
                self._tool_returned(state, turn, event)
            case "retry_attempted":
                state.retries += 1
                turn.retries += 1
                turn.retry_delay_ms += float(d.get("delay_ms") or 0)
            case "step_completed":
                state.completed_steps.append(Step(d["step"], d["index"]))
            case "run_completed":
                state.status, state.error = "completed", None
            case "run_failed":
                state.status, state.error = "failed", d.get("error")
                turn.errors += 1
            case _:
                pass

    def _tool_returned(self, state: RunFold, turn: Turn, event: Event) -> None:
        d = event.data
        call = state.pending.pop(d["call_id"], None)
        stats = state.tools.setdefault(d["name"], ToolStats())
        duration = d.get("duration_ms")
        if d.get("error") is not None:
            state.tool_errors += 1
            stats.errors += 1
            turn.errors += 1
        if duration is None:
            return
        stats.total_duration_ms += duration
        stats.max_duration_ms = max(stats.max_duration_ms, duration)
        turn.tool_duration_ms += duration
        slowest = state.slowest_tool_call
        if slowest is None or (slowest.duration_ms or 0) < duration:
            ref = call or ToolCallRef(d["call_id"], d["name"], None, turn.index)
            ref.duration_ms = duration
            state.slowest_tool_call = ref


# -- memory ---------------------------------------------------------------------------


class MemoryItem(msgspec.Struct):
    """One current memory and the run that wrote it."""

    namespace: str
    key: str
    value: Any
    run_id: str
    written_at: datetime
    version: int


class MemoryChange(msgspec.Struct):
    """One write or forget, kept in the history."""

    op: str  # "write" | "forget"
    namespace: str
    key: str
    run_id: str
    at: datetime
    value: Any = None


class Memories(msgspec.Struct):
    """A user's long-term memory: the current view and the history behind it."""

    user_id: str
    current: dict[str, MemoryItem] = {}
    history: list[MemoryChange] = []


def memory_slot(namespace: str, key: str) -> str:
    """Where a (namespace, key) lives in ``Memories.current``."""
    return f"{namespace}\x1f{key}"


class MemoryReducer(Reducer[Memories]):
    """Folds a user's memory events (across all runs) into Memories."""

    state_type = Memories

    def key(self, event: Event) -> str | None:
        return event.user_id

    def initial(self, event: Event) -> Memories:
        return Memories(event.user_id, current={}, history=[])

    def step(self, state: Memories, event: Event) -> None:
        d = event.data
        if event.type not in ("memory_written", "memory_forgotten"):
            return
        run_id = d.get("source_run") or event.run_id
        slot = memory_slot(d["namespace"], d["key"])
        if event.type == "memory_written":
            state.current[slot] = MemoryItem(
                d["namespace"], d["key"], d["value"], run_id, event.occurred_at, event.version
            )
            state.history.append(
                MemoryChange(
                    "write", d["namespace"], d["key"], run_id, event.occurred_at, d["value"]
                )
            )
        else:
            state.current.pop(slot, None)
            state.history.append(
                MemoryChange("forget", d["namespace"], d["key"], run_id, event.occurred_at)
            )
