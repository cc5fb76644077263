"""The read models' public shapes (pydantic): what ``t.conversation()``, ``t.runs()``,
``t.run_metadata()``, ``t.memories()`` and ``t.replay()`` return and ``--json`` prints.

``model_dump(mode="json")`` gives exactly the JSON of CONTRACT.md (datetimes in UTC,
RFC 3339 with "Z"); fields beyond it are additions, never renames. Each shape is built
from a reducer's state (``projections.reducers``); ``model_json_schema()`` documents it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import AfterValidator, BaseModel, WithJsonSchema

from ledger.events import Event
from projections import reducers as r
from projections.prices import PriceTable


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
"""A datetime kept in UTC, so its JSON ends in "Z" whatever the agent's clock zone."""

Status = Literal["running", "completed", "failed"]

_STRING: dict[str, Any] = {"type": "string"}
_ANY: dict[str, Any] = {}
_TIMESTAMP = {"type": "string", "format": "date-time"}


def _shape(title: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "properties": properties,
        "required": ["role", *required, "timestamp"],
        "additionalProperties": False,
    }


_TOOL_CALLS = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["id", "name"],
        "properties": {"id": _STRING, "name": _STRING, "arguments": _ANY},
    },
}
_MESSAGE_SCHEMA = {"title": "Message", "oneOf": [
    _shape("InputMessage", ["content"], role={"enum": ["user", "system"]}, content=_STRING,
           timestamp=_TIMESTAMP),
    _shape("AssistantMessage", ["content"], role={"const": "assistant"}, content=_STRING,
           timestamp=_TIMESTAMP, tool_calls=_TOOL_CALLS),
    _shape("ToolMessage", ["call_id", "name"], role={"const": "tool"}, call_id=_STRING,
           name=_STRING, input=_ANY, output=_ANY, error=_STRING,
           duration_ms={"type": "number"}, timestamp=_TIMESTAMP),
]}  # fmt: skip

MessageDict = Annotated[dict[str, Any], WithJsonSchema(_MESSAGE_SCHEMA)]
"""One conversation entry as the plain dict agents pass to their model API."""

_TOOL_FIELDS = ("call_id", "name", "input", "output", "error", "duration_ms")


def message_dict(m: r.Message) -> dict[str, Any]:
    """The public dict of a message: only the keys its role has, in CONTRACT order."""
    if m.role == "tool":
        out: dict[str, Any] = {"role": "tool"}
        for field in _TOOL_FIELDS:
            value = getattr(m, field)
            if value is not msgspec.UNSET:
                out[field] = value
        out["timestamp"] = _utc(m.timestamp)
        return out
    out = {"role": m.role, "content": m.content or "", "timestamp": _utc(m.timestamp)}
    if m.tool_calls:
        out["tool_calls"] = m.tool_calls
    return out


def _ms(value: float) -> int:
    return round(value)


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 10)  # drop float noise, keep sub-cent


# -- conversation ---------------------------------------------------------------------


class ConversationMetadata(BaseModel):
    """Summed over the session's runs; ``model`` is the latest seen."""

    model: str | None
    total_tokens: int
    tool_calls: int
    retries: int
    wall_time_ms: int


class ConversationState(BaseModel):
    """The state object agents read on every LLM call."""

    session_id: str
    user_id: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    messages: list[MessageDict]
    run_metadata: ConversationMetadata

    @classmethod
    def from_state(cls, state: r.Conversation, last: int | None = None) -> ConversationState:
        """The public shape of a folded conversation (its ``last`` messages only, if
        given; the totals are the whole session's either way)."""
        messages = state.messages
        if last is not None:
            messages = messages[max(0, len(messages) - last) :]
        return cls(
            session_id=state.session_id,
            user_id=state.user_id,
            created_at=state.created_at,
            updated_at=state.updated_at,
            messages=[message_dict(m) for m in messages],
            run_metadata=ConversationMetadata(
                model=state.model,
                total_tokens=state.total_tokens,
                tool_calls=state.tool_calls,
                retries=state.retries,
                wall_time_ms=_ms(state.wall_time_ms),
            ),
        )


