"""The read side from the shell: state, memory, runs --sort, projections run/status/rebuild."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import ledger
from projections.catalog import projector_named
from projections.runner import ProjectorRunner
from projections.storage import storage_for
from projections.storage.base import BUILD_SUFFIX
from tests.pg import cut_connections
from tests.test_cli import ledger_cli
from tests.test_read_model_storage import behind_the_store
from tests.writers import turn


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def seed(url: str) -> dict[str, str]:
    with ledger.connect(url) as led:
        cheap = led.tenant("usr_a").start_run(session_id="sess_1", model="gpt-4o-mini")
        turn(cheap, 1)
        dear = led.tenant("usr_a").start_run(session_id="sess_2", model="gpt-4o")
        for n in range(3):
            turn(dear, n)
        dear.memory_written(namespace="prefs", key="tone", value="brief")
        other = led.tenant("usr_b").start_run(session_id="sess_1", model="gpt-4o")
        turn(other, 1)
        return {"cheap": cheap.run_id, "dear": dear.run_id, "other": other.run_id}


def test_runs_sorted_by_cost_tokens_and_wall_time(url: str) -> None:
    runs = seed(url)
    by_cost = json.loads(
        ledger_cli(url, "runs", "--user", "usr_a", "--sort", "cost", "--json").stdout
    )
    assert [r["run_id"] for r in by_cost] == [runs["dear"], runs["cheap"]]
    assert by_cost[0]["cost_usd"] > by_cost[1]["cost_usd"] > 0
    everyone = json.loads(
        ledger_cli(url, "runs", "--sort", "tokens", "--limit", "2", "--json").stdout
    )
    assert everyone[0]["run_id"] == runs["dear"] and len(everyone) == 2
    table = ledger_cli(url, "runs", "--user", "usr_a", "--sort", "wall_time")
    assert table.returncode == 0 and runs["dear"] in table.stdout and "$" in table.stdout


def test_state_and_memory(url: str) -> None:
    seed(url)
    state = json.loads(ledger_cli(url, "state", "sess_2", "--user", "usr_a", "--json").stdout)
    assert state["session_id"] == "sess_2" and len(state["messages"]) == 12
    last = ledger_cli(url, "state", "sess_2", "--user", "usr_a", "--last", "2", "--json")
    assert json.loads(last.stdout) == {**state, "messages": state["messages"][-2:]}
    shown = ledger_cli(url, "state", "sess_2", "--user", "usr_a", "--last", "2").stdout
    assert "the last 2 messages of the session" in shown
    one = ledger_cli(url, "state", "sess_2", "--user", "usr_a", "--last", "1").stdout
    assert "the last 1 message of the session" in one
    refused = ledger_cli(url, "state", "sess_2", "--user", "usr_a", "--last", "-1")
    assert refused.returncode == 2 and "--last" in refused.stderr
    assert ledger_cli(url, "state", "sess_2", "--user", "usr_b").returncode == 1
    memory = json.loads(ledger_cli(url, "memory", "--user", "usr_a", "--json").stdout)
    assert [(m["namespace"], m["key"], m["value"]) for m in memory] == [("prefs", "tone", "brief")]
    assert json.loads(ledger_cli(url, "memory", "--user", "usr_b", "--json").stdout) == []


def test_projections_status_rebuild_and_unknown_name(url: str) -> None:
    seed(url)
    before = json.loads(ledger_cli(url, "projections", "status", "--json").stdout)
    assert {p["name"] for p in before} == {"conversation", "run_metadata", "memory"}
    assert all(p["lag_events"] == 29 and p["generation"] is None for p in before)
    rebuilt = ledger_cli(url, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = json.loads(ledger_cli(url, "projections", "status", "--json").stdout)
    assert all(p["lag_events"] == 0 and p["position"] == p["head_position"] for p in after)
    unknown = ledger_cli(url, "projections", "rebuild", "sentiment")
    assert unknown.returncode == 2 and "no read model named 'sentiment'" in unknown.stderr


def test_a_rebuild_held_by_another_runner_is_refused_in_one_line(url: str) -> None:
    seed(url)
    with ledger.connect(url) as led:
        storage = storage_for(led.store)
        held = storage.begin_build("conversation" + BUILD_SUFFIX, 1, "elsewhere", 300)
        assert held is not None
        refused = ledger_cli(url, "projections", "rebuild", "conversation")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines() == [
            line for line in refused.stderr.strip().splitlines() if line.startswith("error: ")
        ]
        assert "'conversation' is being rebuilt by another runner" in refused.stderr
        assert storage.projector("conversation" + BUILD_SUFFIX) == held  # left alone
        storage.release(held.name, "elsewhere")  # given up: the next rebuild takes it over
    rebuilt = ledger_cli(url, "projections", "rebuild", "conversation")
    assert rebuilt.returncode == 0, rebuilt.stderr


def _corrupt(url: str, projection: str, user_id: str, key: str) -> None:
    """Overwrite a stored document with bytes that do not decode (as by hand)."""
    garbage = "X'7b6e6f74'" if url.startswith("sqlite:") else "'\\x7b6e6f74'::bytea"
    behind_the_store(
        url,
        f"UPDATE ledger_read_models SET doc = {garbage} WHERE projection = '{projection}' "
        f"AND user_id = '{user_id}' AND key = '{key}'",
    )


def test_a_corrupt_read_model_is_named_with_the_rebuild_that_mends_it(url: str) -> None:
    seed(url)
    assert ledger_cli(url, "projections", "rebuild").returncode == 0
    _corrupt(url, "conversation", "usr_a", "sess_2")
    broken = ledger_cli(url, "state", "sess_2", "--user", "usr_a")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    (line,) = broken.stderr.strip().splitlines()
    assert "read model 'conversation': document 'sess_2' of 'usr_a' is corrupt" in line
    assert line.endswith("rebuild it: ledger projections rebuild conversation")
    with ledger.connect(url) as led:
        with pytest.raises(ledger.ReadModelCorrupt, match="'sess_2'"):
            led.tenant("usr_a").conversation("sess_2")
        turn(led.tenant("usr_a").start_run(session_id="sess_2"), 9)
        with pytest.raises(ledger.ReadModelCorrupt, match="'sess_2'"):  # the projector too
            ProjectorRunner(led, [projector_named("conversation")]).catch_up()
    assert ledger_cli(url, "projections", "rebuild", "conversation").returncode == 0
    mended = ledger_cli(url, "state", "sess_2", "--user", "usr_a", "--json")
    assert mended.returncode == 0 and len(json.loads(mended.stdout)["messages"]) == 16


def test_a_top_run_listing_names_a_corrupt_document_it_only_peeks_at(url: str) -> None:
    # A sorted, limited listing decodes only the sort keys of most documents
    # (projections.read_side._peeked): bytes that do not decode are still named.
    runs = seed(url)
    assert ledger_cli(url, "projections", "rebuild").returncode == 0
    _corrupt(url, "run_metadata", "usr_a", runs["cheap"])  # not among the top one
    broken = ledger_cli(url, "runs", "--user", "usr_a", "--sort", "cost", "--limit", "1")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    (line,) = broken.stderr.strip().splitlines()
    assert f"read model 'run_metadata': document {runs['cheap']!r} of 'usr_a' is corrupt" in line
    assert line.endswith("rebuild it: ledger projections rebuild run_metadata")


_CLI = (sys.executable, "-m", "cli")


def projections_status(url: str) -> dict[str, dict[str, Any]]:
    """``ledger projections status --json``, by read model."""
    shown = json.loads(ledger_cli(url, "projections", "status", "--json").stdout)
    return {p["name"]: p for p in shown}


def run_until_caught_up(url: str, watched: str, *names: str) -> tuple[dict[str, Any], str]:
    """Run ``ledger projections run [NAMES]`` until read model ``watched`` is held and
    caught up, then stop it (SIGTERM, exit 0): the status then, and its stderr."""
    runner = subprocess.Popen(
        [*_CLI, "--url", url, "projections", "run", *names, "--poll", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            status = projections_status(url)
            if status[watched]["lag_events"] == 0 and status[watched]["owner"]:
                break
            assert runner.poll() is None, "the runner exited"
            assert time.monotonic() < deadline, "the runner never caught up"
            time.sleep(0.1)
    finally:
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    return status, err


def test_projections_run_can_keep_one_read_model_in_a_runner_of_its_own(url: str) -> None:
    """``ledger projections run conversation``: that read model only; the others are
    left to another runner (their leases stay free)."""
    seed(url)
    status, err = run_until_caught_up(url, "conversation", "conversation")
    assert status["run_metadata"]["lag_events"] == 29 and not status["memory"]["owner"]
    assert "projecting conversation of" in err
    unknown = ledger_cli(url, "projections", "run", "sentiment")
    assert unknown.returncode == 2 and "no read model named 'sentiment'" in unknown.stderr


def test_a_read_model_of_a_later_release_is_left_alone_by_this_ones_commands(url: str) -> None:
    """A later release rebuilt ``memory`` to its version: this release's ``status`` says
    so, its ``rebuild`` refuses (exit 1, nothing changed), and its ``run`` keeps the other
    read models, logs the mismatch once and stops cleanly."""
    seed(url)
    mine = projector_named("memory")
    later = type(mine)(mine.name, mine.version + 1, mine.reducer)
    with ledger.connect(url) as led:
        ProjectorRunner(led, [later], owner="later").rebuild(later)
        built = storage_for(led.store).projector("memory")
    assert built is not None and built.version == later.version
    shown = projections_status(url)
    assert shown["memory"]["outdated"] and not shown["memory"]["needs_rebuild"]
    assert (shown["memory"]["version"], shown["memory"]["stored_version"]) == (
        mine.version,
        later.version,
    )
    assert not shown["conversation"]["outdated"]
    table = ledger_cli(url, "projections", "status").stdout
    assert "built by a later release" in table
    refused = ledger_cli(url, "projections", "rebuild", "memory")
    assert refused.returncode == 1
    assert "this runner is of an earlier release: upgrade or stop it" in refused.stderr
    _, err = run_until_caught_up(url, "run_metadata")
    assert err.count("this runner is of an earlier release: upgrade or stop it") == 1
    assert "projector 'memory' is at version" in err
    with ledger.connect(url) as led:
        after = storage_for(led.store).projector("memory")
    assert after is not None and (after.version, after.generation) == (
        built.version,
        built.generation,
    )


def test_projections_run_follows_live_and_stops_cleanly_on_sigterm(url: str) -> None:
    seed(url)
    env = {**os.environ, "COLUMNS": "200"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "cli", "--url", url, "projections", "run", "--poll", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            status = json.loads(ledger_cli(url, "projections", "status", "--json").stdout)
            if all(p["lag_events"] == 0 and p["owner"] for p in status):
                break
            assert time.monotonic() < deadline, "the runner never caught up"
            time.sleep(0.1)
        with ledger.connect(url) as led:
            turn(led.tenant("usr_b").start_run(session_id="late"), 1)
        while json.loads(ledger_cli(url, "projections", "status", "--json").stdout)[0][
            "lag_events"
        ]:
            assert time.monotonic() < deadline, "the live runner missed the new turn"
            time.sleep(0.05)
    finally:
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    assert "stopped cleanly" in err
    status = json.loads(ledger_cli(url, "projections", "status", "--json").stdout)
    assert all(p["owner"] is None for p in status)  # leases given back


def test_projections_run_rides_out_a_database_outage(pg_url: str, pg_database: str) -> None:
    """Every connection cut under a running ``ledger projections run`` (a server
    restart, as clients see it): it says so, comes back, follows new turns, and still
    stops cleanly."""
    seed(pg_url)
    runner = subprocess.Popen(
        [sys.executable, "-m", "cli", "--url", pg_url, "projections", "run", "--poll", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )

    def lag() -> int:
        status = json.loads(ledger_cli(pg_url, "projections", "status", "--json").stdout)
        return sum(p["lag_events"] for p in status) if all(p["owner"] for p in status) else -1

    try:
        deadline = time.monotonic() + 60
        while lag() != 0:
            assert time.monotonic() < deadline, "the runner never caught up"
            time.sleep(0.1)
        assert cut_connections(pg_database) >= 2  # the runner's pool and its LISTEN
        with ledger.connect(pg_url) as led:
            turn(led.tenant("usr_b").start_run(session_id="late"), 1)
        while lag() != 0:
            assert runner.poll() is None, "the runner exited with its connections"
            assert time.monotonic() < deadline, "the runner never came back"
            time.sleep(0.05)
    finally:
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    assert "store unavailable" in err and "stopped cleanly" in err
