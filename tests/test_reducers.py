"""The reducers and the read models' public shapes: unit tests on recorded runs, and
properties over random valid logs (incremental == batch, chunking, encoding, shapes,
projection == replay)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

import ledger
from cli.demo import RECORDED, record_demo_run
from ledger.errors import ReadModelCorrupt
from ledger.events import CATALOG, ENDS_A_RUN, Event, to_data
from projections import reducers as r
from projections.models import (
    ConversationState,
    Memory,
    RunMetadata,
    RunState,
    memory_history,
)
from projections.prices import PriceTable
from projections.projector import Document, Projector
from projections.runner import _by_key

T0 = datetime(2025, 3, 15, 10, 22, 31, tzinfo=UTC)
PRICES = PriceTable.load(Path(r.__file__).parent.parent / "prices.json")
CONVERSATION = r.ConversationReducer()
RUNS = r.RunMetadataReducer(PRICES)
MEMORY = r.MemoryReducer()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def led() -> Iterator[ledger.Ledger]:
    with ledger.connect("memory://") as connection:
        yield connection


def log(t: ledger.Tenant) -> list[Event]:
    """Every event of a tenant, in log order."""
    events = [e for s in t.summaries() for e in t.events(s.run_id)]
    return sorted(events, key=lambda e: e.position)


def record_demo(led: ledger.Ledger) -> ledger.Run:
    """cli/demo.py's run, on a fixed clock."""
    run = led.tenant("usr_demo").start_run(
        session_id="sess_demo", agent="weather-assistant", model="gpt-4o", occurred_at=at(0)
    )
    first, final = RECORDED["first_response"], RECORDED["final_response"]
    with run.turn():
        run.message_received(
            content="What's the weather in Lisbon tonight?", role="user", occurred_at=at(0.1)
        )
        run.retry_attempted(
            what="model", attempt=2, error="429 rate limited", delay_ms=250, occurred_at=at(0.2)
        )
        run.model_responded(model="gpt-4o", **first, occurred_at=at(1))  # type: ignore[arg-type]
        run.tool_called(
            call_id="call_1", name="get_weather", input={"city": "Lisbon"}, occurred_at=at(1.01)
        )
        run.tool_returned(
            call_id="call_1",
            name="get_weather",
            output=RECORDED["tool_output"],
            duration_ms=87.0,
            occurred_at=at(1.1),
        )
        run.model_responded(model="gpt-4o", **final, occurred_at=at(1.7))  # type: ignore[arg-type]
    run.step_completed(step="answer", index=1, occurred_at=at(1.75))
    run.memory_written(namespace="prefs", key="home_city", value="Lisbon", occurred_at=at(1.8))
    run.complete(output=final["content"], occurred_at=at(1.9))
    return run


# -- the demo run ---------------------------------------------------------------------


def test_demo_conversation_is_exactly_the_contract_shape(led: ledger.Ledger) -> None:
    record_demo(led)
    state = CONVERSATION.fold(log(led.tenant("usr_demo")))
    assert state is not None
    assert ConversationState.from_state(state).model_dump(mode="json") == {
        "session_id": "sess_demo",
        "user_id": "usr_demo",
        "created_at": "2025-03-15T10:22:31Z",
        "updated_at": "2025-03-15T10:22:32.900000Z",
        "messages": [
            {
                "role": "user",
                "content": "What's the weather in Lisbon tonight?",
                "timestamp": "2025-03-15T10:22:31.100000Z",
            },
            {
                "role": "assistant",
                "content": "",
                "timestamp": "2025-03-15T10:22:32Z",
                "tool_calls": [
                    {"id": "call_1", "name": "get_weather", "arguments": {"city": "Lisbon"}}
                ],
            },
            {
                "role": "tool",
                "call_id": "call_1",
                "name": "get_weather",
                "input": {"city": "Lisbon"},
                "output": {"city": "Lisbon", "temp_c": 19, "sky": "clear"},
                "duration_ms": 87.0,
                "timestamp": "2025-03-15T10:22:32.010000Z",
            },
            {
                "role": "assistant",
                "content": RECORDED["final_response"]["content"],
                "timestamp": "2025-03-15T10:22:32.700000Z",
            },
        ],
        "run_metadata": {
            "model": "gpt-4o",
            "total_tokens": 924,
            "tool_calls": 1,
            "retries": 1,
            "wall_time_ms": 1900,
        },
    }


