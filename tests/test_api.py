"""The backend test suite: the embedded API of CONTRACT.md against memory, SQLite and Postgres."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
import pytest

import ledger
from ledger import ConcurrencyError, InvalidEvent, NotFound
from ledger.chain import GENESIS, Unsealed, seal
from ledger.events import CATALOG, encode_payload
from ledger.records import START, RunAppend
from ledger.storable import MAX_DEPTH
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner

#: The farthest time zones there are: +14:00 (Kiribati) and -14:00.
EAST, WEST = timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))


@pytest.fixture
def led(store_url: str) -> ledger.Ledger:
    with ledger.connect(store_url) as connection:
        yield connection


def record_turn(run: ledger.Run, n: int = 1) -> None:
    with run.turn():
        run.message_received(content=f"question {n}")
        run.model_responded(
            model="gpt-4o",
            tool_calls=[{"id": f"c{n}", "name": "search", "arguments": {"q": n}}],
            usage={"input_tokens": 100, "output_tokens": 10},
            latency_ms=800,
        )
        run.tool_called(call_id=f"c{n}", name="search", input={"q": n})
        run.tool_returned(call_id=f"c{n}", name="search", output={"hits": [n]}, duration_ms=12)
        run.model_responded(model="gpt-4o", content=f"answer {n}")


def test_a_run_records_its_events_in_order(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="sess_1", agent="bot", model="gpt-4o", metadata={"k": [1]})
    record_turn(run)
    run.complete(output={"ok": True})
    events = t.events(run.run_id)
    assert [e.type for e in events] == [
        "run_started",
        "message_received",
        "model_responded",
        "tool_called",
        "tool_returned",
        "model_responded",
        "run_completed",
    ]
    assert [e.version for e in events] == list(range(1, 8))
    assert run.version == 7
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 7
    assert events[0].data["metadata"] == {"k": [1]}
    assert events[2].data["tool_calls"][0] == {"id": "c1", "name": "search", "arguments": {"q": 1}}
    assert events[-1].data == {"output": {"ok": True}}
    assert all(e.user_id == "usr_a" and e.session_id == "sess_1" for e in events)
    assert events[1].prev_hash == events[0].hash


def test_a_turn_that_raises_writes_nothing(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    with pytest.raises(RuntimeError), run.turn():
        run.message_received(content="hi")
        run.model_responded(content="partial")
        raise RuntimeError("agent crashed mid-turn")
    assert [e.type for e in t.events(run.run_id)] == ["run_started"]
    record_turn(run)  # the handle is still usable at the right version
    assert len(t.events(run.run_id)) == 6


def test_an_invalid_event_inside_a_turn_writes_nothing(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    with pytest.raises(InvalidEvent, match="input_tokens"), run.turn():
        run.message_received(content="hi")
        run.model_responded(usage={"input_tokens": "many"})
    assert len(t.events(run.run_id)) == 1


def test_a_stale_writer_gets_concurrency_error_and_writes_nothing(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    other = t.run(run.run_id)
    record_turn(run)
    before = t.events(run.run_id)
    with pytest.raises(ConcurrencyError, match=r"is at version 6, not 1: .*run\.refresh\(\)"):
        record_turn(other, 2)
    with pytest.raises(ConcurrencyError):
        other.step_completed(step="plan", index=1)
    assert t.events(run.run_id) == before
    other.refresh().step_completed(step="plan", index=1)
    assert t.events(run.run_id)[-1].version == 7


@pytest.mark.parametrize("end", ["complete", "fail"])
def test_an_ended_run_takes_no_more_events(led: ledger.Ledger, end: str) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    assert not run.ended
    record_turn(run)
    getattr(run, end)(**({"error": "boom"} if end == "fail" else {}))
    ending = {"complete": "run_completed", "fail": "run_failed"}[end]
    assert run.ended and t.run(run.run_id).ended
    before = t.events(run.run_id)
    calls = [
        lambda h: h.message_received(content="more"),
        lambda h: h.complete(),
        lambda h: h.fail(error="again"),
        lambda h: record_turn(h, 2),
    ]
    for handle in (run, t.run(run.run_id)):  # this handle, and one resumed elsewhere
        for call in calls:
            with pytest.raises(
                ledger.RunEnded,
                match=rf"run '{run.run_id}' has ended \({ending} at version 7\), .*nothing "
                r"was written.*start a new run in session 's'",
            ):
                call(handle)
    assert t.events(run.run_id) == before and run.version == 7
    assert isinstance(ledger.RunEnded("x"), InvalidEvent)  # bad input: exit 2 in the CLI
    record_turn(t.start_run(session_id="s"))  # the session goes on in a new run


def test_a_turn_that_ends_its_run_takes_nothing_after_the_end(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    ending = pytest.raises(ledger.RunEnded, match=r"\(run_completed earlier in this turn\)")
    with ending, run.turn():
        run.message_received(content="last words")
        run.complete(output="done")
        run.message_received(content="after the end")
    assert [e.type for e in t.events(run.run_id)] == ["run_started"]
    assert not run.ended and run.version == 1  # the turn never happened
    with run.turn():
        run.message_received(content="last words")
        run.complete(output="done")
    assert run.ended and run.version == 3


def test_a_handle_that_missed_the_end_learns_it_on_refresh(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    elsewhere = t.run(run.run_id)
    run.fail(error="timeout")
    assert not elsewhere.ended  # as of the head it saw: the store's head check decides
    with pytest.raises(ConcurrencyError):
        elsewhere.complete()
    assert elsewhere.refresh().ended
    with pytest.raises(ledger.RunEnded, match=r"\(run_failed at version 2\)"):
        elsewhere.complete()
    assert [e.type for e in t.events(run.run_id)] == ["run_started", "run_failed"]


def test_starting_an_existing_run_id_is_a_conflict(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    t.start_run(session_id="s", run_id="run_fixed")
    with pytest.raises(ConcurrencyError, match=r"run 'run_fixed' already exists$"):
        t.start_run(session_id="s", run_id="run_fixed")


def test_another_tenants_run_is_not_found_and_untouchable(led: ledger.Ledger) -> None:
    a, b = led.tenant("usr_a"), led.tenant("usr_b")
    run = a.start_run(session_id="s", run_id="run_shared_name")
    record_turn(run)
    with pytest.raises(NotFound) as missing_other:
        b.events(run.run_id)
    with pytest.raises(NotFound) as missing_none:
        b.events("run_that_never_was")
    assert str(missing_other.value).replace(run.run_id, "X") == str(missing_none.value).replace(
        "run_that_never_was", "X"
    )
    with pytest.raises(NotFound):
        b.run(run.run_id)
    with pytest.raises(ledger.RunIdTaken):
        b.start_run(session_id="s", run_id="run_shared_name")
    assert b.summaries() == []
    assert [r.run_id for r in a.summaries()] == ["run_shared_name"]
    assert len(a.events(run.run_id)) == 6


def test_a_range_of_events_takes_versions_only(led: ledger.Ledger) -> None:
    """``t.events`` bounds: a version range past the head reads to the head; a bound
    that is not a version is one InvalidEvent on every store (a str compared as text
    on SQLite and raised TypeError on memory, a huge one overflowed SQLite)."""
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    record_turn(run)
    versions = [e.version for e in t.events(run.run_id, after_version=2, upto_version=2**70)]
    assert versions == [3, 4, 5, 6]
    assert t.events(run.run_id, after_version=2**70) == []
    for bad in ({"after_version": "1"}, {"upto_version": "1"}, {"after_version": -1}):
        with pytest.raises(InvalidEvent, match=f"{next(iter(bad))} must be a whole number"):
            t.events(run.run_id, **bad)  # type: ignore[arg-type]


def test_resume_continues_at_the_head(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    record_turn(run)
    resumed = t.run(run.run_id)
    assert (resumed.version, resumed.session_id) == (6, "s")
    record_turn(resumed, 2)
    assert [e.version for e in t.events(run.run_id)] == list(range(1, 12))
    assert led.auditor().verify().ok


def test_summaries_list_a_tenants_runs_by_session(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    r1 = t.start_run(session_id="s1")
    r2 = t.start_run(session_id="s2")
    record_turn(r2)
    assert [r.run_id for r in t.summaries()] == [r1.run_id, r2.run_id]
    assert [(r.run_id, r.version) for r in t.summaries("s2")] == [(r2.run_id, 6)]


NASTY = '\U0001f9e0 astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, NUL \x00 inside, quotes " \\ and 中文'


def test_unicode_nul_and_large_contents_round_trip_exactly(led: ledger.Ledger) -> None:
    t = led.tenant("usr_ü😀")
    run = t.start_run(session_id="sess_é")
    big = ("x" * 1023 + "\x00") * 1024  # 1 MiB with NULs
    with run.turn():
        run.message_received(content=NASTY)
        run.tool_returned(call_id="c", name="read", output={"blob": big, NASTY: [NASTY]})
    events = t.events(run.run_id)
    assert events[1].data["content"] == NASTY
    assert events[2].data["output"] == {"blob": big, NASTY: [NASTY]}
    assert led.auditor().verify().ok


def test_values_read_back_as_json_writes_them(led: ledger.Ledger) -> None:
    """What is stored reads back equal, in JSON's terms: the standard library's ``json``
    writes tuples as lists and number keys as strings, and so does the ledger; floats
    at the edges and huge integers are kept exactly."""
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s", metadata={"ratio": 1e308, "neg": -0.0})
    value = {"pair": (1, 2), 3: "three", "big": 2**70, "tiny": 5e-324, "none": None}
    run.tool_called(call_id="c", name="n", input=value)
    started, called = t.events(run.run_id)
    assert started.data["metadata"] == {"ratio": 1e308, "neg": -0.0}
    assert str(started.data["metadata"]["neg"]) == "-0.0"
    assert called.data["input"] == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "must not be empty"),
        ("  ", "must not be empty"),
        ("u" * 201, "is 201 characters; the limit is 200"),
        ("a\x00b", "must not contain control characters"),
        ("a\nb", "must not contain control characters"),
        ("a\ud800", "must be valid Unicode"),
        (5, "must be a string, got int"),
    ],
)
def test_bad_ids_are_refused_by_name(led: ledger.Ledger, bad: object, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=f"user_id {reason}"):
        led.tenant(bad).start_run(session_id="s")  # type: ignore[arg-type]
    t = led.tenant("usr_a")
    with pytest.raises(InvalidEvent, match=f"session_id {reason}"):
        t.start_run(session_id=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match=f"run_id {reason}"):
        t.start_run(session_id="s", run_id=bad)  # type: ignore[arg-type]
    assert led.auditor().runs() == []
    assert t.start_run(session_id="sess_é🧠").session_id == "sess_é🧠"  # not ASCII, fine


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        ({}, {"max_event_bytes": 0}, "max_event_bytes must be > 0, got 0"),
        ({}, {"max_event_bytes": "10"}, "max_event_bytes must be a whole number of bytes"),
        ({"LEDGER_MAX_EVENT_BYTES": "abc"}, {}, r"\$LEDGER_MAX_EVENT_BYTES must be a whole"),
        ({"LEDGER_MAX_EVENT_BYTES": "-1"}, {}, r"\$LEDGER_MAX_EVENT_BYTES must be > 0, got -1"),
        ({"LEDGER_ENCRYPT": "maybe"}, {}, r"\$LEDGER_ENCRYPT must be 1 or 0 .* got 'maybe'"),
    ],
)
def test_a_setting_no_one_can_use_is_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, object], message: str
) -> None:
    """Not a traceback from int(), and not a silent fallback (0 bytes used to mean the
    default; 'maybe' meant off)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ledger.InvalidSetting, match=message):
        ledger.connect("memory://", **kwargs)  # type: ignore[arg-type]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_MAX_EVENT_BYTES", "1_000")
    monkeypatch.setenv("LEDGER_ENCRYPT", " Yes ")
    with ledger.connect("memory://") as led:
        assert led.settings.max_event_bytes == 1000 and led.encrypting
    monkeypatch.setenv("LEDGER_ENCRYPT", "off")
    with ledger.connect("memory://", max_event_bytes=5) as led:  # arguments win
        assert led.settings.max_event_bytes == 5 and not led.encrypting


