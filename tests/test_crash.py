"""Invariant 2 under crashes: kill -9 of a writer mid-turn never leaves a partial turn."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest

import ledger
from tests.writers import turn, turns_until_killed

CTX = multiprocessing.get_context("spawn")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the writer never reached the point to kill it at"
        time.sleep(0.01)


def assert_whole_turns(led: ledger.Ledger, run_id: str) -> int:
    events = led.tenant("usr_crash").events(run_id)
    versions = [e.version for e in events]
    assert versions == list(range(1, len(versions) + 1))
    assert (len(versions) - 1) % 5 == 0, f"partial turn visible: {len(versions)} events"
    for start in range(1, len(events), 5):
        assert [e.type for e in events[start : start + 5]] == [
            "message_received",
            "model_responded",
            "tool_called",
            "tool_returned",
            "model_responded",
        ]
    assert led.auditor().verify(run_id=run_id).ok
    return len(versions)


def test_kill_9_while_a_turn_is_written_but_not_committed(url: str, tmp_path: Path) -> None:
    with ledger.connect(url) as led:
        run = led.tenant("usr_crash").start_run(session_id="s")
        marker = tmp_path / "holding"
        child = CTX.Process(target=turns_until_killed, args=(url, run.run_id, 3, str(marker)))
        child.start()
        wait_for(marker)
        # The third turn's rows are in the database, uncommitted; nothing of it is visible.
        assert assert_whole_turns(led, run.run_id) == 11
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL
        assert assert_whole_turns(led, run.run_id) == 11
        resumed = led.tenant("usr_crash").run(run.run_id)
        assert resumed.version == 11
        turn(resumed, 99)  # the dead writer's versions are free again
        assert assert_whole_turns(led, run.run_id) == 16


@pytest.mark.slow
def test_kill_9_at_random_instants(url: str, tmp_path: Path) -> None:
    rng = random.Random(7)
    with ledger.connect(url) as led:
        run = led.tenant("usr_crash").start_run(session_id="s")
        total = 1
        for attempt in range(6):
            marker = tmp_path / f"never-{attempt}"
            child = CTX.Process(target=turns_until_killed, args=(url, run.run_id, 0, str(marker)))
            child.start()
            time.sleep(rng.uniform(1.0, 1.6))  # interpreter start-up, then turns in flight
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
            now = assert_whole_turns(led, run.run_id)
            assert now >= total
            total = now
        assert total > 1, "the writer never committed a turn; the test proved nothing"