# -- run metadata ---------------------------------------------------------------------


class ToolStats(BaseModel):
    """Calls of one tool within a run, and how long they took."""

    calls: int
    errors: int
    total_duration_ms: float
    max_duration_ms: float


class TurnMetadata(BaseModel):
    """Where one turn's time and money went ("why did this turn take 4 seconds?")."""

    index: int
    started_at: UtcDatetime
    ended_at: UtcDatetime
    wall_time_ms: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    model_calls: int
    model_latency_ms: float
    tool_calls: int
    tool_duration_ms: float
    retries: int
    retry_delay_ms: float
    errors: int

    @classmethod
    def from_turn(cls, t: r.Turn) -> TurnMetadata:
        """The public shape of a folded turn."""
        fields = msgspec.structs.asdict(t)
        del fields["messages_only"]
        fields.update(wall_time_ms=_ms(t.wall_time_ms), cost_usd=_usd(t.cost_usd))
        return cls(**fields)


class SlowestToolCall(BaseModel):
    """The run's longest tool call and the turn it was in."""

    call_id: str
    name: str
    duration_ms: float
    turn: int


class PendingToolCall(BaseModel):
    """A tool call without a result yet: what a resumed agent must still run."""

    call_id: str
    name: str
    input: Any


class CompletedStep(BaseModel):
    """A step the run finished: where an interrupted agent resumes."""

    step: str
    index: int


def _pending(s: r.RunFold) -> list[PendingToolCall]:
    return [PendingToolCall(call_id=c.call_id, name=c.name, input=c.input) for c in s.pending]


def _steps(s: r.RunFold) -> list[CompletedStep]:
    return [CompletedStep(step=c.step, index=c.index) for c in s.completed_steps]


class RunMetadata(BaseModel):
    """Tokens, cost, tools, retries, wall time and status of one run, and of each turn."""

    run_id: str
    user_id: str
    session_id: str
    agent: str | None
    model: str | None
    parent_run_id: str | None
    parent_version: int | None
    status: Status
    error: str | None
    started_at: UtcDatetime
    updated_at: UtcDatetime
    wall_time_ms: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cache_read_input_tokens: int
    reasoning_tokens: int
    cost_usd: float | None
    model_calls: int
    tool_calls: int
    tool_errors: int
    retries: int
    tools: dict[str, ToolStats]
    turns: list[TurnMetadata]
    slowest_turn: int | None
    slowest_tool_call: SlowestToolCall | None
    version: int
    position: int
    completed_steps: list[CompletedStep]
    pending_tool_calls: list[PendingToolCall]

    @classmethod
    def from_state(cls, s: r.RunFold) -> RunMetadata:
        """The public shape of a folded run."""
        fields = msgspec.structs.asdict(s)
        for nested in ("tools", "turns", "pending", "slowest_tool_call", "completed_steps"):
            del fields[nested]
        del fields["offset"], fields["earlier"]  # how the stored document pages its turns
        fields["cost_usd"] = _usd(s.cost_usd)
        slow = s.slowest_tool_call
        return cls(
            **fields,
            wall_time_ms=_ms(s.wall_time_ms),
            total_tokens=s.total_tokens,
            tools={name: ToolStats(**msgspec.structs.asdict(t)) for name, t in s.tools.items()},
            turns=[TurnMetadata.from_turn(t) for t in s.turns],
            slowest_turn=s.slowest_turn,
            slowest_tool_call=None
            if slow is None
            else SlowestToolCall(
                call_id=slow.call_id,
                name=slow.name,
                duration_ms=slow.duration_ms or 0.0,
                turn=slow.turn,
            ),
            completed_steps=_steps(s),
            pending_tool_calls=_pending(s),
        )


# -- memory ---------------------------------------------------------------------------