def test_oversized_payloads_are_refused_with_the_limit_named(store_url: str) -> None:
    with ledger.connect(store_url, max_event_bytes=1_000_000) as led:
        t = led.tenant("usr_a")
        run = t.start_run(session_id="s")
        with pytest.raises(InvalidEvent, match=r"over the limit of 1,000,000"):
            run.message_received(content="y" * 1_000_001)
        assert len(t.events(run.run_id)) == 1


def _nested(depth: int) -> list[object]:
    """A list nested ``depth`` deep."""
    outer: list[object] = []
    inner = outer
    for _ in range(depth):
        child: list[object] = []
        inner.append(child)
        inner = child
    return outer


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda r: r.message_received(content=5), "Expected `str`"),
        (lambda r: r.message_received(content="x", role="robot"), "role"),
        (lambda r: r.retry_attempted(what="model", attempt="two"), "attempt"),
        (lambda r: r.tool_called(call_id="c", name=None), "name"),
        (
            lambda r: r.step_completed(step="s", index=1, occurred_at=datetime(2025, 1, 1)),
            "timezone",
        ),
        # A time with no UTC equivalent a datetime can hold (one day past either end).
        (
            lambda r: r.step_completed(
                step="s", index=1, occurred_at=datetime(1, 1, 1, tzinfo=EAST)
            ),
            r"step_completed\.occurred_at: 0001-01-01T00:00:00\+14:00 falls outside",
        ),
        (
            lambda r: r.message_received(
                content="x", occurred_at=datetime(9999, 12, 31, 23, tzinfo=WEST)
            ),
            r"message_received\.occurred_at: 9999-12-31T23:00:00-14:00 falls outside",
        ),
        (
            lambda r: r.complete(occurred_at="2025-01-01T00:00:00Z"),  # type: ignore[arg-type]
            r"run_completed\.occurred_at: must be a timezone-aware datetime, got str",
        ),
        # Not storable as JSON: named, with what to send instead (not a raw encoder error).
        (lambda r: r.message_received(content="bad \ud800"), r"content: .*lone surrogates"),
        (
            lambda r: r.tool_called(call_id="c", name="n", input={"q": [1, "x\udfff"]}),
            r"tool_called\.input\.q\[1\]: cannot be stored as JSON",
        ),
        (
            lambda r: r.tool_returned(call_id="c", name="n", output={"when": object()}),
            r"tool_returned\.output\.when: cannot be stored as JSON",
        ),
        # Storable, but not exactly: they would read back as something else (NaN as
        # null, bytes as base64 text, a datetime as a string), so they are refused too.
        *(
            (
                lambda r, v=value: r.tool_called(call_id="c", name="n", input={"q": [1, v]}),
                rf"tool_called\.input\.q\[1\]: {name} is not a JSON",
            )
            for name, value in [
                ("nan", float("nan")),
                ("inf", float("inf")),
                ("-inf", float("-inf")),
                ("bytes", b"\x00"),
                ("datetime", datetime(2025, 1, 1, tzinfo=UTC)),
                ("UUID", UUID(int=1)),
                ("Decimal", Decimal("1.10")),
                ("set", {1}),
            ]
        ),
        (
            lambda r: r.tool_returned(call_id="c", name="n", duration_ms=float("nan")),
            r"tool_returned\.duration_ms: nan is not a JSON number",
        ),
        (
            lambda r: r.model_responded(
                tool_calls=[{"id": "c", "name": "n", "arguments": {"at": {"d": date(2025, 1, 1)}}}]
            ),
            r"model_responded\.tool_calls\[0?\]\.arguments\.at\.d: date is not a JSON value",
        ),
        (
            lambda r: r.memory_written(namespace="n", key="k", value={"t": timedelta(1)}),
            r"memory_written\.value\.t: timedelta .* as a number of seconds",
        ),
        (lambda r: r.complete(output=frozenset()), r"run_completed\.output: frozenset"),
        # Values no agent can have meant: the read models would lie with them.
        (
            lambda r: r.model_responded(usage={"input_tokens": 5, "output_tokens": -1}),
            r"model_responded\.usage\.output_tokens: must not be negative \(got -1\)",
        ),
        (
            lambda r: r.model_responded(usage={"reasoning_tokens": -2}),
            r"model_responded\.usage\.reasoning_tokens: must not be negative",
        ),
        (lambda r: r.model_responded(latency_ms=-800), r"model_responded\.latency_ms: .*negative"),
        (
            lambda r: r.model_responded(
                tool_calls=[{"id": "c1", "name": "n"}, {"id": " ", "name": "n"}]
            ),
            r"model_responded\.tool_calls\[1\]\.id: must not be empty",
        ),
        (lambda r: r.tool_called(call_id="", name="n"), r"tool_called\.call_id: must not be empty"),
        (lambda r: r.tool_called(call_id="c", name="\t"), r"tool_called\.name: must not be empty"),
        (
            lambda r: r.tool_returned(call_id="c", name="n", duration_ms=-0.5),
            r"tool_returned\.duration_ms: must not be negative \(got -0\.5\)",
        ),
        (lambda r: r.tool_returned(call_id="", name="n"), r"tool_returned\.call_id: .*empty"),
        (
            lambda r: r.retry_attempted(what="tool", attempt=-1),
            r"retry_attempted\.attempt: .*negat",
        ),
        (
            lambda r: r.retry_attempted(what="tool", attempt=1, delay_ms=-5),
            r"retry_attempted\.delay_ms: must not be negative",
        ),
        (lambda r: r.step_completed(step="", index=1), r"step_completed\.step: must not be empty"),
        (lambda r: r.step_completed(step="s", index=-1), r"step_completed\.index: .*negative"),
        (lambda r: r.memory_written(namespace="", key="k", value=1), r"memory_written\.namespace"),
        (lambda r: r.memory_forgotten(namespace="n", key=""), r"memory_forgotten\.key: .*empty"),
        (
            lambda r: r.tool_called(call_id="c", name="n", input={"n": [1, 10**5000]}),
            r"tool_called\.input\.n\[1\]: cannot be stored as JSON \(Exceeds the limit",
        ),
        (lambda r: r.tool_called(call_id="c", name="n", input=_nested(100_000)), "too deeply"),
        (
            lambda r: r.tool_called(call_id="c", name="n", input=_nested(MAX_DEPTH)),
            rf"tool_called(\.input)?: nests more than {MAX_DEPTH} levels",
        ),
    ],
)
def test_bad_event_fields_are_named(led: ledger.Ledger, call: object, match: str) -> None:
    run = led.tenant("usr_a").start_run(session_id="s")
    with pytest.raises(InvalidEvent, match=match):
        call(run)  # type: ignore[operator]
    assert run.version == 1


