"""CONTRACT.md's CLI, line by line: every command with the options it shows, as
subprocesses on SQLite and Postgres, and the JSON keys scripts rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ledger
from tests.test_cli import ledger_cli
from tests.test_reducers import (
    CONVERSATION_KEYS,
    CONVERSATION_METADATA_KEYS,
    RUN_STATE_KEYS,
    RUN_STATE_METADATA_KEYS,
    check_messages,
)

#: CONTRACT.md's JSONL example line (plus a second run started explicitly).
CONTRACT_LINES = [
    {"user_id": "usr_xyz", "session_id": "sess_abc123", "run_id": "run_1",
     "type": "message_received", "occurred_at": "2025-03-15T10:22:31Z",
     "data": {"role": "user", "content": "..."}},
    {"user_id": "usr_xyz", "session_id": "sess_abc123", "run_id": "run_2",
     "type": "run_started", "occurred_at": "2025-03-15T10:22:31Z", "data": {"model": "gpt-4o"}},
]  # fmt: skip
#: What CONTRACT.md says ``t.events`` gives of each event.
EVENT_KEYS = {"type", "version", "position", "occurred_at", "recorded_at", "data", "hash"}
VERIFY_KEYS = {"ok", "runs", "events", "problems"}


def contract_run(url: str) -> str:
    """The run of CONTRACT.md's Python API example, recorded through that API."""
    with ledger.connect(url) as led:
        run = led.tenant("usr_xyz").start_run(session_id="sess_abc123", model="gpt-4o")
        with run.turn():
            run.message_received(content="hi", role="user")
            run.model_responded(
                model="gpt-4o",
                content="",
                tool_calls=[{"id": "call_1", "name": "search", "arguments": {"q": "x"}}],
                usage={"input_tokens": 1200, "output_tokens": 40},
                latency_ms=800,
            )
            run.tool_called(call_id="call_1", name="search", input={"q": "x"})
            run.tool_returned(call_id="call_1", name="search", output={"hits": []}, duration_ms=120)
        run.retry_attempted(what="model", attempt=2, error="429", delay_ms=500)
        run.step_completed(step="plan", index=1)
        run.memory_written(namespace="prefs", key="tone", value="brief")
        run.complete(output=None)
        return run.run_id


def json_of(url: str, *args: str) -> Any:
    """The ``--json`` output of ``ledger ARGS``, which must succeed."""
    result = ledger_cli(url, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_contract_command_takes_its_options_and_prints_the_contract_json(
    url: str, tmp_path: Path
) -> None:
    assert ledger_cli(url, "init").returncode == 0
    jsonl = "".join(json.dumps(line) + "\n" for line in CONTRACT_LINES)
    (tmp_path / "in.jsonl").write_text(jsonl)
    assert ledger_cli(url, "append", str(tmp_path / "in.jsonl")).returncode == 0
    conditional = {**CONTRACT_LINES[0], "expected_version": 1}
    assert ledger_cli(url, "append", "-", stdin=json.dumps(conditional)).returncode == 0
    assert ledger_cli(url, "append", "-", stdin=json.dumps(conditional)).returncode == 1
    run_id = contract_run(url)

    runs = json_of(url, "runs", "--user", "usr_xyz", "--session", "sess_abc123")
    assert {r["run_id"] for r in runs} == {"run_1", "run_2", run_id}
    for row in runs:
        assert {"run_id", "user_id", "session_id", "status", "model", "version"} <= set(row)
        assert CONVERSATION_METADATA_KEYS | {"input_tokens", "output_tokens", "cost_usd"} <= set(
            row
        )
    assert len(json_of(url, "runs")) == 3

    events = json_of(url, "events", run_id, "--user", "usr_xyz")
    assert [e["version"] for e in events] == list(range(1, 10))
    assert all(set(e) >= EVENT_KEYS and isinstance(e["data"], dict) for e in events)

    # A turn is recorded together: a time inside it replays to its end.
    points = {4: ["--at", "4"], 5: ["--at-time", events[3]["recorded_at"]], 9: []}
    for version, point in points.items():
        state = json_of(url, "replay", run_id, "--user", "usr_xyz", *point)
        assert set(state) == RUN_STATE_KEYS
        assert set(state["run_metadata"]) == RUN_STATE_METADATA_KEYS
        assert state["version"] == version
        check_messages(state["messages"])
    at_4 = json_of(url, "replay", run_id, "--user", "usr_xyz", "--at", "4")
    assert at_4["status"] == "running"
    assert at_4["pending_tool_calls"] == [
        {"call_id": "call_1", "name": "search", "input": {"q": "x"}}
    ]
    final = json_of(url, "replay", run_id, "--user", "usr_xyz")
    assert (final["status"], final["completed_steps"]) == (
        "completed",
        [{"step": "plan", "index": 1}],
    )

    conversation = json_of(url, "state", "sess_abc123", "--user", "usr_xyz")
    assert set(conversation) == CONVERSATION_KEYS
    assert set(conversation["run_metadata"]) == CONVERSATION_METADATA_KEYS
    check_messages(conversation["messages"])

    [memory] = json_of(url, "memory", "--user", "usr_xyz")
    assert (memory["namespace"], memory["key"], memory["value"], memory["run_id"]) == (
        "prefs", "tone", "brief", run_id)  # fmt: skip

    status = json_of(url, "projections", "status")
    assert {p["name"] for p in status} == {"conversation", "run_metadata", "memory"}
    assert all({"position", "lag_events", "lag_seconds"} <= set(p) for p in status)
    assert ledger_cli(url, "projections", "rebuild").returncode == 0
    assert ledger_cli(url, "projections", "rebuild", "conversation").returncode == 0

    report = json_of(url, "verify", "--user", "usr_xyz", "--run", run_id)
    assert set(report) == VERIFY_KEYS and (report["ok"], report["runs"]) == (True, 1)
    assert set(json_of(url, "verify")) == VERIFY_KEYS

    out = tmp_path / "export"
    assert (
        ledger_cli(url, "audit", "export", "--user", "usr_xyz", "--out", str(out)).returncode == 0
    )
    assert (out / "events.jsonl").is_file()


def test_the_url_defaults_to_ledger_url_then_the_sqlite_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_URL"}
    command = [sys.executable, "-m", "cli", "runs", "--json"]
    default = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert (default.returncode, default.stdout.strip()) == (0, "[]"), default.stderr
    assert (tmp_path / "ledger.db").is_file()
    other = tmp_path / "other.db"
    env["LEDGER_URL"] = f"sqlite:///{other}"
    from_env = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert from_env.returncode == 0 and other.is_file()


def test_forget_takes_the_user_and_exit_codes_are_the_contracts(url: str) -> None:
    run_id = contract_run(url)
    assert ledger_cli(url, "events", "run_nope", "--user", "usr_xyz").returncode == 1
    assert ledger_cli(url, "replay", run_id, "--user", "usr_other").returncode == 1
    assert ledger_cli(url, "replay", run_id, "--at", "x").returncode == 2
    assert ledger_cli(url, "state", "sess_abc123").returncode == 2  # --user is required
    with ledger.connect(url) as led:
        encrypted = led.encrypting
    # Content stored in the clear (SQLite's default) cannot be erased: said, exit 1.
    assert ledger_cli(url, "forget", "--user", "usr_xyz").returncode == (0 if encrypted else 1)
