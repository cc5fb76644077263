"""The projector runner: exactly once, resumable, shared by leases, rebuilt whole.

Uses a deliberately simple reducer (events and tokens per session) so that these tests
exercise the runner; the real read models have their own tests.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest

import ledger
from ledger.store.postgres import split_url
from projections.projector import Projector
from projections.runner import ProjectorRunner
from projections.status import status
from tests.pg import cut_connections
from tests.tally import TALLY, TallyReducer, tally
from tests.writers import turn


@pytest.fixture
def led(store_url: str) -> ledger.Ledger:
    with ledger.connect(store_url) as connection:
        yield connection


def write_sessions(led: ledger.Ledger, sessions: int = 3, turns: int = 4) -> None:
    for s in range(sessions):
        for user in ("usr_a", "usr_b"):
            run = led.tenant(user).start_run(session_id=f"sess_{s}")
            for n in range(turns):
                turn(run, n)


def expected_count(turns: int = 4) -> int:
    return 1 + 5 * turns


def test_catch_up_applies_every_event_once(led: ledger.Ledger) -> None:
    write_sessions(led)
    runner = ProjectorRunner(led, [TALLY], batch_size=7)
    assert runner.catch_up() == 6 * expected_count()
    assert runner.catch_up() == 0
    for s in range(3):
        for user in ("usr_a", "usr_b"):
            state = tally(runner, user, f"sess_{s}")
            assert state is not None and state.events == expected_count()
            assert state.tokens == 4 * (1200 + 1400)
            ((_, versions),) = state.versions.items()
            assert versions == list(range(1, expected_count() + 1))
    assert tally(runner, "usr_a", "sess_9") is None


def test_a_second_runner_resumes_where_the_first_committed(led: ledger.Ledger) -> None:
    write_sessions(led, sessions=1)
    first = ProjectorRunner(led, [TALLY], batch_size=5, lease_seconds=0.2)
    first.step()
    first.step()
    time.sleep(0.4)  # the first runner "dies": its lease expires
    second = ProjectorRunner(led, [TALLY], batch_size=5)
    second.catch_up()
    assert tally(second, "usr_a", "sess_0").events == expected_count()  # type: ignore[union-attr]
    assert tally(second, "usr_b", "sess_0").events == expected_count()  # type: ignore[union-attr]


def test_a_held_lease_keeps_other_runners_out(led: ledger.Ledger) -> None:
    write_sessions(led, sessions=1)
    holder = ProjectorRunner(led, [TALLY], batch_size=5)
    holder.step()
    other = ProjectorRunner(led, [TALLY], batch_size=5)
    assert other.catch_up() == 0
    assert holder.catch_up() > 0


def test_new_events_are_picked_up_live(led: ledger.Ledger) -> None:
    runner = ProjectorRunner(led, [TALLY])
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), kwargs={"poll_seconds": 0.05})
    thread.start()
    try:
        run = led.tenant("usr_a").start_run(session_id="live")
        turn(run, 1)
        deadline = time.monotonic() + 10
        while (state := tally(runner, "usr_a", "live")) is None or state.events < 6:
            assert time.monotonic() < deadline, "the live runner never caught up"
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    row = runner.storage.projector("tally")
    assert row is not None and row.owner is None  # released on clean shutdown


def test_a_version_bump_rebuilds_beside_the_live_copy(led: ledger.Ledger) -> None:
    write_sessions(led, sessions=1)
    runner = ProjectorRunner(led, [TALLY])
    runner.catch_up()
    live = runner.storage.projector("tally")
    assert live is not None and live.generation == 1
    bumped = ProjectorRunner(led, [Projector("tally", 2, TallyReducer())], owner=runner.owner)
    bumped.catch_up()
    row = runner.storage.projector("tally")
    assert row is not None and (row.version, row.generation) == (2, 2)
    assert tally(runner, "usr_a", "sess_0").events == expected_count()  # type: ignore[union-attr]


def test_rebuild_reports_progress_and_keeps_counts(led: ledger.Ledger) -> None:
    write_sessions(led)
    runner = ProjectorRunner(led, [TALLY], batch_size=10)
    runner.catch_up()
    seen: list[int] = []
    assert runner.rebuild(TALLY, progress=seen.append) == 6 * expected_count()
    assert sum(seen) == 6 * expected_count()
    assert tally(runner, "usr_b", "sess_2").events == expected_count()  # type: ignore[union-attr]
    runner.catch_up()
    assert tally(runner, "usr_b", "sess_2").events == expected_count()  # type: ignore[union-attr]


def test_a_second_rebuild_while_one_runs_fails_fast_and_leaves_it_alone(
    led: ledger.Ledger,
) -> None:
    write_sessions(led)
    runner = ProjectorRunner(led, [TALLY], rebuild_batch_size=5)
    runner.catch_up()
    other = ProjectorRunner(led, [TALLY])
    refused: list[Exception] = []

    def rebuild_meanwhile(events: int) -> None:
        if not refused:
            with pytest.raises(ledger.RebuildInProgress, match="ledger projections rebuild") as e:
                other.rebuild(TALLY)
            refused.append(e.value)

    assert runner.rebuild(TALLY, progress=rebuild_meanwhile) == 6 * expected_count()
    assert refused, "the second rebuild was never tried"
    assert tally(runner, "usr_b", "sess_2").events == expected_count()  # type: ignore[union-attr]
    assert runner.storage.projector("tally~rebuild") is None
    assert other.rebuild(TALLY) == 6 * expected_count()  # once it is done: free again


def test_a_version_bump_leaves_a_rebuild_in_progress_to_its_runner(led: ledger.Ledger) -> None:
    write_sessions(led, sessions=1)
    runner = ProjectorRunner(led, [TALLY])
    runner.catch_up()
    held = runner.storage.begin_build("tally~rebuild", 2, "rebuilder", 30)
    assert held is not None
    bumped = ProjectorRunner(led, [Projector("tally", 2, TallyReducer())])
    assert bumped.catch_up() == 0  # no error: the rebuilder swaps version 2 in
    live = runner.storage.projector("tally")
    assert live is not None and live.version == 1
    assert runner.storage.projector("tally~rebuild") == held


def test_status_shows_a_rebuild_under_way_and_not_a_killed_one(led: ledger.Ledger) -> None:
    write_sessions(led, sessions=1)
    runner = ProjectorRunner(led, [TALLY])
    runner.catch_up()
    (idle,) = status(led, [TALLY])
    assert idle.rebuild_position is None and idle.rebuild_owner is None
    assert runner.storage.begin_build("tally~rebuild", 1, "rebuilder", 30) is not None
    (building,) = status(led, [TALLY])
    assert (building.rebuild_position, building.rebuild_owner) == (0, "rebuilder")
    assert building.leased  # the live runner's row is not the build's
    runner.storage.release("tally~rebuild", "rebuilder")  # as if killed: no live lease
    (killed,) = status(led, [TALLY])
    assert killed.rebuild_position is None


def test_a_long_rebuild_keeps_its_lease_between_commits(led: ledger.Ledger) -> None:
    """A batch that takes longer than the lease to fold must not let a second rebuild
    take the first one's build over: the heartbeat renews it meanwhile."""
    write_sessions(led, sessions=1)
    runner = ProjectorRunner(led, [TALLY], rebuild_batch_size=5, lease_seconds=0.6)
    refused: list[bool] = []

    def slow_batch(events: int) -> None:
        if not refused:
            time.sleep(1.5)  # past the lease: only a heartbeat keeps it
            with pytest.raises(ledger.RebuildInProgress):
                ProjectorRunner(led, [TALLY]).rebuild(TALLY)
            refused.append(True)

    assert runner.rebuild(TALLY, progress=slow_batch) == 2 * expected_count()
    assert refused
    assert tally(runner, "usr_a", "sess_0").events == expected_count()  # type: ignore[union-attr]