def test_events_stored_before_a_write_rule_still_read(led: ledger.Ledger) -> None:
    """The catalog's write-time rules (no negative durations, no empty call ids) are not
    read-time rules: a payload stored before one existed reads and folds as stored."""
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s", model="gpt-4o")
    legacy = [  # converted to their Structs as an older release did, without the rules
        ("model_responded", {"model": "gpt-4o", "usage": {"input_tokens": -3}, "latency_ms": -1}),
        ("tool_called", {"call_id": "", "name": "search"}),
        ("tool_returned", {"call_id": "", "name": "search", "duration_ms": -2.0}),
    ]
    head = led.store.run_head("usr_a", run.run_id)
    assert head is not None
    now = datetime.now(UTC)
    events = [
        Unsealed(type_, 1, now, encode_payload(msgspec.convert(data, CATALOG.payload_type(type_))))
        for type_, data in legacy
    ]
    sealed = seal("usr_a", "s", run.run_id, head.version, head.hash, events)
    led.store.append(
        [RunAppend("usr_a", "s", run.run_id, head.version, head.hash, sealed)], returning=False
    )
    assert [e.data.get("call_id") for e in t.events(run.run_id)[1:]] == [None, "", ""]
    ProjectorRunner(led, default_projectors()).catch_up()
    meta = t.run_metadata(run.run_id)
    assert (meta.version, meta.input_tokens) == (4, -3)  # folded as stored, not skipped
    assert led.auditor().verify().ok


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "line\nbreak", "x" * 201])
def test_bad_identifiers_are_refused(led: ledger.Ledger, bad: str) -> None:
    with pytest.raises(InvalidEvent):
        led.tenant(bad)
    with pytest.raises(InvalidEvent):
        led.tenant("usr_a").start_run(session_id=bad)


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, 14, tzinfo=EAST),  # 0001-01-01T00:00:00Z, the first there is
        datetime(9999, 12, 31, 9, 59, 59, 999999, tzinfo=WEST),  # the last
    ],
)
def test_the_ends_of_time_are_stored_as_given(led: ledger.Ledger, when: datetime) -> None:
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s", occurred_at=when)
    run.message_received(content="x", occurred_at=when)
    assert [e.occurred_at for e in t.events(run.run_id)] == [when, when]
    assert t.replay(run.run_id).version == 2