class Memory(BaseModel):
    """One current long-term memory and the run that wrote it."""

    namespace: str
    key: str
    value: Any
    run_id: str
    written_at: UtcDatetime

    @classmethod
    def from_item(cls, item: r.MemoryItem) -> Memory:
        """The public shape of a memory."""
        return cls(
            namespace=item.namespace,
            key=item.key,
            value=item.value,
            run_id=item.run_id,
            written_at=item.written_at,
        )

    @classmethod
    def list_from_state(cls, state: r.Memories, namespace: str | None = None) -> list[Memory]:
        """A user's current memories (of one namespace, if given), by namespace and key."""
        items = sorted(state.current.values(), key=lambda m: (m.namespace, m.key))
        return [cls.from_item(m) for m in items if namespace in (None, m.namespace)]


class MemoryChange(BaseModel):
    """One write or forget in a user's memory history."""

    op: Literal["write", "forget"]
    namespace: str
    key: str
    value: Any
    run_id: str
    at: UtcDatetime


def memory_history(state: r.Memories) -> list[MemoryChange]:
    """Every write and forget of a user's memory, in log order."""
    return [
        MemoryChange(
            op=c.op, namespace=c.namespace, key=c.key, value=c.value, run_id=c.run_id, at=c.at
        )
        for c in state.history
    ]


# -- replay ---------------------------------------------------------------------------


class RunStateMetadata(BaseModel):
    """A replayed run's totals so far."""

    model: str | None
    input_tokens: int
    output_tokens: int
    total_tokens: int
    tool_calls: int
    retries: int
    wall_time_ms: int
    cost_usd: float | None


class RunState(BaseModel):
    """One run as it stood at a point: what ``replay(run_id, at=...)`` returns."""

    run_id: str
    user_id: str
    session_id: str
    status: Status
    version: int
    position: int
    at: UtcDatetime
    messages: list[MessageDict]
    run_metadata: RunStateMetadata
    pending_tool_calls: list[PendingToolCall]
    completed_steps: list[CompletedStep]
    parent_run_id: str | None = None  # set for a fork: the run it was forked from
    parent_version: int | None = None  # and the parent's last version it includes

    @classmethod
    def from_states(
        cls,
        run: r.RunFold,
        messages: Iterable[r.Message],
        at: datetime,
        position: int | None = None,
        resume: r.RunFold | None = None,
    ) -> RunState:
        """The run state from a run's folds: its RunFold and its conversation messages.

        ``resume``: the fold whose pending tool calls and completed steps the run goes on
        from, when they are not ``run``'s own (a fork's whole lineage; ``run`` then folds
        the fork's own events, which its accounting counts)."""
        resume = run if resume is None else resume
        return cls(
            run_id=run.run_id,
            user_id=run.user_id,
            session_id=run.session_id,
            status=run.status,
            version=run.version,
            position=run.position if position is None else position,
            at=at,
            messages=[message_dict(m) for m in messages],
            run_metadata=RunStateMetadata(
                model=run.model,
                input_tokens=run.input_tokens,
                output_tokens=run.output_tokens,
                total_tokens=run.total_tokens,
                tool_calls=run.tool_calls,
                retries=run.retries,
                wall_time_ms=_ms(run.wall_time_ms),
                cost_usd=_usd(run.cost_usd),
            ),
            pending_tool_calls=_pending(resume),
            completed_steps=_steps(resume),
        )

    @classmethod
    def from_events(
        cls,
        events: Sequence[Event],
        *,
        at: datetime | None = None,
        prices: PriceTable | None = None,
    ) -> RunState:
        """Fold one run's events (version order, non-empty) with the read models' reducers.

        ``at`` defaults to the last event's ``recorded_at``.
        """
        if not events:
            raise ValueError("a run state needs at least one event")
        run = r.RunMetadataReducer(prices).fold(events)
        conversation = r.ConversationReducer().fold(events)
        assert run is not None and conversation is not None
        return cls.from_states(
            run, conversation.messages, events[-1].recorded_at if at is None else at
        )
