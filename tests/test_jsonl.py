"""JSONL appends (CONTRACT.md): validate everything, then write everything or nothing."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import ledger
from ledger import ConcurrencyError, InvalidEvent
from ledger.jsonl import append_jsonl


@pytest.fixture
def led(store_url: str) -> ledger.Ledger:
    with ledger.connect(store_url) as connection:
        yield connection


def _deep(levels: int = 200) -> list[object]:
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def line(
    run_id: str = "run_1",
    type_: str = "message_received",
    user: str = "usr_a",
    data: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    return json.dumps(
        {
            "user_id": user,
            "session_id": "sess_1",
            "run_id": run_id,
            "type": type_,
            "occurred_at": "2025-03-15T10:22:31Z",
            "data": {"role": "user", "content": "hi"} if data is None else data,
            **extra,
        }
    )


def append(led: ledger.Ledger, lines: list[str]) -> Any:
    return append_jsonl(led.store, lines, led.settings.max_event_bytes)


def assert_nothing_stored(led: ledger.Ledger) -> None:
    assert led.auditor().runs() == []


def test_a_valid_file_is_appended_across_runs(led: ledger.Ledger) -> None:
    summary = append(
        led,
        [
            line("run_1", "run_started", data={"agent": "bot", "model": "gpt-4o"}),
            line("run_1"),
            "",
            line("run_2", data={"content": "implicitly started"}),
            line("run_1", "run_completed", data={}),
        ],
    )
    assert (summary.events, summary.runs) == (4, {"run_1": 3, "run_2": 1})
    t = led.tenant("usr_a")
    assert [e.type for e in t.events("run_1")] == [
        "run_started",
        "message_received",
        "run_completed",
    ]
    assert t.events("run_2")[0].data["content"] == "implicitly started"
    assert led.auditor().verify().ok


def test_appending_to_an_existing_run_continues_its_chain(led: ledger.Ledger) -> None:
    append(led, [line()])
    append(led, [line(expected_version=1), line()])
    assert [e.version for e in led.tenant("usr_a").events("run_1")] == [1, 2, 3]
    assert led.auditor().verify().ok


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"user_id": "usr_a", "session_id": ', "line 2: malformed JSON"),
        ('["not", "an", "object"]', "line 2: expected a JSON object"),
        (line(type_="model_thought"), "line 2: unknown event type 'model_thought'"),
        (line(data={"role": "user"}), "line 2: message_received: Object missing required field"),
        (line(data={"content": ["not", "text"]}), r"line 2: .*Expected `str`, got `array`"),
        (line(data={"content": "x", "colour": "red"}), "unknown field `colour`"),
        (
            json.dumps(
                {
                    "user_id": "usr_a",
                    "run_id": "r",
                    "type": "run_completed",
                    "occurred_at": "2025-03-15T10:22:31Z",
                    "data": {},
                }
            ),
            "line 2: session_id: Field required",
        ),
        (line(occurred_at_override=True), "line 2: occurred_at_override: Extra inputs"),
        (line(run_id="bad\x00id"), "line 2: run_id must not contain control characters"),
        (line().replace("2025-03-15T10:22:31Z", "2025-03-15T10:22:31"), "timezone"),
        (line().replace("2025-03-15T10:22:31Z", "yesterday"), "line 2: occurred_at"),
        (
            line().replace("2025-03-15T10:22:31Z", "0001-01-01T00:00:00+14:00"),
            r"line 2: message_received\.occurred_at: 0001-01-01T00:00:00\+14:00 falls outside",
        ),
        (
            line().replace("2025-03-15T10:22:31Z", "9999-12-31T23:59:59-14:00"),
            r"line 2: message_received\.occurred_at: 9999-12-31T23:59:59-14:00 falls outside",
        ),
        (line(expected_version="three"), "line 2: expected_version"),
        (line(expected_version="1"), "line 2: expected_version: Input should be a valid int"),
        (line(expected_version=-1), "line 2: expected_version: .* greater than or equal to 0"),
        # What JSON parsers disagree on: read as neither.
        (
            line().replace('"user_id": "usr_a"', '"user_id": "usr_a", "user_id": "usr_b"'),
            "line 2: key 'user_id' appears twice in one object",
        ),
        (
            line(data={"content": "a", "role": "user"}).replace(
                '"role": "user"', '"role": "user", "content": "b"'
            ),
            "line 2: key 'content' appears twice",
        ),
        (
            line("run_2", "tool_called", data={"call_id": "c", "name": "n", "input": math.nan}),
            "line 2: NaN is not JSON",
        ),
        (
            line("run_2", "tool_called", data={"call_id": "c", "name": "n", "input": -math.inf}),
            "line 2: -Infinity is not JSON",
        ),
        (
            line("run_2", "tool_called", data={"call_id": "c", "name": "n", "input": 1}).replace(
                '"input": 1', '"input": 1e400'
            ),
            r"line 2: tool_called\.input: inf is not a JSON number",
        ),
        (
            line("run_2", "tool_called", data={"call_id": "c", "name": "n", "input": 1}).replace(
                '"input": 1', '"input": ' + "9" * 5000
            ),
            "line 2: a number of more than 4,300 digits; write it as a string",
        ),
        # A lone surrogate escape parses (to a str no encoder writes): named, not a crash.
        (
            line(data={"content": "a\ud800b"}),
            r"line 2: message_received\.content: not valid Unicode",
        ),
        (line(user="usr_\udc00"), r"line 2: user_id must be valid Unicode"),
        # The record of an erasure is the ledger's own: never one an agent wrote.
        (
            line("run_2", "user_erased", data={"key_ids": ["k_1"]}),
            "line 2: type: user_erased is recorded by the ledger itself",
        ),
        # What every reader could not walk back (and a projector could not get past).
        (
            line("run_2", "tool_called", data={"call_id": "c", "name": "n", "input": _deep()}),
            "line 2: tool_called: nests more than 128 levels",
        ),
        (
            line("run_2", "tool_called", data={"call_id": "c", "name": "\x00ledger-sealed/x"}),
            "line 2: tool_called.name: must not start with the ledger's seal marker",
        ),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_written(
    led: ledger.Ledger, bad: str, message: str
) -> None:
    with pytest.raises(InvalidEvent, match=message):
        append(led, [line("run_ok"), bad, line("run_other")])
    assert_nothing_stored(led)


def test_a_payload_over_the_limit_is_refused(led: ledger.Ledger) -> None:
    huge = line(data={"content": "z" * (50 * 1024 * 1024)})
    with pytest.raises(InvalidEvent, match=r"line 2: .*over the limit of 8,388,608"):
        append(led, [line("run_ok"), huge])
    assert_nothing_stored(led)


def test_another_tenants_run_id_is_refused(led: ledger.Ledger) -> None:
    append(led, [line("run_owned", user="usr_a")])
    with pytest.raises(InvalidEvent, match="line 2: run_id 'run_owned' is not available"):
        append(led, [line("run_new", user="usr_b"), line("run_owned", user="usr_b")])
    assert [r.run_id for r in led.auditor().runs()] == ["run_owned"]
    assert len(led.tenant("usr_a").events("run_owned")) == 1


def test_a_run_cannot_change_tenant_or_session_mid_file(led: ledger.Ledger) -> None:
    with pytest.raises(InvalidEvent, match="line 2: run 'run_1' was given user_id"):
        append(led, [line(), line(user="usr_b")])
    assert_nothing_stored(led)


def test_a_stale_expected_version_writes_nothing(led: ledger.Ledger) -> None:
    append(led, [line("run_1"), line("run_1")])
    with pytest.raises(ConcurrencyError, match="line 2: run 'run_1' is at version 2"):
        append(led, [line("run_2"), line("run_1", expected_version=1)])
    assert [r.run_id for r in led.auditor().runs()] == ["run_1"]


def test_nothing_follows_the_end_of_a_run_in_one_input(led: ledger.Ledger) -> None:
    ended = [line("run_1"), line("run_1", "run_failed", data={"error": "x"})]
    with pytest.raises(
        ledger.RunEnded, match=r"line 4: run 'run_1' ended on line 3 \(run_failed\)"
    ):
        append(led, [line("run_2"), *ended, line("run_1")])
    assert_nothing_stored(led)


def test_a_stored_run_that_ended_takes_no_more_lines(led: ledger.Ledger) -> None:
    append(led, [line("run_1"), line("run_1", "run_completed", data={})])
    with pytest.raises(
        ledger.RunEnded,
        match=r"line 2: run 'run_1' has ended \(run_completed at version 2\).*a new run_id",
    ):
        append(led, [line("run_2"), line("run_1", expected_version=2), line("run_1")])
    assert [r.run_id for r in led.auditor().runs()] == ["run_1"]
    assert len(led.tenant("usr_a").events("run_1")) == 2


def test_a_run_started_naming_a_parent_forks_a_stored_run_of_the_same_user(
    led: ledger.Ledger,
) -> None:
    append(led, [line("run_theirs", user="usr_b"), line("run_mine")])
    fork = {"parent_run_id": "run_theirs", "parent_version": 1}
    with pytest.raises(ledger.NotFound, match="line 2: run 'run_theirs' not found for user"):
        append(led, [line("run_x"), line("run_fork", "run_started", data=fork)])
    with pytest.raises(InvalidEvent, match=r"line 1: cannot fork run 'run_mine' at version 5"):
        append(
            led,
            [
                line(
                    "run_fork",
                    "run_started",
                    data={**fork, "parent_run_id": "run_mine", "parent_version": 5},
                )
            ],
        )
    assert sorted(r.run_id for r in led.auditor().runs()) == ["run_mine", "run_theirs"]
    append(led, [line("run_fork", "run_started", data={**fork, "parent_run_id": "run_mine"})])
    assert led.tenant("usr_a").replay("run_fork").parent_run_id == "run_mine"


def test_a_run_starts_once_with_its_first_event(led: ledger.Ledger) -> None:
    started = line("run_1", "run_started", data={"model": "gpt-4o"})
    with pytest.raises(InvalidEvent, match="line 3: run_started for run 'run_1', which line 2"):
        append(led, [line("run_2"), line("run_1"), started])
    assert_nothing_stored(led)
    append(led, [line("run_1")])
    for extra in ({}, {"expected_version": 1}):
        restart = line("run_1", "run_started", data={"model": "gpt-4o"}, **extra)
        with pytest.raises(InvalidEvent, match=r"line 1: .*already exists \(at version 1\)"):
            append(led, [restart])
    assert [e.type for e in led.tenant("usr_a").events("run_1")] == ["message_received"]


def test_unicode_and_nul_characters_round_trip(led: ledger.Ledger) -> None:
    content = "emoji 🧠, astral 𝔘, NUL \x00, newline \n, BOM \ufeff"
    append(led, [line(data={"content": content})])  # escaped: a surrogate pair for 🧠
    assert '"emoji \\ud83e\\udde0' in line(data={"content": content})
    assert led.tenant("usr_a").events("run_1")[0].data["content"] == content


def test_empty_input_is_an_error(led: ledger.Ledger) -> None:
    with pytest.raises(InvalidEvent, match="no events"):
        append(led, ["", "  "])


def test_the_size_limit_is_the_api_s_on_the_sealed_payload(store_url: str) -> None:
    """Sealing makes a payload larger: ``ledger append`` checks what is stored, as the
    API does, and says so in the API's words (after the line)."""
    content = "z" * 900  # ~900 bytes plain; sealed (base64, nonce, tag) ~1,300
    with ledger.connect(store_url, max_event_bytes=1_100, encrypt=True) as led:
        run = led.tenant("usr_a").start_run(session_id="sess_1", run_id="run_api")
        with pytest.raises(InvalidEvent) as by_api:
            run.message_received(content=content)
        with pytest.raises(InvalidEvent) as by_jsonl:
            append_jsonl(
                led.store,
                [line("run_ok"), line(data={"role": "user", "content": content})],
                led.settings.max_event_bytes,
                led.keyring,
            )
        assert str(by_jsonl.value) == f"line 2: {by_api.value}"
        assert "over the limit of 1,100" in str(by_api.value)
        assert [r.run_id for r in led.auditor().runs()] == ["run_api"]