def test_occurred_at_is_kept_to_the_microsecond(led: ledger.Ledger) -> None:
    t = led.tenant("usr_a")
    when = datetime(2025, 3, 15, 10, 22, 31, 123456, tzinfo=timezone_plus_two())
    run = t.start_run(session_id="s", occurred_at=when)
    event = t.events(run.run_id)[0]
    assert event.occurred_at == when
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.recorded_at.tzinfo is not None


def timezone_plus_two() -> object:
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_verify_passes_on_an_untouched_store(led: ledger.Ledger) -> None:
    for user in ("usr_a", "usr_b"):
        run = led.tenant(user).start_run(session_id="s")
        record_turn(run)
    report = led.auditor().verify()
    assert (report.ok, report.runs, report.events) == (True, 2, 12)
    assert led.auditor().verify(user_id="usr_a").runs == 1
    with pytest.raises(NotFound, match="user 'usr_typo' not found"):
        led.auditor().verify(user_id="usr_typo")  # not "0 runs: ok", a clean audit of nothing


def test_a_run_cannot_be_started_without_events_so_verify_sees_no_emptied_one(
    led: ledger.Ledger,
) -> None:
    """A store append that would start a run with no events is refused, nothing written:
    a run is registered only together with its first events (verify reports a
    registered run without events as one whose events were deleted)."""
    taken = led.tenant("usr_a").start_run(session_id="s").run_id
    for returning in (True, False):
        with pytest.raises(InvalidEvent, match=r"must hold its first event.*nothing written"):
            led.store.append(
                [RunAppend("usr_a", "s", "run_x", 0, GENESIS, ())], returning=returning
            )
    started = [Unsealed("run_started", 1, datetime.now(UTC), b"{}")]
    run_z = RunAppend(
        "usr_a", "s", "run_z", 0, GENESIS, seal("usr_a", "s", "run_z", 0, GENESIS, started)
    )
    with pytest.raises(InvalidEvent, match="'run_y'"):  # all or nothing: run_z not started
        led.store.append([run_z, RunAppend("usr_a", "s", "run_y", 0, GENESIS, ())])
    assert [h.run_id for h in led.store.list_runs()] == [taken]
    report = led.auditor().verify()
    assert (report.ok, report.runs, report.problems) == (True, 1, [])


