"""The conversation read model (one document per session): the messages an agent sends
to its model on every call, and the session's totals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from ledger.events import ENDS_A_RUN, Event
from projections.reducers._base import Reducer, millis, tokens


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
    """When a run's earliest and latest events happened (agent clock)."""

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
    spans: dict[str, Span] = {}  # run_id -> its span, while it runs; runs interleave
    # The summed spans of the session's runs that ended (kept as one number, so a session
    # of thousands of runs does not carry one entry each).
    ended_wall_ms: float = 0.0
    # run_id -> call_id -> indices in the session's messages of the tool entries still
    # waiting for a result, in call order: a result goes to the earliest (some agents
    # reuse ids, "call_0" in every parallel batch). Keyed by run too: two runs of one
    # session may both have a "call_1".
    open_calls: dict[str, dict[str, list[int]]] = {}
    # ``reducers.Paged``: ``messages`` holds the session's messages from ``offset`` on;
    # the stored read model keeps the earlier ones in pages (0 when folded whole).
    offset: int = 0
    earlier: dict[int, list[Message]] = {}

    @property
    def wall_time_ms(self) -> float:
        """Summed over the session's runs: each run's last event minus its first."""
        return self.ended_wall_ms + sum(millis(s.first, s.last) for s in self.spans.values())

    def entry(self, index: int) -> Message:
        """The session's message at ``index`` (held, or in a page handed back)."""
        if index >= self.offset:
            return self.messages[index - self.offset]
        for start, page in self.earlier.items():
            if start <= index < start + len(page):
                return page[index - start]
        raise LookupError(f"message {index} is in a page that was not handed back")


class ConversationReducer(Reducer[Conversation]):
    """Folds a session's events (of all its runs, in log order) into its Conversation.

    Given the events of one run only, it gives that run's conversation (replay does so).
    """

    state_type = Conversation

    key_field = "session_id"
    paged_field = "messages"

    def key(self, event: Event) -> str | None:
        """The session: every event of a session counts (times, totals, messages)."""
        return event.session_id

    def initial(self, event: Event) -> Conversation:
        """An empty conversation opened at ``event``."""
        when = event.occurred_at
        return Conversation(event.session_id, event.user_id, when, when)

    def step(self, state: Conversation, event: Event) -> None:
        """Fold ``event`` into ``state`` in place."""
        # This runs for every event of every rebuild and replay: comparisons rather than
        # min()/max(), and the commonest event types tested first.
        when, d = event.occurred_at, event.data
        if when < state.created_at:
            state.created_at = when
        if when > state.updated_at:
            state.updated_at = when
        span = state.spans.get(event.run_id)
        if span is None:
            state.spans[event.run_id] = Span(when, when)
        else:
            if when < span.first:
                span.first = when
            if when > span.last:
                span.last = when
        kind = event.type
        if kind == "model_responded":
            state.model = d.get("model") or state.model
            tokens_in, tokens_out, _, _ = tokens(d.get("usage"))
            state.total_tokens += tokens_in + tokens_out
            calls = d.get("tool_calls") or UNSET  # model APIs reject an empty list
            content = d.get("content") or ""
            state.messages.append(Message("assistant", when, content, tool_calls=calls))
        elif kind == "message_received":
            state.messages.append(Message(d["role"], when, content=d["content"]))
        elif kind == "tool_called":
            state.tool_calls += 1
            open_calls = state.open_calls.get(event.run_id)
            if open_calls is None:
                open_calls = state.open_calls[event.run_id] = {}
            index, waiting = state.offset + len(state.messages), open_calls.get(d["call_id"])
            if waiting is None:
                open_calls[d["call_id"]] = [index]
            else:
                waiting.append(index)
            entry = Message("tool", when, call_id=d["call_id"], name=d["name"])
            entry.input = d.get("input")
            state.messages.append(entry)
        elif kind == "tool_returned":
            self._tool_returned(state, event)
        elif kind == "run_started":
            state.model = d.get("model") or state.model
        elif kind == "retry_attempted":
            state.retries += 1
        elif kind in ENDS_A_RUN:  # no message; what was kept for the run closes
            ended = state.spans.pop(event.run_id)
            state.ended_wall_ms += millis(ended.first, ended.last)
            state.open_calls.pop(event.run_id, None)
        # steps and memory add no message

    def touched(self, state: Conversation, events: Iterable[Event]) -> set[int]:
        """The tool entries before ``state.offset`` whose results are among ``events``.

        The n results of one call_id among ``events`` go to the n earliest of its open
        calls (calls made among ``events`` come after them, past the offset)."""
        if not state.offset or not state.open_calls:
            return set()
        results = Counter(
            (event.run_id, event.data["call_id"])
            for event in events
            if event.type == "tool_returned"
        )
        found = set()
        for (run_id, call_id), count in results.items():
            for index in state.open_calls.get(run_id, {}).get(call_id, [])[:count]:
                if index < state.offset:
                    found.add(index)
        return found

    def upgrade(self, stored: Any) -> Any | None:
        """A conversation of projector version 2, whose open calls were one index per
        call_id, with each index as a list of one."""
        if not isinstance(stored, dict) or not isinstance(stored.get("open_calls"), dict):
            return None
        try:
            stored["open_calls"] = {
                run_id: {call_id: [index] for call_id, index in calls.items()}
                for run_id, calls in stored["open_calls"].items()
            }
        except AttributeError:  # not a mapping: not version 2's shape either
            return None
        return stored

    def _tool_returned(self, state: Conversation, event: Event) -> None:
        d = event.data
        open_calls = state.open_calls.get(event.run_id, {})
        waiting, index = open_calls.get(d["call_id"]), None
        if waiting:  # the earliest call of this id still open takes the result
            index = waiting.pop(0)
            if not waiting:
                del open_calls[d["call_id"]]
        if not open_calls:
            state.open_calls.pop(event.run_id, None)
        if index is None:  # a result whose call was never recorded: an entry of its own
            entry = Message("tool", event.occurred_at, call_id=d["call_id"], name=d["name"])
            state.messages.append(entry)
        else:
            entry = state.entry(index)
        if d.get("error") is not None:
            entry.error = d["error"]
        else:
            entry.output = d.get("output")
        if d.get("duration_ms") is not None:
            entry.duration_ms = d["duration_ms"]
