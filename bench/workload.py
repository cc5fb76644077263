"""The agent turn every benchmark writes: five events, about 2.5 KB of JSON.

Same shape as ``tests/writers.turn`` (user message, model response with a tool call,
tool call, tool result, final response), kept here so the benchmarks import nothing
from ``tests``. ``turn_events`` is the data; ``api_turn`` writes it through the public
API; ``encoded_turn`` gives the exact payload bytes our store holds, for the floors.
"""

from __future__ import annotations

from typing import Any

import ledger
from ledger.events import CATALOG, encode_payload

EVENTS_PER_TURN = 5


def turn_events(n: int) -> list[tuple[str, dict[str, Any]]]:
    """The five (type, fields) of turn ``n``, as the agent would pass them."""
    call = f"c{n}"
    return [
        ("message_received", {"content": f"user question {n} " + "q" * 300, "role": "user"}),
        (
            "model_responded",
            {
                "model": "gpt-4o",
                "tool_calls": [{"id": call, "name": "search", "arguments": {"q": "x" * 200}}],
                "usage": {"input_tokens": 1200, "output_tokens": 40},
                "latency_ms": 800,
            },
        ),
        ("tool_called", {"call_id": call, "name": "search", "input": {"q": "x" * 200}}),
        (
            "tool_returned",
            {
                "call_id": call,
                "name": "search",
                "output": {"hits": ["h" * 400]},
                "duration_ms": 120,
            },
        ),
        (
            "model_responded",
            {
                "model": "gpt-4o",
                "content": "final answer " + "a" * 500,
                "usage": {"input_tokens": 1400, "output_tokens": 200},
            },
        ),
    ]


def api_turn(run: ledger.Run, n: int) -> None:
    """Write turn ``n`` through the public API: one ``run.turn()``, five event calls."""
    with run.turn():
        for type_, fields in turn_events(n):
            getattr(run, type_)(**fields)


def encoded_turn(n: int) -> list[tuple[str, bytes]]:
    """(type, payload bytes) of turn ``n``: exactly what our store would hold."""
    return [(t, encode_payload(CATALOG.validate(t, f))) for t, f in turn_events(n)]


def turn_bytes(n: int = 0) -> int:
    """Payload bytes of one turn (for the report)."""
    return sum(len(p) for _, p in encoded_turn(n))