def test_audit_scan_streams_every_row_by_user_run_and_version(led: ledger.Ledger) -> None:
    """What verify reads: every event beside its run's registration, in check order."""
    runs = {}
    for user in ("usr_b", "usr_a"):
        runs[user] = led.tenant(user).start_run(session_id=f"sess_{user}")
        record_turn(runs[user])
    rows = list(led.store.audit_scan())
    assert [(r.user_id, r.run_id, r.record.version) for r in rows if r.record] == [
        (user, runs[user].run_id, v) for user in ("usr_a", "usr_b") for v in range(1, 7)
    ]
    assert {(r.registered_user, r.registered_session) for r in rows if r.user_id == "usr_a"} == {
        ("usr_a", "sess_usr_a")
    }
    only = list(led.store.audit_scan("usr_b", runs["usr_b"].run_id))
    assert len(only) == 6 and {r.run_id for r in only} == {runs["usr_b"].run_id}
    assert list(led.store.audit_scan(run_id="run_nobody")) == []
    seen: list[tuple[int, int]] = []
    assert led.auditor().verify(progress=lambda done, total: seen.append((done, total))).ok
    assert seen == [(6, 12), (12, 12)]


def test_recorded_at_comes_from_the_store(led: ledger.Ledger) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    run = led.tenant("usr_a").start_run(
        session_id="s", occurred_at=datetime(2001, 1, 1, tzinfo=UTC)
    )
    event = led.tenant("usr_a").events(run.run_id)[0]
    assert event.recorded_at >= before


