"""Deterministic re-execution: run the agent's own code against a recorded run.

An agent is written against an ``AgentSession``: ``session.run`` records events (the
ledger's event methods), ``session.llm(**request)`` and ``session.tool(name, **input)``
reach the outside world, and ``session.inputs`` are the user's messages. Live, a
``LiveSession`` calls the real model and tools. ``reexecute`` instead answers every
model and tool call from the recorded events, never calling out, and compares each
event the code records with the recorded event at the same version. It reports the
first one where the code does something different (another tool, other arguments,
another message or prompt) with expected and actual side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from pydantic import BaseModel

from ledger.events import Event
from ledger.run import Run
from ledger.tenant import Tenant

#: Fields that differ between two executions of the same code (clocks, ids of requests).
VOLATILE = frozenset({"latency_ms", "duration_ms", "request_id", "delay_ms", "source_run"})


class AgentSession(Protocol):
    """What agent code uses: record with ``run``, reach out with ``llm`` and ``tool``."""

    run: Any
    inputs: list[str]

    def llm(self, **request: Any) -> dict[str, Any]:
        """Call the model; returns the response (content, tool_calls, usage, ...)."""

    def tool(self, name: str, **arguments: Any) -> Any:
        """Call a tool; returns its output."""


class LiveSession:
    """A session that really calls the model and the tools (production)."""

    def __init__(
        self,
        run: Run,
        llm: Callable[..., dict[str, Any]],
        tools: Mapping[str, Callable[..., Any]],
        inputs: list[str],
    ) -> None:
        self.run, self.inputs = run, inputs
        self._llm, self._tools = llm, tools

    def llm(self, **request: Any) -> dict[str, Any]:
        return self._llm(**request)

    def tool(self, name: str, **arguments: Any) -> Any:
        return self._tools[name](**arguments)


class Divergence(BaseModel):
    """The first event where the code did something other than what was recorded."""

    version: int
    expected: dict[str, Any] | None  # {"type", "data"}; None: the recording had ended
    actual: dict[str, Any] | None  # None: the code stopped before this event
    reason: str


class ReexecutionReport(BaseModel):
    """The outcome of re-executing an agent against a recorded run."""

    run_id: str
    events_compared: int
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        """True when the code did exactly what was recorded."""
        return self.divergence is None


class _Diverged(Exception):
    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.reason)
        self.divergence = divergence


def _comparable(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in VOLATILE and v not in (None, [], {})}


class _RecordingChecker:
    """Stands in for ``ledger.Run``: compares each recorded call with the recording."""

    def __init__(self, events: list[Event]) -> None:
        self._events = events
        self.index = 0

    @contextmanager
    def turn(self) -> Iterator[_RecordingChecker]:
        yield self

    def _check(self, type_: str, **data: Any) -> None:
        actual = {"type": type_, "data": _comparable(data)}
        if self.index >= len(self._events):
            version = (self._events[-1].version + 1) if self._events else 1
            raise _Diverged(
                Divergence(
                    version=version,
                    expected=None,
                    actual=actual,
                    reason=f"the code recorded an extra {type_}",
                )
            )
        event = self._events[self.index]
        expected = {"type": event.type, "data": _comparable(event.data)}
        if expected != actual:
            what = "another event" if event.type != type_ else f"a different {type_}"
            raise _Diverged(
                Divergence(
                    version=event.version,
                    expected=expected,
                    actual=actual,
                    reason=f"at version {event.version} the code recorded {what}",
                )
            )
        self.index += 1

    def __getattr__(self, type_: str) -> Callable[..., None]:
        if type_.startswith("_"):
            raise AttributeError(type_)
        return lambda **data: self._check(_CALLS.get(type_, type_), **data)


_CALLS = {"complete": "run_completed", "fail": "run_failed"}


class ReplaySession:
    """A session answered from a recording: no model or tool is ever called."""

    def __init__(self, events: list[Event]) -> None:
        body = [e for e in events if e.type != "run_started"]
        self.run = _RecordingChecker(body)
        self.inputs = [
            e.data["content"]
            for e in body
            if e.type == "message_received" and e.data.get("role") == "user"
        ]
        self._responses = [e.data for e in body if e.type == "model_responded"]
        self._outputs = [e.data for e in body if e.type == "tool_returned"]

    def llm(self, **request: Any) -> dict[str, Any]:
        del request  # the recorded response answers whatever was asked
        if not self._responses:
            raise _Diverged(
                Divergence(
                    version=0,
                    expected=None,
                    actual=None,
                    reason="the code called the model more often than the recording did",
                )
            )
        return dict(self._responses.pop(0))

    def tool(self, name: str, **arguments: Any) -> Any:
        del arguments
        for i, recorded in enumerate(self._outputs):
            if recorded["name"] == name:
                self._outputs.pop(i)
                if recorded.get("error") is not None:
                    raise ToolError(recorded["error"])
                return recorded.get("output")
        raise _Diverged(
            Divergence(
                version=0,
                expected=None,
                actual=None,
                reason=f"the code called tool {name!r}, which the recording "
                "has no (further) result for",
            )
        )


class ToolError(Exception):
    """A tool call failed (in a re-execution: the recorded error)."""


def reexecute(
    tenant: Tenant, run_id: str, agent: Callable[[AgentSession], None]
) -> ReexecutionReport:
    """Run ``agent`` against run ``run_id``'s recording; report the first divergence."""
    events = tenant.events(run_id)
    version = tenant._first_erased_version(run_id)
    erased = next((e for e in events if e.version == version), None)
    if erased is not None:  # the recording can neither answer the agent nor judge it
        return ReexecutionReport(
            run_id=run_id,
            events_compared=0,
            divergence=Divergence(
                version=erased.version,
                expected={"type": erased.type, "data": _comparable(erased.data)},
                actual=None,
                reason=f"the recording's content at version {erased.version} was erased "
                "(ledger forget): an erased run cannot be re-executed",
            ),
        )
    session = ReplaySession(events)
    try:
        agent(session)
        checker = session.run
        if checker.index < len(checker._events):
            missing = checker._events[checker.index]
            raise _Diverged(
                Divergence(
                    version=missing.version,
                    actual=None,
                    expected={"type": missing.type, "data": _comparable(missing.data)},
                    reason=f"the code stopped before version {missing.version}",
                )
            )
    except _Diverged as diverged:
        return ReexecutionReport(
            run_id=run_id, events_compared=session.run.index, divergence=diverged.divergence
        )
    return ReexecutionReport(run_id=run_id, events_compared=session.run.index, divergence=None)
