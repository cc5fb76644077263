"""The three read models: exact shapes, numbers, isolation, read-your-writes, and the
property that a projected model after k events equals the fold of the first k."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger
import ledger.records
import ledger.tenant
from ledger import NotFound
from ledger.personal import reveal
from projections.catalog import CONVERSATION, MEMORY, RUN_METADATA, default_projectors
from projections.models import ConversationState
from projections.prices import PriceTable
from projections.projector import Projector
from projections.reading import current
from projections.reducers import ConversationReducer, MemoryReducer, RunMetadataReducer
from projections.runner import ProjectorRunner
from tests.pg import raw_connection

T0 = datetime(2025, 3, 15, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def led(store_url: str) -> ledger.Ledger:
    with ledger.connect(store_url) as connection:
        yield connection


def scripted_run(t: ledger.Tenant, session: str = "sess_1", model: str = "gpt-4o") -> ledger.Run:
    """Two turns with a tool call, a tool error, a retry, a step and memory writes."""
    run = t.start_run(session_id=session, agent="bot", model=model, occurred_at=at(0))
    with run.turn():
        run.message_received(content="weather?", occurred_at=at(1))
        run.model_responded(
            model=model,
            tool_calls=[{"id": "c1", "name": "wx", "arguments": {"city": "Oslo"}}],
            usage={"input_tokens": 1000, "output_tokens": 50},
            latency_ms=700,
            occurred_at=at(2),
        )
        run.tool_called(call_id="c1", name="wx", input={"city": "Oslo"}, occurred_at=at(2.1))
        run.tool_returned(
            call_id="c1", name="wx", output={"t": 3}, duration_ms=900, occurred_at=at(3)
        )
        run.model_responded(
            model=model,
            content="3 degrees",
            usage={"input_tokens": 1100, "output_tokens": 20},
            latency_ms=400,
            occurred_at=at(3.5),
        )
    with run.turn():
        run.message_received(content="and tomorrow?", occurred_at=at(10))
        run.retry_attempted(
            what="model", attempt=2, error="429", delay_ms=500, occurred_at=at(10.5)
        )
        run.tool_called(call_id="c2", name="wx", input={"day": 2}, occurred_at=at(11))
        run.tool_returned(
            call_id="c2", name="wx", error="timeout", duration_ms=3000, occurred_at=at(14)
        )
    run.step_completed(step="forecast", index=1, occurred_at=at(14.1))
    run.memory_written(namespace="prefs", key="city", value="Oslo", occurred_at=at(14.2))
    run.memory_written(namespace="prefs", key="units", value="C", occurred_at=at(14.3))
    run.memory_forgotten(namespace="prefs", key="units", occurred_at=at(14.4))
    run.complete(output="done", occurred_at=at(15))
    return run


def test_conversation_is_exactly_the_contract_shape(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    scripted_run(t)
    state = t.conversation("sess_1").model_dump(mode="json")
    assert state == {
        "session_id": "sess_1",
        "user_id": "usr_a",
        "created_at": "2025-03-15T10:00:00Z",
        "updated_at": "2025-03-15T10:00:15Z",
        "messages": [
            {"role": "user", "content": "weather?", "timestamp": "2025-03-15T10:00:01Z"},
            {
                "role": "assistant",
                "content": "",
                "timestamp": "2025-03-15T10:00:02Z",
                "tool_calls": [{"id": "c1", "name": "wx", "arguments": {"city": "Oslo"}}],
            },
            {
                "role": "tool",
                "call_id": "c1",
                "name": "wx",
                "input": {"city": "Oslo"},
                "output": {"t": 3},
                "duration_ms": 900.0,
                "timestamp": "2025-03-15T10:00:02.100000Z",
            },
            {
                "role": "assistant",
                "content": "3 degrees",
                "timestamp": "2025-03-15T10:00:03.500000Z",
            },
            {"role": "user", "content": "and tomorrow?", "timestamp": "2025-03-15T10:00:10Z"},
            {
                "role": "tool",
                "call_id": "c2",
                "name": "wx",
                "input": {"day": 2},
                "error": "timeout",
                "duration_ms": 3000.0,
                "timestamp": "2025-03-15T10:00:11Z",
            },
        ],
        "run_metadata": {
            "model": "gpt-4o",
            "total_tokens": 2170,
            "tool_calls": 2,
            "retries": 1,
            "wall_time_ms": 15000.0,
        },
    }


def test_run_metadata_answers_cost_and_slowness(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = scripted_run(t)
    meta = t.run_metadata(run.run_id)
    assert (meta.status, meta.agent, meta.model, meta.version) == ("completed", "bot", "gpt-4o", 15)
    assert (meta.input_tokens, meta.output_tokens, meta.total_tokens) == (2100, 70, 2170)
    assert meta.cost_usd == pytest.approx((2100 * 2.5 + 70 * 10.0) / 1e6)
    assert (meta.model_calls, meta.tool_calls, meta.tool_errors, meta.retries) == (2, 2, 1, 1)
    assert meta.wall_time_ms == 15000.0
    assert meta.tools["wx"].model_dump() == {
        "calls": 2,
        "errors": 1,
        "total_duration_ms": 3900.0,
        "max_duration_ms": 3000.0,
    }
    assert [turn.index for turn in meta.turns] == [0, 1]
    assert meta.turns[1].wall_time_ms == pytest.approx(5000.0)  # 10.0 s -> 15.0 s
    assert meta.turns[1].retry_delay_ms == 500 and meta.turns[1].errors == 1
    assert meta.slowest_turn == 1
    assert meta.slowest_tool_call is not None
    assert (meta.slowest_tool_call.call_id, meta.slowest_tool_call.duration_ms) == ("c2", 3000)
    assert [s.model_dump() for s in meta.completed_steps] == [{"step": "forecast", "index": 1}]
    assert meta.pending_tool_calls == []
    assert [m.run_id for m in t.runs()] == [run.run_id]


def test_runs_come_ordered_and_limited_for_the_question_asked(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    usage = {"cheap": (100, 1.0), "dear": (9_000, 2.0), "slow": (10, 60.0)}
    runs = {}
    for name, (tokens, seconds) in usage.items():
        run = runs[name] = t.start_run(session_id=name, model="gpt-4o", occurred_at=at(0))
        run.model_responded(usage={"input_tokens": tokens}, occurred_at=at(seconds))
    unknown = t.start_run(session_id="unknown", occurred_at=at(0))
    unknown.model_responded(model="in-house-7", usage={"input_tokens": 10**6}, occurred_at=at(1))

    def order(**listing: object) -> list[str]:
        return [m.run_id for m in t.runs(**listing)]  # type: ignore[arg-type]

    assert order(order_by="cost") == [runs["dear"].run_id, runs["cheap"].run_id,
                                      runs["slow"].run_id, unknown.run_id]  # fmt: skip
    assert order(order_by="tokens", limit=1) == [unknown.run_id]
    assert order(order_by="wall_time", limit=2) == [runs["slow"].run_id, runs["dear"].run_id]
    assert order(limit=2) == order()[:2] == [runs["cheap"].run_id, runs["dear"].run_id]
    assert order(order_by="cost", limit=0) == []
    auditor = led.auditor().runs_metadata(order_by="cost", limit=1)
    assert [m.run_id for m in auditor] == [runs["dear"].run_id]
    for bad in ({"order_by": "price"}, {"limit": -1}, {"limit": True}):
        with pytest.raises(ledger.InvalidEvent, match=r"(order_by|limit) must be"):
            t.runs(**bad)  # type: ignore[arg-type]


def _sorted_listing(listing: list[Any], order_by: str) -> list[Any]:
    """``listing`` (oldest first) sorted as the read side orders runs: largest first
    (oldest first for "created"), an unknown cost below every known one, ties kept in
    listing order."""
    keys = {
        "created": lambda m: m.started_at,
        "cost": lambda m: -1.0 if m.cost_usd is None else m.cost_usd,
        "tokens": lambda m: m.total_tokens,
        "wall_time": lambda m: m.wall_time_ms,  # whole milliseconds below: not rounded
    }
    return sorted(listing, key=keys[order_by], reverse=order_by != "created")


def test_a_top_k_of_runs_is_the_sorted_listing_of_all_including_runs_not_projected(
    led: ledger.Ledger,
) -> None:
    # A top k decodes only what the runs sort by from each stored document (see
    # projections.read_side): it must still see what the projector has not stored yet.
    from ledger.read_side import RUN_ORDERS

    a, b = led.tenant("usr_a"), led.tenant("usr_b")

    def spend(run: ledger.Run, tokens: int, seconds: float, model: str = "gpt-4o") -> None:
        run.model_responded(model=model, usage={"input_tokens": tokens}, occurred_at=at(seconds))

    runs = {}
    # Ties in every order (same usage and times), and an unknown model's null cost.
    for name, tokens, seconds in [("r1", 500, 2), ("r2", 900, 1.5), ("r3", 500, 2),
                                  ("r4", 100, 9), ("r5", 900, 1.5)]:  # fmt: skip
        runs[name] = a.start_run(session_id=f"s_{name}", occurred_at=at(0))
        spend(runs[name], tokens, seconds)
    spend(a.start_run(session_id="s_x", occurred_at=at(0.5)), 10**6, 3, "in-house-7")
    spend(b.start_run(session_id="s_b", occurred_at=at(0)), 10**7, 99)  # not usr_a's
    ProjectorRunner(led, default_projectors()).catch_up()
    # After the catch-up: a stored run goes on (its document is now behind: it would
    # sort last on what is stored), new runs (none stored), and another tenant's.
    spend(runs["r4"], 50_000, 30)
    spend(a.start_run(session_id="s_new", occurred_at=at(1)), 20_000, 4)
    a.start_run(session_id="s_idle", occurred_at=at(0.25))  # no usage: cost 0
    spend(b.start_run(session_id="s_b2", occurred_at=at(0)), 10**7, 99)

    def dumped(models: list[Any]) -> list[dict[str, Any]]:
        return [m.model_dump(mode="json") for m in models]

    everything = a.runs()
    assert {m.user_id for m in everything} == {"usr_a"} and len(everything) == 8
    across = led.auditor().runs_metadata()
    for order_by in RUN_ORDERS:
        expected, expected_across = (_sorted_listing(x, order_by) for x in (everything, across))
        for limit in (0, 1, 2, 3, 5, 8, 20):
            got = a.runs(order_by=order_by, limit=limit)
            assert dumped(got) == dumped(expected[:limit]), (order_by, limit)
            got = led.auditor().runs_metadata(order_by=order_by, limit=limit)
            assert dumped(got) == dumped(expected_across[:limit]), (order_by, limit)
        assert dumped(a.runs(order_by=order_by)) == dumped(expected)
    assert a.runs(order_by="cost", limit=1)[0].run_id == runs["r4"].run_id
    for limit in (0, 1, 4, 8, 20):
        assert dumped(a.runs(limit=limit)) == dumped(everything[:limit])


def test_the_cli_sorts_by_what_the_api_orders_by() -> None:
    from cli.app import SortKey
    from ledger.read_side import RUN_ORDERS
    from projections import read_side

    assert [k.value for k in SortKey] == list(RUN_ORDERS)
    assert list(read_side._RUN_ORDERS) == list(RUN_ORDERS)  # and the read side sorts by them


def test_unknown_models_cost_null_not_zero(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = scripted_run(t, model="in-house-model-7")
    meta = t.run_metadata(run.run_id)
    assert meta.cost_usd is None
    assert all(turn.cost_usd is None for turn in meta.turns if turn.model_calls)


def test_prices_can_be_overridden_by_a_file(tmp_path: Any) -> None:
    table = tmp_path / "prices.json"
    table.write_text('{"in-house": {"input": 1.0, "output": 2.0}}')
    prices = PriceTable.load(table)
    assert prices.cost("in-house", 1_000_000, 500_000) == pytest.approx(2.0)
    assert prices.cost("in-house-2026-01-31", 1_000_000, 500_000) == pytest.approx(2.0)
    assert prices.cost("in-house-v2", 1, 1) is None  # another model until listed
    assert prices.cost("gpt-4o", 1, 1) is None


def test_memory_keeps_current_values_and_history(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = scripted_run(t)
    memories = t.memories()
    assert [(m.namespace, m.key, m.value, m.run_id) for m in memories] == [
        ("prefs", "city", "Oslo", run.run_id)
    ]
    assert t.memories("other") == []
    history = MemoryReducer().fold(led.auditor().events(run.run_id))
    assert history is not None
    assert [(c.op, c.key) for c in history.history] == [
        ("write", "city"),
        ("write", "units"),
        ("forget", "units"),
    ]


def test_memories_of_different_namespaces_and_keys_never_share_a_slot(
    led: ledger.Ledger,
) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    run.memory_written(namespace="a\x1fb", key="c", value="one")
    run.memory_written(namespace="a", key="b\x1fc", value="two")
    assert sorted((m.namespace, m.key, m.value) for m in t.memories()) == [
        ("a", "b\x1fc", "two"),
        ("a\x1fb", "c", "one"),
    ]
    run.memory_forgotten(namespace="a", key="b\x1fc")
    assert [(m.namespace, m.key) for m in t.memories()] == [("a\x1fb", "c")]


def test_pending_tool_calls_and_a_running_status(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    run.tool_called(call_id="c9", name="slow", input={"n": 1})
    meta = t.run_metadata(run.run_id)
    assert meta.status == "running"
    assert [(c.call_id, c.name, c.input) for c in meta.pending_tool_calls] == [
        ("c9", "slow", {"n": 1})
    ]


def reused_call_ids(t: ledger.Tenant) -> ledger.Run:
    """A run whose agent reuses call ids: two calls "c0" open at once (answered first
    come, first served, the second a turn later), another open call between them, a
    third "c0" and a result for an id no call left open."""
    run = t.start_run(session_id="s", model="gpt-4o", occurred_at=at(0))
    with run.turn():
        run.message_received(content="compare", occurred_at=at(1))
        run.tool_called(call_id="c0", name="search", input={"q": "a"}, occurred_at=at(2))
        run.tool_called(call_id="c0", name="fetch", input={"q": "b"}, occurred_at=at(3))
        run.tool_called(call_id="c1", name="search", input={"q": "c"}, occurred_at=at(4))
        run.tool_returned(
            call_id="c0", name="search", output="a!", duration_ms=100, occurred_at=at(5)
        )
    with run.turn():
        run.message_received(content="and?", occurred_at=at(6))
        run.tool_called(call_id="c0", name="search", input={"q": "d"}, occurred_at=at(7))
        run.tool_returned(
            call_id="c0", name="fetch", output="b!", duration_ms=900, occurred_at=at(8)
        )
        run.tool_returned(call_id="c2", name="clock", output="noon", occurred_at=at(9))
    return run


def test_results_of_reused_call_ids_go_to_the_earliest_open_call(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = reused_call_ids(t)
    runner = ProjectorRunner(led, default_projectors())
    for projected in (False, True):  # read before the projector passes, and after
        if projected:
            runner.catch_up()
        tools = [m for m in t.conversation("s").messages if m["role"] == "tool"]
        assert [(m["call_id"], m.get("input"), m.get("output")) for m in tools] == [
            ("c0", {"q": "a"}, "a!"),
            ("c0", {"q": "b"}, "b!"),
            ("c1", {"q": "c"}, None),
            ("c0", {"q": "d"}, None),
            ("c2", None, "noon"),  # answers no call: an entry of its own
        ]
        meta = t.run_metadata(run.run_id)
        assert [(c.call_id, c.input) for c in meta.pending_tool_calls] == [
            ("c1", {"q": "c"}),
            ("c0", {"q": "d"}),
        ]
        assert meta.tool_calls == 4 and meta.tools["fetch"].max_duration_ms == 900
        slowest = meta.slowest_tool_call
        assert slowest is not None  # the second "c0", called in the first turn
        assert (slowest.call_id, slowest.name, slowest.turn) == ("c0", "fetch", 0)
    state = t.replay(run.run_id)
    assert state.pending_tool_calls == meta.pending_tool_calls
    assert [m for m in state.messages if m["role"] == "tool"] == tools
    both_open = t.replay(run.run_id, at=5)  # both "c0" and the "c1" called, none answered
    assert [(c.call_id, c.input) for c in both_open.pending_tool_calls] == [
        ("c0", {"q": "a"}),
        ("c0", {"q": "b"}),
        ("c1", {"q": "c"}),
    ]


def test_results_of_a_reused_call_id_whose_calls_are_paged_out(led: ledger.Ledger) -> None:
    """Two results of one call_id in one batch, for two calls in pages of their own (tiny
    pages): the projector is handed back both pages, and each result reaches its call."""
    t, waiting, chat = _a_call_then_a_chat(led)
    projector = next(p for p in default_projectors() if p.name == CONVERSATION)
    projector = Projector(projector.name, projector.version, projector.reducer, page_items=2)
    runner = ProjectorRunner(led, [projector])
    for n in range(6):
        if n == 3:
            waiting.tool_called(call_id="slow", name="approve", input={"what": "refill"})
        with chat.turn():
            chat.message_received(content=f"q{n}")
            chat.model_responded(content=f"a{n}")
    runner.catch_up()
    stored = runner.storage.get(CONVERSATION, "usr_a", "s")
    assert stored is not None
    assert projector.load(stored.head).state.open_calls == {waiting.run_id: {"slow": [0, 7]}}
    with waiting.turn():  # one batch
        waiting.tool_returned(call_id="slow", name="approve", output="refund ok")
        waiting.tool_returned(call_id="slow", name="approve", output="refill ok")
    for projected in (False, True):  # read before the projector passes, and after
        if projected:
            runner.catch_up()
        messages = t.conversation("s").messages
        assert (messages[0]["output"], messages[7]["output"]) == ("refund ok", "refill ok")
    stored = runner.storage.get(CONVERSATION, "usr_a", "s")
    assert stored is not None and projector.load(stored.head).state.open_calls == {}


def test_no_read_returns_another_tenants_data(led: ledger.Ledger) -> None:
    a, b = led.tenant("usr_a"), led.tenant("usr_b")
    run = scripted_run(a, session="shared_name")
    scripted_run(b, session="other")
    ProjectorRunner(led, default_projectors()).catch_up()
    with pytest.raises(NotFound):
        b.conversation("shared_name")
    with pytest.raises(NotFound):
        b.run_metadata(run.run_id)
    assert {m.user_id for m in b.runs()} == {"usr_b"}
    assert all(m.run_id != run.run_id for m in b.memories())
    assert b.conversation("other").user_id == "usr_b"


def test_after_a_turn_returns_the_conversation_includes_it(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    runner = ProjectorRunner(led, default_projectors())
    for n in range(3):
        with run.turn():
            run.message_received(content=f"q{n}")
            run.model_responded(content=f"a{n}")
        assert t.conversation("s").messages[-1]["content"] == f"a{n}"
        if n == 1:
            runner.catch_up()  # projected or not, the read is the same


def _a_call_then_a_chat(led: ledger.Ledger) -> tuple[ledger.Tenant, ledger.Run, ledger.Run]:
    """Session "s" of usr_a: a run that called a tool and waits for its result, and a
    second run to chat in meanwhile."""
    t = led.tenant("usr_a")
    waiting = t.start_run(session_id="s")
    waiting.tool_called(call_id="slow", name="approve", input={"what": "refund"})
    return t, waiting, t.start_run(session_id="s")


def test_a_long_session_is_stored_in_pages_and_reads_back_whole(led: ledger.Ledger) -> None:
    """A long session's conversation is stored as a head plus pages of its oldest
    messages, so a batch writes what is new rather than the whole history; it reads
    back whole, also when a tool's result comes long after its call (its entry is in a
    page by then), before and after the projector passes it, and after a rebuild."""
    t, waiting, chat = _a_call_then_a_chat(led)
    projector = next(p for p in default_projectors() if p.name == CONVERSATION)
    runner = ProjectorRunner(led, [projector], batch_size=7)
    for n in range(100):
        with chat.turn():
            chat.message_received(content=f"q{n}")
            chat.model_responded(content=f"a{n}")
        if n % 10 == 0:
            runner.catch_up()
    runner.catch_up()
    stored = runner.storage.get(CONVERSATION, "usr_a", "s")
    assert stored is not None
    head = projector.load(stored.head).state
    size = projector.page_items
    assert len(stored.pages) >= 2 and head.offset == size * len(stored.pages)
    assert len(head.messages) < 2 * size  # the head stays small, whatever the session's length
    assert head.open_calls == {waiting.run_id: {"slow": [0]}}  # in page 0

    waiting.tool_returned(call_id="slow", name="approve", output="yes", duration_ms=5)

    def expected() -> Any:
        events = [e for r in (waiting, chat) for e in t.events(r.run_id)]
        events.sort(key=lambda e: e.position)
        return ConversationState.from_state(ConversationReducer().fold(events))

    assert t.conversation("s") == expected()  # read before the projector passes it
    assert t.conversation("s").messages[0]["output"] == "yes"
    runner.catch_up()
    assert t.conversation("s") == expected()
    again = runner.storage.get(CONVERSATION, "usr_a", "s")
    assert again is not None and again.pages[0] != stored.pages[0]  # the page written again
    runner.rebuild(projector)
    assert t.conversation("s") == expected()
    assert len(t.conversation("s").messages) == 201


def test_the_last_messages_of_a_long_session_read_back_as_the_whole_ones(
    led: ledger.Ledger,
) -> None:
    """``t.conversation(s, last=N)`` reads only the pages holding the last N messages:
    it must equal the whole conversation cut to its last N, whether the projector is
    caught up or not, and when an event to fold changes a message before those pages."""
    t, waiting, chat = _a_call_then_a_chat(led)
    projector = next(p for p in default_projectors() if p.name == CONVERSATION)
    runner = ProjectorRunner(led, [projector], batch_size=9)

    def check() -> None:
        whole = t.conversation("s").model_dump()
        for n in (0, 1, 2, 63, 64, 65, 127, 128, 129, 150, 1000):
            cut = t.conversation("s", last=n).model_dump()
            assert cut == {
                **whole,
                "messages": whole["messages"][
                    len(whole["messages"]) - min(n, len(whole["messages"])) :
                ],
            }, n

    for n in range(100):
        with chat.turn():
            chat.message_received(content=f"q{n}")
            chat.model_responded(content=f"a{n}")
    runner.catch_up()
    stored = runner.storage.get(CONVERSATION, "usr_a", "s")
    assert stored is not None and len(stored.pages) >= 2
    check()
    for n in range(100, 110):  # not projected yet: folded onto the pages read
        with chat.turn():
            chat.message_received(content=f"q{n}")
            chat.model_responded(content=f"a{n}")
    check()
    # a result for the call in page 0, not projected: the whole document is read again
    waiting.tool_returned(call_id="slow", name="approve", output="yes", duration_ms=5)
    check()
    assert t.conversation("s", last=3).run_metadata.tool_calls == 1
    runner.catch_up()
    check()
    for bad in (-1, True, 1.5):
        with pytest.raises(ledger.InvalidEvent, match="last must be a whole number"):
            t.conversation("s", last=bad)  # type: ignore[arg-type]


#: A message stored by hand after a run's end (its chain is not the point here).
_AFTER_THE_END = {
    "postgres": "INSERT INTO ledger_events (user_id, run_id, session_id, type, schema,"
    " occurred_at, payload, version, prev_hash, hash) SELECT user_id, run_id, session_id,"
    " 'message_received', 1, occurred_at, %s, version + 1, hash, sha256(hash)"
    " FROM ledger_events WHERE run_id = %s ORDER BY version DESC LIMIT 1",
    "sqlite": "INSERT INTO ledger_events (user_id, run_id, session_id, type, schema,"
    " occurred_at, recorded_at, payload, version, position, tx_id, prev_hash, hash)"
    " SELECT user_id, run_id, session_id, 'message_received', 1, occurred_at, recorded_at,"
    " ?, version + 1, (SELECT max(position) + 1 FROM ledger_events),"
    " (SELECT max(position) + 1 FROM ledger_events), hash, randomblob(32)"
    " FROM ledger_events WHERE run_id = ? ORDER BY version DESC LIMIT 1",
}


def _insert_after_the_end(url: str, run_id: str) -> None:
    payload = b'{"role":"user","content":"after"}'
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute(_AFTER_THE_END["sqlite"], (payload, run_id))
        conn.commit()
        conn.close()
    else:
        with raw_connection(url, autocommit=True) as pg:
            pg.execute(_AFTER_THE_END["postgres"], (payload, run_id))


def test_runs_that_ended_leave_the_documents_and_still_read_back(
    led: ledger.Ledger, store_url: str
) -> None:
    """A session (and a user) of many runs, one per user message as agents often do:
    a document names only the runs still open (those that ended are covered by its
    place in the log), so its size does not grow with the runs; reads before and after
    the projector, and a row stored after a run's end, still give the fold of the log."""
    t = led.tenant("usr_a")
    runner = ProjectorRunner(led, default_projectors(), batch_size=13)
    ended = []
    for n in range(40):
        run = t.start_run(session_id="s")
        with run.turn():
            run.message_received(content=f"q{n}")
            run.model_responded(content=f"a{n}", usage={"input_tokens": 3, "output_tokens": 1})
        run.memory_written(namespace="n", key=f"k{n % 3}", value=n)
        run.complete()
        ended.append(run)
        if n % 9 == 0:
            runner.catch_up()
    still = t.start_run(session_id="s")
    still.message_received(content="open")
    runner.catch_up()
    conversation = runner.storage.get(CONVERSATION, "usr_a", "s")
    memory = runner.storage.get(MEMORY, "usr_a", "usr_a")
    projectors = {p.name: p for p in default_projectors()}
    assert conversation is not None and memory is not None
    assert set(projectors[CONVERSATION].load(*conversation).applied) == {still.run_id}
    assert set(projectors[MEMORY].load(*memory).applied) == {still.run_id}
    for r in ended:  # a run's own document keeps no entry once the run ended
        doc = runner.storage.get(RUN_METADATA, "usr_a", r.run_id)
        assert doc is not None and projectors[RUN_METADATA].load(*doc).applied == {}

    def expected() -> tuple[Any, Any]:
        events = sorted(
            (e for h in led.store.list_runs("usr_a") for e in t.events(h.run_id)),
            key=lambda e: e.position,
        )
        conversation = ConversationState.from_state(ConversationReducer().fold(events))
        memory = MemoryReducer().fold(events)
        assert memory is not None
        return conversation, sorted((m.key, m.value) for m in memory.current.values())

    def read() -> tuple[Any, Any]:
        return t.conversation("s"), sorted((m.key, m.value) for m in t.memories())

    assert read() == expected()
    # a run started and ended after the projector's pass, and a row stored after a
    # run's end (every store refuses it; the application role can INSERT one by hand)
    late = t.start_run(session_id="s")
    late.message_received(content="late")
    late.complete()
    if store_url != "memory://":
        _insert_after_the_end(store_url, ended[0].run_id)
    assert read() == expected()
    if store_url != "memory://":
        assert [m["content"] for m in t.conversation("s").messages].count("after") == 1
    runner.catch_up()
    assert read() == expected()
    runner.rebuild_all()
    assert read() == expected()


