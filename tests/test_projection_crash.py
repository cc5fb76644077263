"""Exactly once under crashes and concurrency: the read side never loses or doubles.

The expected read models are computed straight from the log (and by a rebuild from
scratch) and compared with what killed, restarted and concurrent runners left behind.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

import ledger
from projections.runner import ProjectorRunner
from projections.storage.base import BUILD_SUFFIX, projection_of
from tests.runners import catch_up_until_killed, projectors, rebuild_until_killed, run_live_for
from tests.tally import TALLY, Tally, tally
from tests.writers import append_turns, turn

CTX = multiprocessing.get_context("spawn")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def expected_tallies(led: ledger.Ledger) -> dict[tuple[str, str], Tally]:
    """Fold every session straight from the log: the truth the read model must equal."""
    out: dict[tuple[str, str], Tally] = {}
    for run in led.auditor().runs():
        state = out.setdefault((run.user_id, run.session_id), Tally(versions={}))
        for event in led.auditor().events(run.run_id):
            TALLY.reducer.step(state, event)
        out[(run.user_id, run.session_id)] = state
    return out


def stored_tallies(runner: ProjectorRunner) -> dict[tuple[str, str], Tally]:
    return {(u, k): TALLY.load(*d).state for u, k, d in runner.storage.scan("tally", None)}


def assert_exactly_once(led: ledger.Ledger, runner: ProjectorRunner) -> None:
    stored = stored_tallies(runner)
    expected = expected_tallies(led)
    assert stored.keys() == expected.keys()
    for key, state in expected.items():
        assert stored[key] == state, f"{key}: {stored[key].events} events, expected {state.events}"
    for projector in projectors():  # every read model equals a rebuild from scratch
        before = runner.storage.scan(projector.name, None)
        assert before, f"{projector.name} is empty"
        runner.rebuild(projector)
        assert runner.storage.scan(projector.name, None) == before, projector.name


def many_turns(led: ledger.Ledger, sessions: int, turns: int) -> None:
    for s in range(sessions):
        run = led.tenant(f"usr_{s % 3}").start_run(session_id=f"sess_{s}")
        for n in range(turns):
            turn(run, n)


@pytest.mark.slow
def test_kill_9_during_catch_up_many_times(url: str) -> None:
    rng = random.Random(11)
    with ledger.connect(url) as led:
        many_turns(led, sessions=30, turns=40)  # 6,030 events
        for _ in range(8):
            child = CTX.Process(target=catch_up_until_killed, args=(url, 25, 0.3))
            child.start()
            time.sleep(rng.uniform(0.8, 2.0))
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
        time.sleep(0.4)  # the last victim's lease runs out
        runner = ProjectorRunner(led, projectors())
        row = runner.storage.projector("tally")
        assert row is not None and row.cursor.position > 0, "no runner ever committed"
        runner.catch_up()
        assert_exactly_once(led, runner)


@pytest.mark.slow
def test_runner_processes_and_writer_processes_at_once(url: str) -> None:
    with ledger.connect(url) as led, ProcessPoolExecutor(6, mp_context=CTX) as pool:
        runners = [pool.submit(run_live_for, url, 8.0, 0.5) for _ in range(2)]
        writers = [pool.submit(append_turns, url, w, 5, 120, 0.0) for w in range(4)]
        for future in writers + runners:
            future.result()
        runner = ProjectorRunner(led, projectors())
        time.sleep(0.6)
        runner.catch_up()
        assert len(stored_tallies(runner)) == 4
        assert_exactly_once(led, runner)


def test_kill_9_during_a_rebuild_then_the_next_rebuild_starts_afresh(url: str) -> None:
    """A killed rebuild leaves its build rows and half-written documents behind: once
    its lease runs out, the next rebuild takes them over under a new generation, deletes
    what the killed one wrote, and ends with what a rebuild from scratch gives."""
    with ledger.connect(url) as led:
        many_turns(led, sessions=6, turns=10)
        runner = ProjectorRunner(led, projectors())
        runner.catch_up()
        child = CTX.Process(target=rebuild_until_killed, args=(url, 0.5))
        child.start()
        try:
            build = "tally" + BUILD_SUFFIX
            while (row := runner.storage.projector(build)) is None or not row.cursor.position:
                assert child.is_alive(), "the rebuild process died on its own"
                time.sleep(0.01)
        finally:
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
        killed = runner.storage.projectors()
        builds = {r.name: r.generation for r in killed if r.name.endswith(BUILD_SUFFIX)}
        assert build in builds
        time.sleep(0.8)  # the killed rebuild's lease runs out
        runner.rebuild_all()
        for name, generation in builds.items():
            live = runner.storage.projector(projection_of(name))
            assert live is not None and live.generation > generation, name
            keys = [(u, k) for u, k, _ in runner.storage.scan(live.name, None)]
            assert runner.storage.load(name, generation, keys) == {}, name  # deleted
        assert not [r for r in runner.storage.projectors() if r.name.endswith(BUILD_SUFFIX)]
        assert_exactly_once(led, runner)


def test_a_reader_during_a_rebuild_sees_the_whole_old_or_new_model(url: str) -> None:
    with ledger.connect(url) as led:
        many_turns(led, sessions=3, turns=30)
        runner = ProjectorRunner(led, projectors(), batch_size=10)
        runner.catch_up()
        complete = tally(runner, "usr_0", "sess_0")
        assert complete is not None
        seen: list[int | None] = []
        done = threading.Event()

        def read() -> None:
            while not done.is_set():
                state = tally(runner, "usr_0", "sess_0")
                seen.append(None if state is None else state.events)

        def read_between_batches(events: int) -> None:
            # Small batches, and a read after each commit of the build: the rebuild is
            # fast enough that a reader thread alone might not catch it half-done.
            seen.append(getattr(tally(runner, "usr_0", "sess_0"), "events", None))
            time.sleep(0.002)

        runner.rebuild_batch_size = 10
        reader = threading.Thread(target=read)
        reader.start()
        try:
            runner.rebuild(TALLY, progress=read_between_batches)
        finally:
            done.set()
            reader.join()
        assert len(seen) > 10
        assert set(seen) == {complete.events}