def test_lag_counts_what_lies_after_a_cursor(led: ledger.Ledger) -> None:
    from ledger.records import START

    empty = led.store.lag(START)
    assert (empty.head, empty.pending, empty.oldest_pending_at) == (None, 0, None)
    run = led.tenant("usr_a").start_run(session_id="s")
    record_turn(run)
    led.store.settle()  # a transaction elsewhere on the server must not hold the horizon
    records = led.store.read_log(START, 100)
    everything = led.store.lag(START)
    assert (everything.head, everything.pending) == (records[-1].cursor, 6)
    assert everything.oldest_pending_at == records[0].recorded_at
    assert led.store.lag(records[2].cursor).pending == 3
    assert led.store.lag(records[-1].cursor).pending == 0


def test_the_deepest_value_allowed_is_readable_everywhere(led: ledger.Ledger) -> None:
    """What is stored must stay readable: an event no reader could get past would stall
    every projector. The deepest value the API accepts goes through events, the three
    read models (and a projector runner), replay and verify."""
    deep = _nested(MAX_DEPTH - 1)  # MAX_DEPTH levels of lists
    t = led.tenant("usr_a")
    run = t.start_run(session_id="deep")
    with run.turn():
        run.tool_called(call_id="c", name="n", input=deep)
        run.tool_returned(call_id="c", name="n", output=deep)
        run.memory_written(namespace="n", key="k", value=deep)
    assert t.events(run.run_id)[-1].data["value"] == deep
    ProjectorRunner(led, default_projectors()).catch_up()
    assert t.conversation("deep").messages
    assert t.run_metadata(run.run_id).tool_calls == 1
    assert [m.value for m in t.memories()] == [deep]
    assert t.replay(run.run_id).version == run.version
    assert led.auditor().verify().ok


