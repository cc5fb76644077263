"""The read models' public shapes (pydantic): what ``t.conversation()``, ``t.runs()``,
``t.run_metadata()`` and ``t.memories()`` return and ``--json`` prints.

``model_dump(mode="json")`` gives exactly the JSON of CONTRACT.md; extra fields are
additions, never renames. Built from the reducers' states (``projections.reducers``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from pydantic import BaseModel

from projections import reducers as r


class ConversationMetadata(BaseModel):
    """Summed over the session's runs; ``model`` is the latest."""

    model: str | None
    total_tokens: int
    tool_calls: int
    retries: int
    wall_time_ms: float


class ConversationState(BaseModel):
    """The state object agents read on every LLM call."""

    session_id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    messages: list[dict[str, Any]]
    run_metadata: ConversationMetadata

    @classmethod
    def from_state(cls, state: r.Conversation) -> ConversationState:
        """The public shape of a folded conversation."""
        return cls(
            session_id=state.session_id,
            user_id=state.user_id,
            created_at=state.created_at,
            updated_at=state.updated_at,
            messages=[msgspec.to_builtins(m) for m in state.messages],
            run_metadata=ConversationMetadata(
                model=state.model,
                total_tokens=state.total_tokens,
                tool_calls=state.tool_calls,
                retries=state.retries,
                wall_time_ms=state.wall_time_ms,
            ),
        )


class ToolStats(BaseModel):
    """Calls of one tool within a run."""

    calls: int
    errors: int
    total_duration_ms: float
    max_duration_ms: float


class TurnMetadata(BaseModel):
    """Where one turn's time and money went."""

    index: int
    started_at: datetime
    ended_at: datetime
    wall_time_ms: float
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


class ToolCall(BaseModel):
    """A tool call (pending, or the slowest of a run)."""

    call_id: str
    name: str
    input: Any = None
    turn: int = 0
    duration_ms: float | None = None


class CompletedStep(BaseModel):
    """A step the run finished: where an interrupted agent resumes."""

    step: str
    index: int


class RunMetadata(BaseModel):
    """Tokens, cost, tools, retries, wall time and status of one run, per run and per turn."""

    run_id: str
    user_id: str
    session_id: str
    agent: str | None
    model: str | None
    parent_run_id: str | None
    parent_version: int | None
    status: str
    error: str | None
    started_at: datetime
    updated_at: datetime
    wall_time_ms: float
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
    slowest_tool_call: ToolCall | None
    pending_tool_calls: list[ToolCall]
    completed_steps: list[CompletedStep]
    version: int
    position: int

    @classmethod
    def from_state(cls, s: r.RunFold) -> RunMetadata:
        """The public shape of a folded run."""
        turns = [
            TurnMetadata(wall_time_ms=t.wall_time_ms, **msgspec.structs.asdict(t)) for t in s.turns
        ]
        slowest = max(turns, key=lambda t: t.wall_time_ms, default=None)
        data = msgspec.to_builtins(s)
        for derived in ("turns", "pending", "slowest_tool_call", "tools", "completed_steps"):
            data.pop(derived)
        return cls(
            **data,
            total_tokens=s.total_tokens,
            wall_time_ms=s.wall_time_ms,
            turns=turns,
            tools={name: ToolStats(**msgspec.structs.asdict(t)) for name, t in s.tools.items()},
            slowest_turn=None if slowest is None else slowest.index,
            slowest_tool_call=(
                None
                if s.slowest_tool_call is None
                else ToolCall(**msgspec.structs.asdict(s.slowest_tool_call))
            ),
            pending_tool_calls=[ToolCall(**msgspec.structs.asdict(c)) for c in s.pending.values()],
            completed_steps=[CompletedStep(step=c.step, index=c.index) for c in s.completed_steps],
        )


class Memory(BaseModel):
    """One current long-term memory and the run that wrote it."""

    namespace: str
    key: str
    value: Any
    run_id: str
    written_at: datetime

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
