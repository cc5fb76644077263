"""A sample agent run for ``ledger demo``: a weather assistant answering from recorded
model and tool responses (no model provider is called)."""

from __future__ import annotations

import ledger

USER = "usr_demo"
SESSION = "sess_demo"

#: What the model and the tool answered when this run was first recorded.
RECORDED = {
    "first_response": {
        "content": "",
        "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Lisbon"}}],
        "usage": {"input_tokens": 412, "output_tokens": 23},
        "latency_ms": 640.0,
        "finish_reason": "tool_calls",
    },
    "tool_output": {"city": "Lisbon", "temp_c": 19, "sky": "clear"},
    "final_response": {
        "content": "It is 19 °C and clear in Lisbon — a good evening for a walk. 🌤️",
        "usage": {"input_tokens": 468, "output_tokens": 21},
        "latency_ms": 512.0,
        "finish_reason": "stop",
    },
}


def record_demo_run(led: ledger.Ledger) -> str:
    """Record one two-turn agent run and return its run_id."""
    t = led.tenant(USER)
    run = t.start_run(session_id=SESSION, agent="weather-assistant", model="gpt-4o")
    with run.turn():
        run.message_received(content="What's the weather in Lisbon tonight?", role="user")
        run.retry_attempted(what="model", attempt=2, error="429 rate limited", delay_ms=250)
        run.model_responded(model="gpt-4o", **RECORDED["first_response"])  # type: ignore[arg-type]
        run.tool_called(call_id="call_1", name="get_weather", input={"city": "Lisbon"})
        run.tool_returned(
            call_id="call_1", name="get_weather", output=RECORDED["tool_output"], duration_ms=87.0
        )
        run.model_responded(model="gpt-4o", **RECORDED["final_response"])  # type: ignore[arg-type]
    run.step_completed(step="answer", index=1)
    run.memory_written(namespace="prefs", key="home_city", value="Lisbon")
    run.complete(output=RECORDED["final_response"]["content"])
    return run.run_id
