"""Processes used by the concurrency and crash tests (importable, so 'spawn' works)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import ledger


def turn(run: ledger.Run, n: int) -> None:
    """The benchmark's agent turn: five events, about 2.5 KB of JSON."""
    with run.turn():
        run.message_received(content=f"user question {n} " + "q" * 300)
        run.model_responded(
            model="gpt-4o",
            tool_calls=[{"id": f"c{n}", "name": "search", "arguments": {"q": "x" * 200}}],
            usage={"input_tokens": 1200, "output_tokens": 40},
            latency_ms=800,
        )
        run.tool_called(call_id=f"c{n}", name="search", input={"q": "x" * 200})
        run.tool_returned(
            call_id=f"c{n}", name="search", output={"hits": ["h" * 400]}, duration_ms=120
        )
        run.model_responded(
            model="gpt-4o",
            content="final answer " + "a" * 500,
            usage={"input_tokens": 1400, "output_tokens": 200},
        )


def append_turns(url: str, writer: int, runs: int, turns: int, max_pause: float) -> int:
    """Append ``turns`` turns spread over ``runs`` runs; pause inside each transaction."""
    rng = random.Random(writer)
    with ledger.connect(url) as led:
        if max_pause:
            led.store.before_commit = lambda: time.sleep(rng.uniform(0, max_pause))
        t = led.tenant(f"usr_w{writer}")
        handles = [t.start_run(session_id=f"sess_{writer}") for _ in range(runs)]
        for n in range(turns):
            turn(handles[n % runs], n)
    return turns * 5 + runs


def turns_until_killed(url: str, run_id: str, hold_at: int, marker: str) -> None:
    """Append turns to ``run_id``; on turn ``hold_at`` signal ``marker`` and hang mid-commit."""
    with ledger.connect(url) as led:
        run = led.tenant("usr_crash").run(run_id)
        count = 0

        def hold() -> None:
            nonlocal count
            count += 1
            if count == hold_at:
                Path(marker).write_text(str(os.getpid()))
                time.sleep(600)

        led.store.before_commit = hold
        for n in range(10**9):
            turn(run, n)


def resume_and_finish(url: str, user_id: str, run_id: str) -> int:
    """Pick up an interrupted run in a fresh process: one more turn, then complete it."""
    with ledger.connect(url) as led:
        run = led.tenant(user_id).run(run_id)
        turn(run, run.version)
        run.complete(output="resumed elsewhere")
        return run.version