def test_a_rebuild_that_stops_short_gives_its_build_up_at_once(led: ledger.Ledger) -> None:
    write_sessions(led, sessions=1)
    runner = ProjectorRunner(led, [TALLY], rebuild_batch_size=5)

    def interrupted(events: int) -> None:
        if events:
            raise KeyboardInterrupt  # Ctrl-C after the first batch committed

    with pytest.raises(KeyboardInterrupt):
        runner.rebuild(TALLY, progress=interrupted)
    left = runner.storage.projector("tally~rebuild")
    assert left is not None and left.owner is None and left.cursor.position > 0
    assert ProjectorRunner(led, [TALLY]).rebuild(TALLY) == 2 * expected_count()
    assert tally(runner, "usr_a", "sess_0").events == expected_count()  # type: ignore[union-attr]


def test_status_shows_position_head_and_lag(led: ledger.Ledger) -> None:
    from projections.status import status

    write_sessions(led, sessions=1, turns=1)
    # On Postgres the log shows a commit once no older transaction is open anywhere on
    # the server (docs/guarantees.md): another database's work may hold it back a moment.
    deadline = time.monotonic() + 30
    while (before := status(led, [TALLY])[0]).lag_events < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (before.position, before.lag_events, before.stored_version) == (0, 12, None)
    assert before.lag_seconds is not None and before.lag_seconds >= 0
    runner = ProjectorRunner(led, [TALLY], batch_size=5)
    runner.step()
    (partway,) = status(led, [TALLY])
    assert partway.lag_events == 7 and partway.owner == runner.owner and partway.leased
    runner.catch_up()
    (after,) = status(led, [TALLY])
    assert (after.lag_events, after.lag_seconds) == (0, None)
    assert after.position == after.head_position
    (bumped,) = status(led, [Projector("tally", 2, TallyReducer())])
    assert bumped.needs_rebuild
    runner.storage.release(TALLY.name, runner.owner)  # as a runner that stopped cleanly
    (released,) = status(led, [TALLY])
    assert not released.leased