def test_a_read_of_the_last_pages_that_must_read_all_starts_again_from_the_new_document(
    led: ledger.Ledger,
) -> None:
    """A read of the last pages whose unseen events change an earlier message reads the
    whole document again, in a new snapshot, which may be newer: there the projector may
    have folded those events, and the run's end, since. What it lacks is worked out
    again from it (folding the first snapshot's unseen events onto it would double)."""
    t, waiting, chat = _a_call_then_a_chat(led)
    projector = next(p for p in default_projectors() if p.name == CONVERSATION)
    runner = ProjectorRunner(led, [projector])
    for n in range(100):
        with chat.turn():
            chat.message_received(content=f"q{n}")
            chat.model_responded(content=f"a{n}")
    runner.catch_up()
    stale = runner.storage.get(CONVERSATION, "usr_a", "s", 1)
    assert stale is not None and stale.first > 0
    waiting.tool_returned(call_id="slow", name="approve", output="yes", duration_ms=5)
    waiting.complete()
    runner.catch_up()  # the whole document now holds both, and names the run no more
    runs = led.store.list_runs("usr_a", "s")
    read = current(led, projector, "usr_a", "s", runs, stale)
    whole = t.conversation("s")
    assert read.doc is not None
    assert reveal(ConversationState.from_state(read.doc.state), "usr_a", led.keyring) == whole
    assert whole.messages[0]["output"] == "yes" and len(whole.messages) == 201


