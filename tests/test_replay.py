"""The replay engine: any run at any point, equal to the fold and to the projections;
--at-time, forks, resume state, and the errors users hit."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger
import ledger.records
import ledger.tenant
from ledger import InvalidEvent, NotFound
from projections.catalog import RUN_METADATA, default_projectors
from projections.models import RunMetadata
from projections.reducers import RunMetadataReducer
from projections.runner import ProjectorRunner
from tests.test_cli import ledger_cli
from tests.test_read_models import ACTIONS, play
from tests.writers import turn


@pytest.fixture
def led(store_url: str) -> ledger.Ledger:
    with ledger.connect(store_url) as connection:
        yield connection


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, data=st.data())
def test_replay_at_k_is_the_fold_of_k_and_what_projections_held(
    actions: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    with ledger.connect("memory://") as led:
        play(led, actions)
        log = led.store.read_log(ledger.records.START, 10_000)
        started = [r.run_id for r in log if r.version == 1]  # run ids are random: draw a rank
        run_id = started[data.draw(st.integers(0, len(started) - 1), label="run")]
        own = [r for r in log if r.run_id == run_id]
        k = data.draw(st.integers(1, len(own)), label="k")
        state = led.tenant("usr_p").replay(run_id, at=k)
        folded = RunMetadataReducer().fold([ledger.tenant.to_event(r) for r in own[:k]])
        assert folded is not None
        assert state.version == k and state.status == folded.status
        assert state.run_metadata.total_tokens == folded.total_tokens
        assert state.run_metadata.cost_usd == folded.cost_usd
        assert [c.call_id for c in state.pending_tool_calls] == [c.call_id for c in folded.pending]
        # and the run metadata read model, after the log up to that event was projected
        runner = ProjectorRunner(led, default_projectors(), batch_size=1)
        for _ in range(log.index(own[k - 1]) + 1):
            runner.step()
        stored = runner.storage.get(RUN_METADATA, "usr_p", run_id)
        assert stored is not None
        projected = RunMetadata.from_state(default_projectors()[1].load(*stored).state)
        assert projected.version == state.version
        assert (projected.total_tokens, projected.cost_usd, projected.status) == (
            state.run_metadata.total_tokens,
            state.run_metadata.cost_usd,
            state.status,
        )
        assert [c.call_id for c in projected.pending_tool_calls] == [
            c.call_id for c in state.pending_tool_calls
        ]


def test_at_time_picks_the_last_event_recorded_at_or_before(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    turn(run, 1)  # one transaction: five events share one recorded_at
    run.step_completed(step="after", index=1)
    events = t.events(run.run_id)
    turn_time = events[1].recorded_at
    assert {e.recorded_at for e in events[1:6]} == {turn_time}
    assert t.replay(run.run_id, at=turn_time).version == 6  # last of those sharing it
    between = turn_time + (events[6].recorded_at - turn_time) / 2
    if events[6].recorded_at > turn_time:
        assert t.replay(run.run_id, at=between).version == 6
    assert t.replay(run.run_id, at=events[-1].recorded_at + timedelta(days=1)).version == 7
    with pytest.raises(InvalidEvent, match="before run"):
        t.replay(run.run_id, at=events[0].recorded_at - timedelta(seconds=1))


def test_a_fork_replays_the_parent_up_to_n_then_its_own(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    parent = t.start_run(session_id="s", model="gpt-4o")
    turn(parent, 1)
    turn(parent, 2)
    parent_before = t.events(parent.run_id)
    child = t.fork(parent.run_id, at=6)
    child.message_received(content="a different continuation")
    state = t.replay(child.run_id)
    assert (state.parent_run_id, state.parent_version) == (parent.run_id, 6)
    at_fork = t.replay(parent.run_id, at=6)
    assert state.messages[: len(at_fork.messages)] == at_fork.messages
    assert state.messages[-1]["content"] == "a different continuation"
    assert t.events(parent.run_id) == parent_before  # untouched
    assert led.auditor().verify().ok
    grandchild = t.fork(child.run_id, at=1)  # a fork of a fork, at its run_started
    assert t.replay(grandchild.run_id).messages == at_fork.messages
    with pytest.raises(InvalidEvent, match="cannot fork"):
        t.fork(parent.run_id, at=99)


def test_a_fork_accounts_for_its_own_events_and_resumes_its_lineage(
    led: ledger.Ledger,
) -> None:
    """Replayed or read from its read model, a fork's tokens, cost, tool calls and
    wall time are its own (its parent's spending is its parent's), while its replay
    goes on from the lineage: the parent's messages and the tool call left open."""
    t = led.tenant("usr_a")
    parent = t.start_run(session_id="s", model="gpt-4o")
    with parent.turn():
        parent.message_received(content="q1")
        parent.model_responded(content="a1", usage={"input_tokens": 100, "output_tokens": 10})
    with parent.turn():
        parent.model_responded(
            tool_calls=[{"id": "c1", "name": "search", "arguments": {}}],
            usage={"input_tokens": 200, "output_tokens": 20},
        )
        parent.tool_called(call_id="c1", name="search", input={})
    child = t.fork(parent.run_id, at=5)  # c1 called, not yet returned
    with child.turn():
        child.tool_returned(call_id="c1", name="search", output="found", duration_ms=5)
        child.model_responded(content="a2", usage={"input_tokens": 300, "output_tokens": 30})
    for version in range(1, child.version + 1):
        replayed = t.replay(child.run_id, at=version)
        own = t.events(child.run_id)[:version]
        folded = RunMetadata.from_state(RunMetadataReducer().fold(own))
        assert replayed.run_metadata.total_tokens == folded.total_tokens, version
        assert replayed.run_metadata.tool_calls == folded.tool_calls, version
        assert replayed.run_metadata.wall_time_ms == folded.wall_time_ms, version
        assert replayed.run_metadata.cost_usd == folded.cost_usd, version
    state = t.replay(child.run_id)
    meta = t.run_metadata(child.run_id)
    assert state.run_metadata.total_tokens == meta.total_tokens == 330
    assert state.run_metadata.cost_usd == meta.cost_usd
    assert [m["content"] for m in state.messages if m["role"] != "tool"][:2] == ["q1", "a1"]
    at_fork = t.replay(child.run_id, at=1)
    assert [p.call_id for p in at_fork.pending_tool_calls] == ["c1"]  # the fork resumes it
    assert at_fork.run_metadata.total_tokens == 0 and state.pending_tool_calls == []