def test_a_run_head_says_where_its_last_event_is_in_the_log(led: ledger.Ledger) -> None:
    """Readers of a read model tell from it whether everything of a run is folded."""
    t = led.tenant("usr_a")
    just_started = led.store.run_head("usr_a", t.start_run(session_id="s", run_id="run_e").run_id)
    run = t.start_run(session_id="s")
    with run.turn():
        run.message_received(content="hi")
        run.model_responded(content="hello")
    last = led.store.read_log(START, 1000)[-1]
    head = led.store.run_head("usr_a", run.run_id)
    assert head is not None and head.cursor == last.cursor and head.version == 3
    assert just_started is not None and just_started.cursor is not None  # its run_started
    listed = {h.run_id: h.cursor for h in led.store.list_runs("usr_a", "s")}
    assert listed[run.run_id] == last.cursor and listed[just_started.run_id] == just_started.cursor


@pytest.mark.parametrize("returning", [True, False])
def test_every_store_refuses_to_append_to_a_run_that_ended(
    led: ledger.Ledger, returning: bool
) -> None:
    """Not only the API: an append stating the right head of a run that ended (another
    client of the store, of the ``ledger_append`` function on Postgres) is refused."""
    t = led.tenant("usr_a")
    run = t.start_run(session_id="s")
    run.message_received(content="hi")
    run.complete()
    head = led.store.run_head("usr_a", run.run_id)
    assert head is not None and head.type == "run_completed"
    now = datetime.now(UTC)
    late = [Unsealed("message_received", 1, now, b'{"role":"user","content":"late"}')]
    sealed = seal("usr_a", "s", run.run_id, head.version, head.hash, late)
    append = RunAppend("usr_a", "s", run.run_id, head.version, head.hash, sealed)
    with pytest.raises(ledger.RunEnded, match="run_completed at version 3"):
        led.store.append([append], returning=returning)
    assert led.store.run_head("usr_a", run.run_id) == head  # nothing written
    # appending nothing to it is no append at all
    assert (
        led.store.append([RunAppend("usr_a", "s", run.run_id, head.version, head.hash, ())]) == []
    )