# -- the property -----------------------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "msg",
                "model",
                "call",
                "return",
                "error",
                "retry",
                "step",
                "remember",
                "forget",
                "complete",
            ]
        ),
        st.integers(0, 2),  # which run
        st.integers(0, 3),  # a small argument
    ),
    min_size=1,
    max_size=40,
)

#: Actions that make long conversations whose tool results come after their calls have
#: been paged out (with tiny pages), and runs that end.
PAGING_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["msg", "msg", "model", "call", "call", "return", "return", "complete"]),
        st.integers(0, 2),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=60,
)


def play(led: ledger.Ledger, actions: list[tuple[str, int, int]]) -> None:
    t = led.tenant("usr_p")
    runs = [t.start_run(session_id=f"s{i % 2}", model="gpt-4o") for i in range(3)]
    open_calls: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for n, (kind, which, arg) in enumerate(actions):
        run = runs[which]
        if run.ended:  # as an agent goes on: in a new run of the same session
            run = runs[which] = t.start_run(session_id=f"s{which % 2}", model="gpt-4o")
        if kind == "msg":
            run.message_received(content=f"m{n}", role="user" if arg else "system")
        elif kind == "model":
            run.model_responded(
                model=["gpt-4o", "mystery"][arg % 2],
                content=f"r{n}",
                usage={"input_tokens": arg * 10, "output_tokens": arg},
                latency_ms=arg * 5,
            )
        elif kind == "call":
            # Some agents reuse ids ("call_0" in every parallel batch): c0 and c1 may be
            # open more than once at a time.
            call = f"c{arg}" if arg < 2 else f"c{n}"
            open_calls[which].append(call)
            run.tool_called(call_id=call, name=f"tool{arg}", input={"n": n})
        elif kind in ("return", "error"):
            waiting = open_calls[which]  # answered in any order
            call = waiting.pop(arg % len(waiting)) if waiting else f"orphan{n}"
            if kind == "return":
                run.tool_returned(call_id=call, name="tool", output=[n], duration_ms=arg)
            else:
                run.tool_returned(call_id=call, name="tool", error="boom", duration_ms=arg)
        elif kind == "retry":
            run.retry_attempted(what="tool", attempt=arg + 1, delay_ms=arg)
        elif kind == "step":
            run.step_completed(step=f"step{arg}", index=n)
        elif kind == "remember":
            run.memory_written(namespace="ns", key=f"k{arg}", value={"n": n})
        elif kind == "forget":
            run.memory_forgotten(namespace="ns", key=f"k{arg}")
        else:
            run.complete(output=n)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, data=st.data())