def test_a_fork_goes_on_from_before_its_parents_end(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    parent = t.start_run(session_id="s", model="gpt-4o")
    turn(parent, 1)
    parent.fail(error="tool down")
    with pytest.raises(ledger.RunEnded, match=r"at version 7: the run ended there \(run_failed\)"):
        t.fork(parent.run_id, at=7)
    assert [r.run_id for r in t.runs()] == [parent.run_id]  # no fork was started
    retry = t.fork(parent.run_id, at=6)
    turn(retry, 2)
    retry.complete(output="done")
    assert t.replay(retry.run_id).status == "completed"


def test_a_fork_names_a_point_of_its_own_tenants_run(led: ledger.Ledger) -> None:
    """start_run(parent_run_id=...) is how fork starts a run: a parent it cannot replay
    (another tenant's run, a missing one, a version it lacks) is refused up front."""
    a, b = led.tenant("usr_a"), led.tenant("usr_b")
    theirs = b.start_run(session_id="s")
    turn(theirs, 1)
    mine = a.start_run(session_id="s")
    refused = [
        (dict(parent_run_id=theirs.run_id, parent_version=2), NotFound, "not found for user"),
        (dict(parent_run_id="run_nope", parent_version=1), NotFound, "not found for user"),
        (dict(parent_run_id=mine.run_id, parent_version=2), InvalidEvent, "versions 1..1"),
        (dict(parent_run_id=mine.run_id), InvalidEvent, "together"),
        (dict(parent_version=1), InvalidEvent, "together"),
        # Not a version (a str raised TypeError), not an id: named before any lookup.
        (dict(parent_run_id=mine.run_id, parent_version="1"), InvalidEvent, "parent_version"),
        (dict(parent_run_id=theirs.run_id, parent_version="1"), InvalidEvent, "parent_version"),
        (dict(parent_run_id=5, parent_version=1), InvalidEvent, "parent_run_id"),
    ]
    for parent, error, message in refused:
        with pytest.raises(error, match=message):
            a.start_run(session_id="s", **parent)  # type: ignore[arg-type]
    assert [r.run_id for r in a.runs()] == [mine.run_id]  # nothing was started
    assert a.replay(a.start_run(session_id="s", parent_run_id=mine.run_id, parent_version=1).run_id)


def test_resume_shows_completed_steps_and_pending_tool_calls(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    run.step_completed(step="plan", index=1)
    run.tool_called(call_id="c1", name="search", input={"q": "x"})
    state = t.run(run.run_id).state()
    assert [(s.step, s.index) for s in state.completed_steps] == [("plan", 1)]
    assert [(c.call_id, c.name, c.input) for c in state.pending_tool_calls] == [
        ("c1", "search", {"q": "x"})
    ]
    assert state.status == "running"


def test_a_point_is_a_version_or_a_time(led: ledger.Ledger) -> None:
    run = led.tenant("usr_a").start_run(session_id="s")
    for bad in (True, "1", 1.0, [1]):
        with pytest.raises(InvalidEvent, match=r"at must be a version .* or a datetime"):
            led.tenant("usr_a").replay(run.run_id, at=bad)  # type: ignore[arg-type]


def test_a_fork_point_is_a_version(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    for bad in (True, "1", 1.5, "2025-03-15T10:22:31Z", None):
        with pytest.raises(InvalidEvent, match=r"^at must be a version \(int\), got "):
            t.fork(run.run_id, at=bad)  # type: ignore[arg-type]
    assert [r.run_id for r in t.runs()] == [run.run_id]


def test_a_time_before_a_fork_began_is_refused_as_for_any_run(led: ledger.Ledger) -> None:
    """The fork's lineage holds its parent's earlier events, but the fork did not exist
    then: as before any run's first event, there is no state to show (docs/replay.md)."""
    t = led.tenant("usr_a")
    parent = t.start_run(session_id="s")
    turn(parent, 1)
    child = t.fork(parent.run_id, at=3)
    began = t.events(child.run_id)[0].recorded_at
    with pytest.raises(InvalidEvent, match=rf"is before run '{child.run_id}' began"):
        t.replay(child.run_id, at=began - timedelta(microseconds=1))
    assert t.replay(child.run_id, at=began).version == 1


def test_unknown_other_tenants_and_out_of_range(led: ledger.Ledger) -> None:
    a, b = led.tenant("usr_a"), led.tenant("usr_b")
    run = a.start_run(session_id="s")
    with pytest.raises(NotFound):
        b.replay(run.run_id)
    with pytest.raises(NotFound):
        a.replay("run_nope")
    for bad in (0, 2):
        with pytest.raises(InvalidEvent, match="outside run"):
            a.replay(run.run_id, at=bad)
    assert led.auditor().replay(run.run_id).user_id == "usr_a"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def test_replay_fork_and_tail_from_the_shell(url: str) -> None:
    with ledger.connect(url) as led:
        run = led.tenant("usr_a").start_run(session_id="s")
        turn(run, 1)
        run_id = run.run_id
    shown = ledger_cli(url, "replay", run_id, "--at", "3")
    assert shown.returncode == 0 and "▶" in shown.stdout and "at version 3" in shown.stdout
    state: dict[str, Any] = json.loads(ledger_cli(url, "replay", run_id, "--json").stdout)
    assert set(state) >= {
        "run_id",
        "user_id",
        "session_id",
        "status",
        "version",
        "position",
        "at",
        "messages",
        "run_metadata",
        "pending_tool_calls",
        "completed_steps",
    }
    assert set(state["run_metadata"]) >= {
        "model",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "tool_calls",
        "retries",
        "wall_time_ms",
        "cost_usd",
    }
    change = json.loads(
        ledger_cli(url, "replay", run_id, "--from", "1", "--to", "6", "--json").stdout
    )
    assert len(change["messages_added"]) == 4 and change["input_tokens"] == 2600
    at_time = ledger_cli(url, "replay", run_id, "--at-time", state["at"], "--json")
    assert json.loads(at_time.stdout)["version"] == 6
    assert ledger_cli(url, "replay", run_id, "--user", "usr_b").returncode == 1
    assert ledger_cli(url, "replay", "run_nope").returncode == 1
    assert ledger_cli(url, "replay", run_id, "--at", "50").returncode == 2
    assert ledger_cli(url, "replay", run_id, "--at-time", "yesterday").returncode == 2
    forked = json.loads(
        ledger_cli(url, "fork", run_id, "--at", "2", "--user", "usr_a", "--json").stdout
    )
    assert forked["parent_run_id"] == run_id
    assert ledger_cli(url, "tail", "--for", "0.3").returncode == 0


def test_a_diff_goes_forward_and_is_not_mixed_with_a_point(sqlite_url: str) -> None:
    with ledger.connect(sqlite_url) as led:
        run = led.tenant("usr_a").start_run(session_id="s")
        turn(run, 1)
    backwards = ledger_cli(sqlite_url, "replay", run.run_id, "--from", "5", "--to", "2")
    assert (backwards.returncode, "Traceback" in backwards.stderr) == (2, False)
    assert backwards.stderr.strip() == (
        "error: a difference goes forward in a run: version 5 comes after 2 (swap them)"
    )
    mixed = ledger_cli(sqlite_url, "replay", run.run_id, "--at", "3", "--to", "4")
    assert mixed.returncode == 2 and "not both" in mixed.stderr


@pytest.mark.parametrize(("option", "value"), [("--from", "0"), ("--from", "-1"), ("--to", "0")])
def test_a_diff_from_or_to_no_version_is_a_usage_error(
    sqlite_url: str, option: str, value: str
) -> None:
    with ledger.connect(sqlite_url) as led:
        run = led.tenant("usr_a").start_run(session_id="s")
        turn(run, 1)
    result = ledger_cli(sqlite_url, "replay", run.run_id, option, value)
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert option in result.stderr and result.stdout == ""