def test_status_says_when_a_runners_lease_ran_out(led: ledger.Ledger) -> None:
    """A runner that died keeps its name on the row; status says nobody projects."""
    from projections.status import status

    write_sessions(led, sessions=1, turns=1)
    runner = ProjectorRunner(led, [TALLY], lease_seconds=0.05)
    runner.step()  # holds the lease, then "dies": never renews nor releases it
    time.sleep(0.1)
    (row,) = status(led, [TALLY])
    assert row.owner == runner.owner and not row.leased


def test_reads_include_what_the_projector_has_not_reached(led: ledger.Ledger) -> None:
    from projections.reading import current

    write_sessions(led, sessions=1, turns=3)
    t = led.tenant("usr_a")
    heads = led.store.list_runs("usr_a", "sess_0")
    no_runner = current(led, TALLY, "usr_a", "sess_0", heads).doc
    assert no_runner is not None and no_runner.state.events == expected_count(3)
    runner = ProjectorRunner(led, [TALLY], batch_size=4)
    runner.step()  # the stored document now holds part of the session
    partial = current(led, TALLY, "usr_a", "sess_0", heads).doc
    assert partial is not None and partial.state == no_runner.state
    turn(t.run(heads[0].run_id), 99)  # and a turn the projector has never seen
    heads = led.store.list_runs("usr_a", "sess_0")
    fresh = current(led, TALLY, "usr_a", "sess_0", heads).doc
    assert fresh is not None and fresh.state.events == expected_count(4)
    runner.catch_up()
    assert tally(runner, "usr_a", "sess_0") == fresh.state


def _tally_position(pg_url: str) -> int:
    """Where the tally projector has committed to (0: nowhere yet), read afresh."""
    conninfo, schema = split_url(pg_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT position FROM "{schema}".ledger_projectors WHERE name = %s', ("tally",)
        ).fetchone()
    return 0 if row is None else int(row[0])


def test_a_live_runner_outlives_lost_connections_exactly_once(
    pg_url: str, pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server drops every connection, again and again, each time after the runner
    got going again, while it catches up in small batches (so cuts land mid-batch and
    mid-commit, outcome unknown to the runner): it keeps running, and every event is
    applied exactly once."""
    with ledger.connect(pg_url) as led:
        write_sessions(led, sessions=5, turns=20)
    runner_led = ledger.connect(pg_url)
    runner = ProjectorRunner(runner_led, [TALLY], batch_size=5)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), kwargs={"poll_seconds": 0.05})
    caplog.set_level(logging.WARNING, logger="projections.runner")
    thread.start()
    try:
        deadline = time.monotonic() + 60
        seen = 0
        cuts = 0
        while cuts < 6:
            while (position := _tally_position(pg_url)) == seen:  # back at work
                assert thread.is_alive(), "the runner died with its connection"
                assert time.monotonic() < deadline, "the runner never came back"
                time.sleep(0.005)
            seen = position
            # (none to cut if it is between a lost connection and the next one)
            cuts += cut_connections(pg_database) > 0
        after = ledger.connect(pg_url)  # fresh connections, made after the last cut
        turn(after.tenant("usr_a").start_run(session_id="after"), 1)
        reader = ProjectorRunner(after, [TALLY])  # to read the tallies with
        while (state := tally(reader, "usr_a", "after")) is None or state.events < 6:
            assert thread.is_alive(), "the runner died with its connection"
            assert time.monotonic() < deadline, "the runner never came back"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
    # Most cuts are absorbed by the pool's check of idle connections; at least the
    # LISTEN connection, cut while the runner was busy, fails when it next waits.
    assert "store unavailable (attempt" in caplog.text
    for s in range(5):
        for user in ("usr_a", "usr_b"):
            state = tally(reader, user, f"sess_{s}")
            assert state is not None and state.events == expected_count(20)
            ((_, versions),) = state.versions.items()
            assert versions == list(range(1, expected_count(20) + 1))  # none twice
    row = reader.storage.projector("tally")
    assert row is not None and row.owner is None  # released on the clean stop
    after.close()
    runner_led.close()