def test_the_read_model_after_k_events_is_the_fold_of_the_first_k(
    actions: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    with ledger.connect("memory://") as led:
        play(led, actions)
        log = led.store.read_log(ledger.records.START, 10_000)
        k = data.draw(st.integers(0, len(log)), label="k")
        runner = ProjectorRunner(led, default_projectors(), batch_size=1)
        for _ in range(k):
            runner.step()
        events = [ledger.tenant.to_event(r) for r in log[:k]]
        for projector in default_projectors():
            reducer = projector.reducer
            keys = {("usr_p", reducer.key(e)) for e in events if reducer.key(e) is not None}
            stored = {
                (u, key): projector.load(*d).state
                for u, key, d in runner.storage.scan(projector.name, None)
            }
            assert set(stored) == keys
            for user, key in keys:
                expected = reducer.fold([e for e in events if reducer.key(e) == key])
                assert stored[(user, key)] == expected, (projector.name, key)


def _runs_of(led: ledger.Ledger, name: str, key: str) -> list[ledger.records.RunHead]:
    """The runs whose events a document ``key`` of read model ``name`` folds."""
    if name == CONVERSATION:
        return led.store.list_runs("usr_p", key)
    if name == RUN_METADATA:
        head = led.store.run_head("usr_p", key)
        return [] if head is None else [head]
    return led.store.list_runs("usr_p")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=PAGING_ACTIONS, data=st.data())
