"""The event catalog: validation at the boundary and upcasting of old schemas."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest

import ledger
from ledger.errors import InvalidEvent
from ledger.events import CATALOG, Catalog, Payload, StepCompleted, encode_payload


class StepCompletedV2(Payload, frozen=True):
    """Schema 2: ``step`` renamed to ``name`` and a ``duration_ms`` field added."""

    SCHEMA: ClassVar[int] = 2
    name: str
    index: int
    duration_ms: float | None = None


def test_events_written_under_an_old_schema_still_read() -> None:
    with ledger.connect("memory://") as led:
        t = led.tenant("usr_a")
        run = t.start_run(session_id="s")
        run.step_completed(step="plan", index=1)  # written under schema 1
        CATALOG.register("step_completed", StepCompletedV2)
        CATALOG.upcaster("step_completed", from_schema=1)(
            lambda data: {"name": data["step"], "index": data["index"]}
        )
        try:
            old = t.events(run.run_id)[1]
            assert old.schema == 1
            assert old.data == {"name": "plan", "index": 1, "duration_ms": None}
        finally:
            CATALOG.register("step_completed", StepCompleted)


def test_a_missing_upcaster_is_a_clear_error() -> None:
    catalog = Catalog({"step_completed": StepCompletedV2})
    stored = encode_payload(StepCompleted(step="plan", index=1))
    with pytest.raises(InvalidEvent, match="no upcaster from schema 1 to 2"):
        catalog.decode("step_completed", 1, stored)


def test_upcasters_chain_one_step_at_a_time() -> None:
    class V3(Payload, frozen=True):
        SCHEMA: ClassVar[int] = 3
        title: str
        index: int

    catalog = Catalog({"step_completed": V3})
    catalog.upcaster("step_completed", 1)(lambda d: {"name": d["step"], "index": d["index"]})
    catalog.upcaster("step_completed", 2)(lambda d: {"title": d["name"], "index": d["index"]})
    decoded = catalog.decode("step_completed", 1, msgspec.json.encode({"step": "p", "index": 4}))
    assert decoded == V3(title="p", index=4)


def test_every_catalog_type_round_trips() -> None:
    samples: dict[str, dict[str, Any]] = {
        "run_started": {"agent": "a", "model": "m", "parent_run_id": "r", "parent_version": 3},
        "message_received": {"content": "c", "role": "system", "attachments": [{"u": 1}]},
        "model_responded": {
            "model": "m",
            "content": "c",
            "tool_calls": [{"id": "1", "name": "n", "arguments": {"a": 1}}],
            "usage": {
                "input_tokens": 1,
                "output_tokens": 2,
                "cache_read_input_tokens": 3,
                "reasoning_tokens": 4,
            },
            "latency_ms": 1.5,
            "finish_reason": "stop",
            "request_id": "req",
        },
        "tool_called": {"call_id": "1", "name": "n", "input": [1, "2"]},
        "tool_returned": {"call_id": "1", "name": "n", "error": "timeout", "duration_ms": 3},
        "retry_attempted": {"what": "tool", "attempt": 2, "error": "e", "delay_ms": 10},
        "step_completed": {"step": "s", "index": 0},
        "memory_written": {"namespace": "n", "key": "k", "value": {"v": 1}, "source_run": "r"},
        "memory_forgotten": {"namespace": "n", "key": "k"},
        "run_completed": {"output": "done"},
        "run_failed": {"error": "boom"},
        "user_erased": {"key_ids": ["k_1"], "reason": "ticket 42"},
    }
    assert set(samples) == set(CATALOG.names)
    for name, data in samples.items():
        payload = CATALOG.validate(name, data)
        assert CATALOG.decode(name, 1, encode_payload(payload)) == payload


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_data_must_be_an_object(data: Any) -> None:
    with pytest.raises(InvalidEvent, match="data must be a JSON object"):
        CATALOG.validate("run_completed", data)


@pytest.mark.parametrize(
    ("schema", "payload", "reason"),
    [
        (0, b'{"content": "x"}', "no upcaster from schema 0"),
        (1, b"[1, 2]", "Expected `object`"),
        (1, b"{not json", "malformed"),
    ],
)
def test_a_stored_event_that_cannot_be_read_is_named_by_run_and_version(
    schema: int, payload: bytes, reason: str
) -> None:
    """Whatever a reader (a projector, replay, ``ledger events``) trips over, the error
    says which stored event it is, so an operator can find it (``ledger verify`` too)."""
    from datetime import UTC, datetime

    from ledger.records import Record
    from ledger.tenant import to_event

    now = datetime.now(UTC)
    record = Record(
        "usr_a", "s", "run_x", 7, 70, 1, "message_received", schema, now, now, payload, b"", b""
    )
    with pytest.raises(
        InvalidEvent,
        match=rf"stored event 7 of run 'run_x' cannot be read as 'message_received': .*{reason}",
    ):
        to_event(record)