@pytest.mark.parametrize(
    ("read", "field"),
    [
        (lambda t: t.conversation(123), "session_id"),
        (lambda t: t.conversation(None), "session_id"),
        (lambda t: t.run_metadata(5), "run_id"),
        (lambda t: t.runs(5), "session_id"),
        (lambda t: t.summaries(b"s"), "session_id"),
        (lambda t: t.memories(7), "namespace"),
        (lambda t: t.events(5), "run_id"),
    ],
)
def test_reads_name_an_id_of_the_wrong_type(store_url: str, read: Any, field: str) -> None:
    """Not a database error on Postgres, nor a match of every run on SQLite."""
    with ledger.connect(store_url) as led:
        t = led.tenant("usr_a")
        t.start_run(session_id="s").message_received(content="hi")
        with pytest.raises(ledger.InvalidEvent, match=field):
            read(t)


def test_the_contracts_example_runs_as_written(led: ledger.Ledger) -> None:
    """CONTRACT.md's Python API, every call with the keywords it shows, and what each
    gives back; its errors, and their one base."""
    t = led.tenant("usr_xyz")
    run = t.start_run(session_id="sess_abc123", run_id=None, agent=None, model="gpt-4o",
                      metadata=None)  # fmt: skip
    assert run.run_id and run.version == 1
    with run.turn():
        run.message_received(content="hi", role="user")
        run.model_responded(model="gpt-4o", content="",
                            tool_calls=[{"id": "call_1", "name": "search",
                                         "arguments": {"q": "x"}}],
                            usage={"input_tokens": 1200, "output_tokens": 40},
                            latency_ms=800)  # fmt: skip
        run.tool_called(call_id="call_1", name="search", input={"q": "x"})
        run.tool_returned(call_id="call_1", name="search", output={"hits": []}, duration_ms=120)
    run.retry_attempted(what="model", attempt=2, error="429", delay_ms=500)
    run.step_completed(step="plan", index=1)
    run.memory_written(namespace="prefs", key="tone", value="brief")
    run.memory_forgotten(namespace="prefs", key="tone")
    run.complete(output=None)
    failed = t.start_run(session_id="sess_abc123")
    failed.tool_called(call_id="call_2", name="search", input={})
    failed.tool_returned(call_id="call_2", name="search", error="timeout")
    failed.fail(error="gave up")

    assert t.run(run.run_id).version == run.version == 10
    events = t.events(run.run_id)
    assert [e.version for e in events] == list(range(1, 11))
    for e in events:
        assert isinstance(e.type, str) and isinstance(e.position, int)
        assert isinstance(e.occurred_at, datetime) and isinstance(e.recorded_at, datetime)
        assert isinstance(e.data, dict) and isinstance(e.hash, str)
    assert [m.run_id for m in t.runs(session_id=None)] == [run.run_id, failed.run_id]
    assert t.run_metadata(run.run_id).status == "completed"
    conversation = t.conversation("sess_abc123")
    assert conversation.run_metadata.tool_calls == 2 and conversation.run_metadata.retries == 1
    assert conversation.messages[-1]["error"] == "timeout"
    assert t.memories(namespace=None) == []
    assert t.replay(run.run_id, at=None).status == "completed"
    assert t.replay(failed.run_id, at=2).pending_tool_calls[0].call_id == "call_2"
    assert t.replay(run.run_id, at=events[1].recorded_at).version == 5  # the whole turn
    assert led.auditor().verify().ok

    for error in (ledger.ConcurrencyError, ledger.NotFound, ledger.InvalidEvent,
                  ledger.IntegrityError):  # fmt: skip
        assert issubclass(error, ledger.LedgerError)
    with pytest.raises(ledger.NotFound):
        led.tenant("usr_other").replay(run.run_id)
