"""The run metadata read model (one document per run): tokens, cost, tools, retries,
time and status, per run and per turn."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from ledger.events import Event
from projections.prices import PriceTable
from projections.reducers._base import Reducer, millis, tokens


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
    # Still only messages so far: a further message joins this turn (a system prompt and
    # the user's question are one turn, not two).
    messages_only: bool = True

    @property
    def wall_time_ms(self) -> float:
        """From the turn's first event to its last."""
        return millis(self.started_at, self.ended_at)


class ToolCallRef(msgspec.Struct):
    """A tool call, the turn it happened in, and (once returned) how long it took."""

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
    status: Literal["running", "completed", "failed"] = "running"
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = 0.0  # None once any model call could not be priced
    model_calls: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    retries: int = 0
    tools: dict[str, ToolStats] = {}
    turns: list[Turn] = []
    # Calls still waiting for a result, in call order. A call_id may repeat (some agents
    # reuse ids, "call_0" in every parallel batch): a result goes to the earliest.
    pending: list[ToolCallRef] = []
    slowest_tool_call: ToolCallRef | None = None
    completed_steps: list[Step] = []
    version: int = 0
    position: int = 0
    # ``reducers.Paged``: ``turns`` holds the run's turns from ``offset`` on; the stored
    # read model keeps the earlier ones in pages (0 when folded whole).
    offset: int = 0
    earlier: dict[int, list[Turn]] = {}

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    @property
    def wall_time_ms(self) -> float:
        """From the run's first event to its last."""
        return millis(self.started_at, self.updated_at)

    @property
    def slowest_turn(self) -> int | None:
        """Index of the turn with the longest wall time (the first of equals), if any."""
        slowest = max(self.turns, key=lambda t: t.wall_time_ms, default=None)
        return None if slowest is None else slowest.index


def _answered(pending: list[ToolCallRef], call_id: str) -> ToolCallRef | None:
    """Take the earliest of ``pending`` with ``call_id`` out of it (None: none is)."""
    for n, call in enumerate(pending):
        if call.call_id == call_id:
            return pending.pop(n)
    return None


def _add_cost(total: float | None, cost: float | None) -> float | None:
    return None if total is None or cost is None else total + cost


class RunMetadataReducer(Reducer[RunFold]):
    """Folds a run's events (version order) into its RunFold, pricing with ``prices``.

    The price table is a parameter, not a global, so the fold stays a pure function of
    the events and the table; the default is ``PriceTable.default()``.
    """

    state_type = RunFold
    paged_field = "turns"

    def __init__(self, prices: PriceTable | None = None) -> None:
        super().__init__()
        self.prices = prices if prices is not None else PriceTable.default()

    key_field = "run_id"

    def key(self, event: Event) -> str | None:
        """The run."""
        return event.run_id

    def initial(self, event: Event) -> RunFold:
        """An empty run opened at ``event``."""
        when = event.occurred_at
        return RunFold(event.run_id, event.user_id, event.session_id, when, when)

    def upgrade(self, stored: Any) -> Any | None:
        """Run metadata of projector version 3, whose pending calls were a mapping by
        call_id (in call order), with them as a list."""
        if not isinstance(stored, dict) or not isinstance(stored.get("pending"), dict):
            return None
        stored["pending"] = list(stored["pending"].values())
        return stored

    def price(self, model: str | None, usage: dict[str, Any] | None) -> float | None:
        """USD for one model call; None for an unknown model or a call without usage."""
        if usage is None:
            return None
        tokens_in, tokens_out, cached, _ = tokens(usage)
        return self.prices.cost(model, tokens_in, tokens_out, cached)

    def step(self, state: RunFold, event: Event) -> None:
        """Fold ``event`` into ``state`` in place."""
        # This runs for every event of every rebuild and replay: comparisons rather than
        # min()/max(), and the commonest event types tested first.
        d = event.data
        when = event.occurred_at
        if when < state.started_at:
            state.started_at = when
        if when > state.updated_at:
            state.updated_at = when
        state.version, state.position = event.version, event.position
        kind = event.type
        if kind == "run_started":
            state.agent, state.model = d.get("agent"), d.get("model") or state.model
            state.parent_run_id = d.get("parent_run_id")
            state.parent_version = d.get("parent_version")
            return
        # The turn the event belongs to: a new one at a message after other work.
        is_message = kind == "message_received"
        turns = state.turns  # the newest from state.offset on: the last is always held
        if not turns:
            turn = Turn(state.offset, when, when)
            turns.append(turn)
        else:
            turn = turns[-1]
            if is_message and not turn.messages_only:
                turn = Turn(state.offset + len(turns), when, when)
                turns.append(turn)
        if turn.messages_only and not is_message:
            turn.messages_only = False
        if when < turn.started_at:
            turn.started_at = when
        if when > turn.ended_at:
            turn.ended_at = when
        if kind == "model_responded":
            self._model_responded(state, turn, d)
        elif kind == "tool_called":
            state.tool_calls += 1
            turn.tool_calls += 1
            name = d["name"]
            stats = state.tools.get(name)
            if stats is None:
                stats = state.tools[name] = ToolStats()
            stats.calls += 1
            call = ToolCallRef(d["call_id"], name, d.get("input"), turn.index)
            state.pending.append(call)
        elif kind == "tool_returned":
            self._tool_returned(state, turn, event)
        elif kind == "retry_attempted":
            state.retries += 1
            turn.retries += 1
            turn.retry_delay_ms += float(d.get("delay_ms") or 0)
        elif kind == "step_completed":
            state.completed_steps.append(Step(d["step"], d["index"]))
        elif kind == "run_completed":
            state.status, state.error = "completed", None
        elif kind == "run_failed":
            state.status, state.error = "failed", d.get("error")
            turn.errors += 1

    def _model_responded(self, state: RunFold, turn: Turn, d: dict[str, Any]) -> None:
        usage = d.get("usage")
        model = d.get("model") or state.model
        tokens_in, tokens_out, cached, reasoning = tokens(usage)
        cost = None if usage is None else self.prices.cost(model, tokens_in, tokens_out, cached)
        state.model = model
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

    def _tool_returned(self, state: RunFold, turn: Turn, event: Event) -> None:
        d = event.data
        call = _answered(state.pending, d["call_id"])
        stats = state.tools.setdefault(d["name"], ToolStats())
        if d.get("error") is not None:
            state.tool_errors += 1
            stats.errors += 1
            turn.errors += 1
        duration = d.get("duration_ms")
        if duration is None:
            return
        stats.total_duration_ms += duration
        stats.max_duration_ms = max(stats.max_duration_ms, duration)
        turn.tool_duration_ms += duration
        slowest = state.slowest_tool_call
        if slowest is None or (slowest.duration_ms or 0.0) < duration:
            ref = call or ToolCallRef(d["call_id"], d["name"], None, turn.index)
            ref.duration_ms = duration
            state.slowest_tool_call = ref