def test_reads_of_paged_documents_behind_the_log_are_the_fold_of_the_whole_log(
    actions: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    """With pages of one or two items (so nearly everything is paged, handed back, and
    runs leave the documents as they end), a projector stopped anywhere in the log in
    batches of any size, and the read of a document (whole, or its last page only)
    folding what the projector has not reached: the fold of the whole log."""
    with ledger.connect("memory://") as led:
        play(led, actions)
        log = led.store.read_log(ledger.records.START, 10_000)
        size = data.draw(st.integers(1, 2), label="page_items")
        projectors = [
            Projector(p.name, p.version, p.reducer, page_items=size) for p in default_projectors()
        ]
        batch = data.draw(st.integers(1, 7), label="batch")
        runner = ProjectorRunner(led, projectors, batch_size=batch)
        for _ in range(data.draw(st.integers(0, len(log)), label="steps")):
            runner.step()
        events = [ledger.tenant.to_event(r) for r in log]
        for projector in projectors:
            reducer = projector.reducer
            for key in {k for e in events if (k := reducer.key(e)) is not None}:
                expected = reducer.fold([e for e in events if reducer.key(e) == key])
                runs = _runs_of(led, projector.name, key)
                whole = runner.storage.get(projector.name, "usr_p", key)
                read = current(led, projector, "usr_p", key, runs, whole)
                assert read.doc is not None and read.doc.state == expected, projector.name
                tail = runner.storage.get(projector.name, "usr_p", key, 1)
                part = current(led, projector, "usr_p", key, runs, tail)
                assert part.doc is not None
                held = reducer.items(part.doc.state)
                assert held == reducer.items(expected)[len(reducer.items(expected)) - len(held) :]


@settings(max_examples=40, deadline=None)
@given(actions=ACTIONS, split=st.integers(0, 60))
def test_folding_in_two_chunks_equals_one_fold_and_apply_is_pure(
    actions: list[tuple[str, int, int]], split: int
) -> None:
    with ledger.connect("memory://") as led:
        play(led, actions)
        events = [
            ledger.tenant.to_event(r) for r in led.store.read_log(ledger.records.START, 10_000)
        ]
    for reducer in (ConversationReducer(), RunMetadataReducer(), MemoryReducer()):
        mine = [e for e in events if reducer.key(e) == reducer.key(events[0])]
        cut = min(split, len(mine))
        whole = reducer.fold(mine)
        first = reducer.fold(mine[:cut])
        assert reducer.fold(mine[cut:], first) == whole
        if first is not None and cut < len(mine):
            before = reducer.encode(first)
            reducer.apply(first, mine[cut])
            assert reducer.encode(first) == before  # apply never touches its input
        if whole is not None:
            assert reducer.decode(reducer.encode(whole)) == whole
