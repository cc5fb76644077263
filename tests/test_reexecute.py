"""Deterministic re-execution of the example agent of docs/replay.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import ledger
from replay.reexecute import LiveSession, ReplaySession, reexecute

DOC = Path(__file__).resolve().parent.parent / "docs" / "replay.md"


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    """The agent, model and tools defined in the docs (not copied: the docs are the source)."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert code is not None
    source = code.group(1).split("with ledger.connect")[0]
    namespace: dict[str, Any] = {}
    exec(compile(source, str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture
def recorded(store_url: str, example: dict[str, Any]) -> tuple[ledger.Tenant, str]:
    led = ledger.connect(store_url)
    t = led.tenant("usr_x")
    run = t.start_run(session_id="s", model="gpt-4o")
    example["weather_agent"](
        LiveSession(run, example["fake_llm"], example["tools"], inputs=["Oslo?", "And Bergen?"])
    )
    return t, run.run_id


def test_an_unchanged_agent_replays_clean_without_calling_out(
    recorded: tuple[ledger.Tenant, str], example: dict[str, Any]
) -> None:
    t, run_id = recorded
    report = reexecute(t, run_id, example["weather_agent"])
    assert report.ok and report.events_compared == len(t.events(run_id)) - 1


def test_a_changed_prompt_and_argument_are_reported_at_their_versions(
    recorded: tuple[ledger.Tenant, str], example: dict[str, Any]
) -> None:
    t, run_id = recorded
    agent = example["weather_agent"]
    prompt = reexecute(t, run_id, lambda s: agent(s, prompt="Be terse."))
    assert prompt.divergence is not None and prompt.divergence.version == 2
    argument = reexecute(t, run_id, lambda s: agent(s, units="kelvin"))
    assert argument.divergence is not None and argument.divergence.version == 5
    assert argument.divergence.expected is not None and argument.divergence.actual is not None
    assert argument.divergence.expected["type"] == argument.divergence.actual["type"]


def test_stopping_early_or_doing_more_is_a_divergence(
    recorded: tuple[ledger.Tenant, str], example: dict[str, Any]
) -> None:
    t, run_id = recorded
    agent = example["weather_agent"]

    def lazy(session: Any) -> None:
        session.run.message_received(role="system", content=example["PROMPT"])

    early = reexecute(t, run_id, lazy)
    assert early.divergence is not None and early.divergence.actual is None
    assert early.divergence.version == 3

    def chatty(session: Any) -> None:
        agent(session)
        session.run.step_completed(step="extra", index=1)

    extra = reexecute(t, run_id, chatty)
    assert extra.divergence is not None and extra.divergence.expected is None


def test_the_replay_session_never_calls_out(recorded: tuple[ledger.Tenant, str]) -> None:
    t, run_id = recorded
    session = ReplaySession(t.events(run_id))
    assert session.inputs == ["Oslo?", "And Bergen?"]
    first = session.llm(model="anything")
    assert first["tool_calls"][0]["name"] == "weather"
    assert session.tool("weather", city="ignored")["temp"] == 3


def test_a_run_whose_content_was_erased_is_reported_and_never_re_executed(
    url: str, example: dict[str, Any]
) -> None:
    """After ``forget`` the recording answers with ``[erased]`` (a tool call's arguments
    included): agent code fed that either crashes (``{**"[erased]"}``) or is reported as
    having changed. The erased version is reported instead, the agent never run."""
    with ledger.connect(url, encrypt=True) as led:
        t = led.tenant("usr_x")
        run = t.start_run(session_id="s", model="gpt-4o")
        example["weather_agent"](
            LiveSession(run, example["fake_llm"], example["tools"], inputs=["Oslo?"])
        )
        led.forget("usr_x")

        def never(session: Any) -> None:
            raise AssertionError("the agent was fed erased content")

        report = reexecute(t, run.run_id, never)
        assert report.divergence is not None and report.events_compared == 0
        assert report.divergence.version == 2 and report.divergence.actual is None
        assert "erased" in report.divergence.reason and "ledger forget" in report.divergence.reason