def test_demo_run_metadata_answers_cost_and_time(led: ledger.Ledger) -> None:
    run = record_demo(led)
    state = RUNS.fold(led.tenant("usr_demo").events(run.run_id))
    assert state is not None
    meta = RunMetadata.from_state(state).model_dump(mode="json")
    assert meta["cost_usd"] == pytest.approx((880 * 2.5 + 44 * 10.0) / 1e6)
    turn = meta["turns"][0]
    assert turn.pop("cost_usd") == pytest.approx(meta.pop("cost_usd"))
    assert meta == {
        "run_id": run.run_id,
        "user_id": "usr_demo",
        "session_id": "sess_demo",
        "agent": "weather-assistant",
        "model": "gpt-4o",
        "parent_run_id": None,
        "parent_version": None,
        "status": "completed",
        "error": None,
        "started_at": "2025-03-15T10:22:31Z",
        "updated_at": "2025-03-15T10:22:32.900000Z",
        "wall_time_ms": 1900,
        "input_tokens": 880,
        "output_tokens": 44,
        "total_tokens": 924,
        "cache_read_input_tokens": 0,
        "reasoning_tokens": 0,
        "model_calls": 2,
        "tool_calls": 1,
        "tool_errors": 0,
        "retries": 1,
        "tools": {
            "get_weather": {
                "calls": 1,
                "errors": 0,
                "total_duration_ms": 87.0,
                "max_duration_ms": 87.0,
            }
        },
        "turns": [turn],
        "slowest_turn": 0,
        "slowest_tool_call": {
            "call_id": "call_1",
            "name": "get_weather",
            "duration_ms": 87.0,
            "turn": 0,
        },
        "version": 10,
        "position": state.position,
        "completed_steps": [{"step": "answer", "index": 1}],
        "pending_tool_calls": [],
    }
    assert turn == {
        "index": 0,
        "started_at": "2025-03-15T10:22:31.100000Z",
        "ended_at": "2025-03-15T10:22:32.900000Z",
        "wall_time_ms": 1800,
        "input_tokens": 880,
        "output_tokens": 44,
        "model_calls": 2,
        "model_latency_ms": 1152.0,
        "tool_calls": 1,
        "tool_duration_ms": 87.0,
        "retries": 1,
        "retry_delay_ms": 250.0,
        "errors": 0,
    }


def test_demo_memory_and_its_history(led: ledger.Ledger) -> None:
    run = record_demo(led)
    state = MEMORY.fold(log(led.tenant("usr_demo")))
    assert state is not None
    assert [m.model_dump(mode="json") for m in Memory.list_from_state(state)] == [
        {
            "namespace": "prefs",
            "key": "home_city",
            "value": "Lisbon",
            "run_id": run.run_id,
            "written_at": "2025-03-15T10:22:32.800000Z",
        }
    ]
    assert [c.op for c in memory_history(state)] == ["write"]


def test_the_real_demo_on_the_wall_clock(led: ledger.Ledger) -> None:
    run_id = record_demo_run(led)
    events = led.tenant("usr_demo").events(run_id)
    state = RunState.from_events(events, prices=PRICES).model_dump(mode="json")
    assert state["status"] == "completed" and state["version"] == 10
    assert state["run_metadata"]["total_tokens"] == 924
    assert state["run_metadata"]["cost_usd"] == pytest.approx(0.00264)
    assert [m["role"] for m in state["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert state["completed_steps"] == [{"step": "answer", "index": 1}]
    assert state["at"].endswith("Z")


# -- particular cases -----------------------------------------------------------------


def test_unknown_model_or_missing_usage_costs_none_never_zero(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    unknown = t.start_run(session_id="s", model="house-model-7b")
    unknown.model_responded(content="hi", usage={"input_tokens": 10, "output_tokens": 2})
    no_usage = t.start_run(session_id="s", model="gpt-4o")
    no_usage.model_responded(content="hi")
    no_calls = t.start_run(session_id="s", model="gpt-4o")
    for run, cost in ((unknown, None), (no_usage, None), (no_calls, 0.0)):
        state = RUNS.fold(t.events(run.run_id))
        assert state is not None
        assert RunMetadata.from_state(state).cost_usd == cost
    assert PRICES.cost("house-model-7b", 10, 2) is None


def test_a_tool_error_is_an_error_entry_and_counted(led: ledger.Ledger) -> None:
    run = led.tenant("usr_a").start_run(session_id="s", model="gpt-4o")
    with run.turn():
        run.message_received(content="look it up")
        run.tool_called(call_id="c1", name="search", input={"q": "x"})
        run.tool_returned(call_id="c1", name="search", error="timeout", duration_ms=3000)
        run.tool_called(call_id="c2", name="search", input={"q": "y"})
    run.fail(error="gave up")
    events = led.tenant("usr_a").events(run.run_id)
    conversation = CONVERSATION.fold(events)
    assert conversation is not None
    tool = ConversationState.from_state(conversation).model_dump(mode="json")["messages"][1]
    assert {k: v for k, v in tool.items() if k != "timestamp"} == {
        "role": "tool",
        "call_id": "c1",
        "name": "search",
        "input": {"q": "x"},
        "error": "timeout",
        "duration_ms": 3000.0,
    }
    state = RUNS.fold(events)
    assert state is not None
    meta = RunMetadata.from_state(state)
    assert (meta.status, meta.error, meta.tool_errors) == ("failed", "gave up", 1)
    assert meta.tools["search"].model_dump() == {
        "calls": 2,
        "errors": 1,
        "total_duration_ms": 3000.0,
        "max_duration_ms": 3000.0,
    }
    assert meta.turns[0].errors == 2  # the tool's and the run's
    assert [p.model_dump() for p in meta.pending_tool_calls] == [
        {"call_id": "c2", "name": "search", "input": {"q": "y"}}
    ]


def test_documents_of_the_earlier_shape_read_as_they_meant(led: ledger.Ledger) -> None:
    # Until the rebuild that a version bump starts swaps in, readers of this release read
    # the documents of the earlier one: a conversation's open calls one index per
    # call_id (conversation 2), a run's pending calls a mapping by call_id (run_metadata
    # 3). Read as meant, not as corrupt, and not with the calls dropped.
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s", occurred_at=at(0))
    run.tool_called(call_id="c1", name="search", input={"q": 1}, occurred_at=at(1))
    run.tool_called(call_id="c2", name="fetch", input={"q": 2}, occurred_at=at(2))
    events = log(t)
    conversation, meta = CONVERSATION.fold(events), RUNS.fold(events)
    assert conversation is not None and meta is not None
    assert conversation.open_calls == {run.run_id: {"c1": [0], "c2": [1]}}
    earlier = {
        CONVERSATION: ("open_calls", {run.run_id: {"c1": 0, "c2": 1}}),
        RUNS: ("pending", {c.call_id: msgspec.to_builtins(c) for c in meta.pending}),
    }
    for reducer, state in ((CONVERSATION, conversation), (RUNS, meta)):
        projector = Projector("p", 1, reducer)
        stored = json.loads(projector.dump(Document(state, {run.run_id: 3}), (3, 3)).head)
        field, value = earlier[reducer]
        stored["state"][field] = value
        assert projector.load(json.dumps(stored).encode()).state == state
        stored["state"][field] = {"c1": "nonsense"}  # neither shape: corrupt, as before
        with pytest.raises(ReadModelCorrupt):
            projector.load(json.dumps(stored).encode())


def test_a_forgotten_memory_leaves_the_current_view_but_not_the_history(
    led: ledger.Ledger,
) -> None:
    t = led.tenant("usr_a")
    first = t.start_run(session_id="s1")
    first.memory_written(namespace="prefs", key="tone", value="brief")
    first.memory_written(namespace="facts", key="city", value="Porto")
    second = t.start_run(session_id="s2")
    second.memory_forgotten(namespace="prefs", key="tone")
    state = MEMORY.fold(log(t))
    assert state is not None
    assert [(m.namespace, m.key, m.run_id) for m in Memory.list_from_state(state)] == [
        ("facts", "city", first.run_id)
    ]
    assert Memory.list_from_state(state, namespace="prefs") == []
    history = [c.model_dump(exclude={"at"}) for c in memory_history(state)]
    assert history == [
        {"op": "write", "namespace": "prefs", "key": "tone", "value": "brief",
         "run_id": first.run_id},
        {"op": "write", "namespace": "facts", "key": "city", "value": "Porto",
         "run_id": first.run_id},
        {"op": "forget", "namespace": "prefs", "key": "tone", "value": None,
         "run_id": second.run_id},
    ]  # fmt: skip


def test_interleaved_runs_of_one_session(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    one = t.start_run(session_id="s", model="gpt-4o", occurred_at=at(0))
    one.message_received(content="first", occurred_at=at(1))
    one.tool_called(call_id="call_1", name="f", input=1, occurred_at=at(3))
    two = t.start_run(session_id="s", model="claude-sonnet-4", occurred_at=at(4))
    two.message_received(content="second", occurred_at=at(5))
    two.tool_called(call_id="call_1", name="f", input=2, occurred_at=at(6))
    two.tool_returned(call_id="call_1", name="f", output="two", occurred_at=at(7))
    one.tool_returned(call_id="call_1", name="f", output="one", occurred_at=at(8))
    one.complete(occurred_at=at(9))
    two.model_responded(model="claude-sonnet-4-20250514", usage={"input_tokens": 5},
                        occurred_at=at(19))  # fmt: skip
    two.complete(occurred_at=at(20))
    state = CONVERSATION.fold(log(t))
    assert state is not None
    public = ConversationState.from_state(state).model_dump(mode="json")
    tools = [(m["input"], m["output"]) for m in public["messages"] if m["role"] == "tool"]
    assert tools == [(1, "one"), (2, "two")]  # each result found its own run's call
    assert public["run_metadata"] == {
        "model": "claude-sonnet-4-20250514",
        "total_tokens": 5,
        "tool_calls": 2,
        "retries": 0,
        "wall_time_ms": 9000 + 16000,  # per run, not first-to-last of the session
    }
    only_two = CONVERSATION.fold(t.events(two.run_id))
    assert only_two is not None
    assert [m.content for m in only_two.messages if m.role == "user"] == ["second"]


def test_turns_a_prelude_and_messages_that_belong_together(led: ledger.Ledger) -> None:
    run = led.tenant("usr_a").start_run(session_id="s", model="gpt-4o", occurred_at=at(0))
    run.step_completed(step="warm-up", index=0, occurred_at=at(0.5))  # turn 0: a prelude
    with run.turn():
        run.message_received(content="be brief", role="system", occurred_at=at(1))
        run.message_received(content="hello", occurred_at=at(1.1))  # same turn as the prompt
        run.model_responded(content="hi", latency_ms=3000, occurred_at=at(4.1))
    with run.turn():
        run.message_received(content="thanks", occurred_at=at(5))
        run.model_responded(content="bye", occurred_at=at(5.5))
    state = RUNS.fold(led.tenant("usr_a").events(run.run_id))
    assert state is not None
    meta = RunMetadata.from_state(state)
    assert [(t.index, t.wall_time_ms, t.model_calls) for t in meta.turns] == [
        (0, 0, 0),
        (1, 3100, 1),
        (2, 500, 1),
    ]
    assert meta.slowest_turn == 1 and meta.turns[1].model_latency_ms == 3000.0
    assert meta.slowest_tool_call is None
    bare = RUNS.fold(led.tenant("usr_a").events(led.tenant("usr_a").start_run("s").run_id))
    assert bare is not None and bare.turns == []  # run_started alone is no turn


def test_datetimes_are_utc_with_z_whatever_the_agent_clock_zone(led: ledger.Ledger) -> None:
    lisbon_summer = timezone(timedelta(hours=1))
    run = led.tenant("usr_a").start_run(
        session_id="s", occurred_at=datetime(2025, 7, 1, 12, 0, tzinfo=lisbon_summer)
    )
    run.message_received(content="hi", occurred_at=datetime(2025, 7, 1, 12, 0, 1,
                                                            tzinfo=lisbon_summer))  # fmt: skip
    state = CONVERSATION.fold(led.tenant("usr_a").events(run.run_id))
    assert state is not None
    public = ConversationState.from_state(state).model_dump(mode="json")
    assert public["created_at"] == "2025-07-01T11:00:00Z"
    assert public["messages"][0]["timestamp"] == "2025-07-01T11:00:01Z"


def test_prices_match_by_name_or_dated_release_and_can_be_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert PRICES.price("gpt-4o-2024-08-06") == PRICES.price("gpt-4o")
    assert PRICES.price("gpt-4o-mini-2024-07-18") == PRICES.price("gpt-4o-mini")
    assert PRICES.price("gpt-4o-mini") != PRICES.price("gpt-4o")
    assert PRICES.price("claude-3-5-sonnet-20241022") == PRICES.price("claude-3-5-sonnet")
    for release, model in [
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
    ]:
        assert PRICES.price(release) == PRICES.price(model) is not None, release
    # Other products that merely start like a known name are unknown, not mispriced.
    for other in ("o1-pro", "gpt-5-pro", "gpt-4o-realtime-preview", "o1xyz", "gpt-50"):
        assert PRICES.price(other) is None, other
    assert PRICES.price("llama-3.1-8b") is None and PRICES.price(None) is None
    # cache_read tokens are part of input_tokens and cost the cache_read price
    assert PRICES.cost("gpt-4o", 1_000_000, 0, cache_read=400_000) == pytest.approx(
        0.6 * 2.5 + 0.4 * 1.25
    )
    custom = tmp_path / "prices.json"
    custom.write_text(json.dumps({"house-model": {"input": 1.0, "output": 2.0}}))
    assert PriceTable.load(custom).cost("house-model-2025-01-01", 1_000_000, 500_000) == 2.0
    assert PriceTable.load(custom).cost("house-model-v2", 1_000_000, 500_000) is None
    monkeypatch.setenv("LEDGER_PRICES", str(custom))
    assert PriceTable.default().price("gpt-4o") is None
    for body, message in [
        ("[1, 2]", "expected a JSON object of model names"),
        ("{bad", "JSON is malformed"),
        ('{"m": {"input": -1, "output": 2}}', r"model 'm': Expected `float` >= 0"),
        ('{"m": {"input": "cheap", "output": 2}}', r"model 'm': Expected `float`, got `str`"),
    ]:
        custom.write_text(body)
        with pytest.raises(ledger.InvalidSetting, match=f"price table {custom}: {message}"):
            PriceTable.load(custom)
    with pytest.raises(ledger.InvalidSetting, match=r"cannot be read \(No such file"):
        PriceTable.load(tmp_path / "missing.json")


def test_public_models_publish_a_json_schema() -> None:
    for model in (ConversationState, RunMetadata, RunState, Memory):
        schema = model.model_json_schema()
        assert schema["type"] == "object" and schema["required"]
    messages = ConversationState.model_json_schema()["properties"]["messages"]
    assert [s["title"] for s in messages["items"]["oneOf"]] == [
        "InputMessage",
        "AssistantMessage",
        "ToolMessage",
    ]


# -- properties over random valid logs ------------------------------------------------

MODELS = st.sampled_from(["gpt-4o", "gpt-4o-mini-2024-07-18", "claude-sonnet-4", "mystery", None])
SMALL_JSON = st.one_of(
    st.none(), st.integers(-5, 5), st.text(max_size=4), st.dictionaries(st.text(max_size=3),
                                                                       st.integers(), max_size=2)
)  # fmt: skip
DURATION = st.one_of(st.none(), st.floats(0, 5000, allow_nan=False))
USAGE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"input_tokens": st.integers(0, 5000), "output_tokens": st.integers(0, 500)},
        optional={"cache_read_input_tokens": st.integers(0, 100),
                  "reasoning_tokens": st.integers(0, 100)},
    ),
)  # fmt: skip
KINDS = st.sampled_from(
    ["message", "model", "model", "tool_called", "tool_returned", "tool_returned", "retry",
     "step", "memory_written", "memory_forgotten"]
)  # fmt: skip


@st.composite
def run_script(draw: st.DrawFn, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The (type, data) of one valid run: run_started, work, maybe an end."""
    script: list[tuple[str, dict[str, Any]]] = [("run_started", {"model": draw(MODELS)})]
    pending: list[str] = []
    for i in range(draw(st.integers(0, 10))):
        kind = draw(KINDS)
        if kind == "message":
            role = draw(st.sampled_from(["user", "system"]))
            script.append(("message_received", {"role": role, "content": f"m{i}"}))
        elif kind == "model":
            calls = draw(st.lists(st.sampled_from(["c1", "c2"]), max_size=2))
            script.append(("model_responded", {
                "model": draw(MODELS), "content": f"a{i}", "usage": draw(USAGE),
                "latency_ms": draw(DURATION),
                "tool_calls": [{"id": c, "name": "f", "arguments": {"i": i}} for c in calls],
            }))  # fmt: skip
        elif kind == "tool_called":
            call = draw(st.sampled_from(["c1", "c2", f"c{i}"]))
            pending.append(call)
            name = draw(st.sampled_from(["search", "fetch"]))
            script.append(
                ("tool_called", {"call_id": call, "name": name, "input": draw(SMALL_JSON)})
            )
        elif kind == "tool_returned":
            # Results come in any order, for ids that may be open more than once; else a
            # result whose call was never recorded (or an id no longer open).
            answer = draw(st.booleans())
            if pending and answer:
                call = pending.pop(draw(st.integers(0, len(pending) - 1)))
            else:
                call = draw(st.sampled_from(["c1", f"orphan{i}"]))
            failed = draw(st.booleans())
            script.append(("tool_returned", {
                "call_id": call, "name": draw(st.sampled_from(["search", "fetch"])),
                "output": None if failed else draw(SMALL_JSON),
                "error": "boom" if failed else None, "duration_ms": draw(DURATION),
            }))  # fmt: skip
        elif kind == "retry":
            script.append(("retry_attempted", {"what": "model", "attempt": i,
                                               "delay_ms": draw(DURATION)}))  # fmt: skip
        elif kind == "step":
            script.append(("step_completed", {"step": f"s{i}", "index": i}))
        else:
            key = {"namespace": draw(st.sampled_from(["prefs", "facts"])),
                   "key": draw(st.sampled_from(["a", "b"]))}  # fmt: skip
            if kind == "memory_written":
                script.append((kind, {**key, "value": draw(SMALL_JSON)}))
            else:
                script.append((kind, key))
    end = draw(st.sampled_from([None, "run_completed", "run_failed"]))
    if end is not None:
        script.append((end, {"output": n} if end == "run_completed" else {"error": "x"}))
    return script


@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    """A user's log: a few runs in one or two sessions, interleaved; real envelopes."""
    scripts = [draw(run_script(n)) for n in range(draw(st.integers(1, 3)))]
    sessions = [draw(st.sampled_from(["s1", "s2"])) for _ in scripts]
    turns = draw(st.permutations([n for n, s in enumerate(scripts) for _ in s]))
    cursor, when, events = [0] * len(scripts), T0, []
    for position, n in enumerate(turns, start=1):
        type_, data = scripts[n][cursor[n]]
        cursor[n] += 1
        when += timedelta(milliseconds=draw(st.integers(-50, 2000)))  # agent clocks drift
        payload = to_data(CATALOG.validate(type_, data))
        events.append(Event(
            user_id="usr_p", session_id=sessions[n], run_id=f"run_{n}", version=cursor[n],
            position=position, type=type_, schema=1, occurred_at=when,
            recorded_at=T0 + timedelta(seconds=position), data=payload, hash="", prev_hash="",
        ))  # fmt: skip
    return events


def answers(events: list[Event]) -> dict[int, Event]:
    """By position of each tool_returned: the tool_called it answers, if any. Counted,
    not queued: the n-th result of a run's call_id answers the n-th call of that id
    when there was one before it (else none: the result stands alone)."""
    calls: dict[tuple[str, str], list[Event]] = {}
    answered: dict[tuple[str, str], int] = {}
    out: dict[int, Event] = {}
    for event in events:
        key = (event.run_id, event.data.get("call_id", ""))
        if event.type == "tool_called":
            calls.setdefault(key, []).append(event)
        elif event.type == "tool_returned" and answered.get(key, 0) < len(calls.get(key, [])):
            out[event.position] = calls[key][answered.get(key, 0)]
            answered[key] = answered.get(key, 0) + 1
    return out


def documents(reducer: r.Reducer[Any], events: list[Event]) -> dict[str, list[Event]]:
    """The events of each document of a read model, in log order."""
    out: dict[str, list[Event]] = {}
    for event in events:
        key = reducer.key(event)
        if key is not None:
            out.setdefault(key, []).append(event)
    return out


REDUCERS: list[r.Reducer[Any]] = [CONVERSATION, RUNS, MEMORY]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(logs())
def test_incremental_equals_batch_and_apply_never_mutates(events: list[Event]) -> None:
    for reducer in REDUCERS:
        for evs in documents(reducer, events).values():
            state: Any = None
            for k, event in enumerate(evs, start=1):
                before: bytes | None = None if state is None else reducer.encode(state)
                base = reducer.initial(event) if state is None else state
                state = reducer.apply(base, event)
                if before is not None:
                    assert reducer.encode(base) == before  # the caller's state is untouched
                assert state == reducer.fold(evs[:k])
                assert reducer.decode(reducer.encode(state)) == state


@PROPERTY
@given(logs(), st.data())
def test_folding_in_two_chunks_equals_one_fold(events: list[Event], data: st.DataObject) -> None:
    for reducer in REDUCERS:
        for evs in documents(reducer, events).values():
            split = data.draw(st.integers(0, len(evs)))
            whole = reducer.fold(evs)
            assert reducer.fold(evs[split:], reducer.fold(evs[:split])) == whole
            projector = Projector("p", 1, reducer)
            first = projector.fold(None, evs[:split])
            stored = None
            if first is not None:
                stored = projector.load(projector.dump(first, (split, split)).head)
            # The first chunk again, of the runs the document names (those that ended
            # are left out of it, and a reader does not give them again): skipped.
            named = [] if stored is None else [e for e in evs[:split] if e.run_id in stored.applied]
            doc = projector.fold(stored, [*named, *evs[split:]])
            assert doc is not None and doc.state == whole
            ended = {e.run_id for e in evs[:split] if e.type in ENDS_A_RUN}
            assert stored is None or not ended & set(stored.applied)


def _stored_pages(pages: dict[int, bytes], numbers: Sequence[int]) -> dict[int, bytes]:
    return {n: pages[n] for n in numbers if n in pages}


@PROPERTY
@given(logs(), st.integers(1, 3), st.data())
def test_paged_documents_folded_batch_by_batch_read_back_as_the_whole_fold(
    events: list[Event], page_items: int, data: st.DataObject
) -> None:
    # As the projector stores a conversation (a run's turns, a user's memory history):
    # a head plus pages of the oldest items, each batch folded onto the head alone,
    # given back only the pages it changes (a tool result long after its call). Tiny
    # pages page out nearly everything.
    for reducer in REDUCERS:
        assert reducer.paged_field is not None
        projector = Projector("p", 1, reducer, page_items=page_items)
        for evs in documents(reducer, events).values():
            head: bytes | None = None
            pages: dict[int, bytes] = {}
            done = 0
            while done < len(evs):
                upto = data.draw(st.integers(done + 1, len(evs)))
                fetch = partial(_stored_pages, pages)
                doc, skipped = projector.fold_stored(head, evs[done:upto], fetch=fetch)
                assert doc is not None and skipped == 0
                head, written = projector.dump(doc, (upto, upto))
                assert len(reducer.items(projector.load(head).state)) < 2 * page_items
                pages.update(written)
                done = upto
                whole = projector.load(head, [pages[n] for n in range(len(pages))])
                assert whole.state == reducer.fold(evs[:upto])


@PROPERTY
@given(logs(), logs())
def test_the_runner_groups_events_by_the_key_of_each_reducer(
    events: list[Event], others: list[Event]
) -> None:
    # A second user with the same session and run names: documents are per user.
    mixed = [*events, *(msgspec.structs.replace(e, user_id="usr_q") for e in others)]
    for reducer in REDUCERS:
        expected: dict[tuple[str, str], list[Event]] = {}
        for event in mixed:
            key = reducer.key(event)
            assert reducer.key_field is None or key == getattr(event, reducer.key_field)
            if key is not None:
                expected.setdefault((event.user_id, key), []).append(event)
        assert dict(_by_key(Projector("p", 1, reducer), mixed)) == expected


def _outcome(result: Event) -> tuple[Any, Any, Any]:
    """A tool entry's output, error and duration_ms as ``result`` leaves them."""
    d = result.data
    failed = d.get("error") is not None
    duration = UNSET if d.get("duration_ms") is None else d["duration_ms"]
    return (UNSET, d["error"], duration) if failed else (d.get("output"), UNSET, duration)


@PROPERTY
@given(logs())
def test_a_result_answers_the_earliest_open_call_of_its_id(events: list[Event]) -> None:
    # Some agents reuse call ids ("call_0" in every parallel batch): the conversation's
    # tool entries, the pending calls and the slowest call pair results first come,
    # first served, with a result for no open call an entry of its own.
    answer = answers(events)
    at_position = {e.position: e for e in events}
    by_call = {call.position: at_position[result] for result, call in answer.items()}
    for evs in documents(CONVERSATION, events).values():
        state = CONVERSATION.fold(evs)
        assert state is not None
        expected = []
        for e in evs:
            if e.type == "tool_called":
                result = by_call.get(e.position)
                outcome = (UNSET, UNSET, UNSET) if result is None else _outcome(result)
                expected.append((e.data["call_id"], e.data["name"], e.data["input"], *outcome))
            elif e.type == "tool_returned" and e.position not in answer:
                expected.append((e.data["call_id"], e.data["name"], UNSET, *_outcome(e)))
        entries = [m for m in state.messages if m.role == "tool"]
        got = [(m.call_id, m.name, m.input, m.output, m.error, m.duration_ms) for m in entries]
        assert got == expected
    for evs in documents(RUNS, events).values():
        meta = RUNS.fold(evs)
        assert meta is not None
        waiting = [e for e in evs if e.type == "tool_called" and e.position not in by_call]
        assert [(c.call_id, c.name, c.input) for c in meta.pending] == [
            (e.data["call_id"], e.data["name"], e.data["input"]) for e in waiting
        ]
        timed = [e for e in evs if e.type == "tool_returned" and e.data["duration_ms"] is not None]
        slowest = max(timed, key=lambda e: e.data["duration_ms"], default=None)
        if slowest is None:
            assert meta.slowest_tool_call is None
            continue
        call = answer.get(slowest.position)
        source = slowest if call is None else call
        assert meta.slowest_tool_call is not None
        assert (meta.slowest_tool_call.name, meta.slowest_tool_call.input) == (
            source.data["name"],
            None if call is None else call.data["input"],
        )


CONVERSATION_KEYS = {"session_id", "user_id", "created_at", "updated_at", "messages",
                     "run_metadata"}  # fmt: skip
CONVERSATION_METADATA_KEYS = {"model", "total_tokens", "tool_calls", "retries", "wall_time_ms"}
# CONTRACT's RunState keys, plus the additive fork fields.
RUN_STATE_KEYS = {"run_id", "user_id", "session_id", "status", "version", "position", "at",
                  "messages", "run_metadata", "pending_tool_calls", "completed_steps",
                  "parent_run_id", "parent_version"}  # fmt: skip
RUN_STATE_METADATA_KEYS = CONVERSATION_METADATA_KEYS - {"total_tokens"} | {
    "input_tokens", "output_tokens", "total_tokens", "cost_usd"}  # fmt: skip


def check_messages(messages: list[dict[str, Any]]) -> None:
    for m in messages:
        if m["role"] in ("user", "system"):
            assert set(m) == {"role", "content", "timestamp"}
        elif m["role"] == "assistant":
            assert set(m) - {"tool_calls"} == {"role", "content", "timestamp"}
            assert m.get("tool_calls", [1]) != []
        else:
            assert m["role"] == "tool"
            assert {"role", "call_id", "name", "timestamp"} <= set(m)
            assert set(m) <= {"role", "call_id", "name", "timestamp", "input", "output",
                              "error", "duration_ms"}  # fmt: skip
            assert not {"output", "error"} <= set(m)
        assert m["timestamp"].endswith("Z")


@PROPERTY
@given(logs())
def test_public_json_has_exactly_the_contract_keys(events: list[Event]) -> None:
    for state in map(CONVERSATION.fold, documents(CONVERSATION, events).values()):
        assert state is not None
        public = ConversationState.from_state(state).model_dump(mode="json")
        assert set(public) == CONVERSATION_KEYS
        assert set(public["run_metadata"]) == CONVERSATION_METADATA_KEYS
        check_messages(public["messages"])
        assert ConversationState.model_validate_json(json.dumps(public)).model_dump(
            mode="json") == public  # fmt: skip
    for run_id, evs in documents(RUNS, events).items():
        for k in range(1, len(evs) + 1):  # replay at every version == the read model then
            replayed = RunState.from_events(evs[:k], prices=PRICES).model_dump(mode="json")
            assert set(replayed) == RUN_STATE_KEYS
            assert set(replayed["run_metadata"]) == RUN_STATE_METADATA_KEYS
            check_messages(replayed["messages"])
            upto = [e for e in events if e.position <= evs[k - 1].position]
            projected = RUNS.fold(documents(RUNS, upto)[run_id])
            assert projected is not None
            assert replayed["run_metadata"]["total_tokens"] == projected.total_tokens
            assert replayed["version"] == projected.version == k
        meta = RunMetadata.from_state(RUNS.fold(evs))  # type: ignore[arg-type]
        assert meta.tool_calls == sum(e.type == "tool_called" for e in evs)
        assert meta.total_tokens == sum(t.input_tokens + t.output_tokens for t in meta.turns)
