"""Runners of two releases at once (a rolling deploy): a read model only moves forward.

The tally of version 2 (``TALLY_V2``) also counts the tokens of the model's answers, so
a document written by the version 1 tally into version 2's read model shows.
"""

from __future__ import annotations

import logging
import multiprocessing
import time

import pytest

import ledger
from projections.projector import Projector
from projections.runner import ProjectorRunner
from projections.status import status
from projections.storage import storage_for
from tests.runners import run_tally_live_for
from tests.tally import TALLY, TALLY_V2, Tally, TallyReducer
from tests.test_read_model_storage import behind_the_store
from tests.writers import turn

CTX = multiprocessing.get_context("spawn")
EARLIER_RELEASE = "this runner is of an earlier release: upgrade or stop it"


@pytest.fixture
def led(store_url: str) -> ledger.Ledger:
    with ledger.connect(store_url) as connection:
        yield connection


def write_turns(led: ledger.Ledger, session: str, turns: int = 3) -> None:
    for user in ("usr_a", "usr_b"):
        run = led.tenant(user).start_run(session_id=session)
        for n in range(turns):
            turn(run, n)


def version_and_generation(led: ledger.Ledger) -> tuple[int, int]:
    row = storage_for(led.store).projector("tally")
    assert row is not None
    return row.version, row.generation


def tallies(led: ledger.Ledger) -> dict[tuple[str, str], Tally]:
    """The stored version 2 tallies, by tenant and session."""
    stored = storage_for(led.store).scan("tally", None)
    return {(user, key): TALLY_V2.load(*doc).state for user, key, doc in stored}


def assert_equals_a_rebuild_from_scratch(led: ledger.Ledger) -> None:
    before = tallies(led)
    assert before
    ProjectorRunner(led, [TALLY_V2], owner="checker").rebuild(TALLY_V2)
    assert tallies(led) == before


def test_an_older_runner_never_rebuilds_a_newer_read_model_down(
    led: ledger.Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    write_turns(led, "sess_0")
    old = ProjectorRunner(led, [TALLY], owner="old")
    old.catch_up()
    old.storage.release("tally", "old")  # it stops (a deploy moves it) ...
    new = ProjectorRunner(led, [TALLY_V2], owner="new")
    new.catch_up()
    assert version_and_generation(led) == (2, 2)
    new.storage.release("tally", "new")
    caplog.set_level(logging.ERROR, logger="projections.runner")
    write_turns(led, "sess_1")
    old = ProjectorRunner(led, [TALLY], owner="old")  # ... and starts again
    assert old.catch_up() == 0
    assert version_and_generation(led) == (2, 2)  # not rebuilt back to version 1
    assert EARLIER_RELEASE in caplog.text and "'tally'" in caplog.text
    assert "version 1" in caplog.text and "version 2" in caplog.text
    row = old.storage.projector("tally")
    assert row is not None and row.owner is None  # it holds nothing of it
    assert new.catch_up() > 0  # the new one carries on where it was: no rebuild
    assert version_and_generation(led) == (2, 2)
    assert_equals_a_rebuild_from_scratch(led)


def test_a_newer_runner_rebuilds_forward_once_while_an_older_one_holds_the_live_row(
    led: ledger.Ledger,
) -> None:
    write_turns(led, "sess_0")
    old = ProjectorRunner(led, [TALLY], owner="old")
    old.catch_up()  # and keeps its lease on the live row
    new = ProjectorRunner(led, [TALLY_V2], owner="new")
    new.catch_up()
    assert version_and_generation(led) == (2, 2)  # built beside the live row, swapped in
    write_turns(led, "sess_1")
    assert old.catch_up() == 0  # fenced out by the swap ...
    assert old.catch_up() == 0  # ... it claims again and sees version 2
    row = old.storage.projector("tally")
    assert row is not None and row.owner is None  # and gives the lease up at once
    assert new.catch_up() > 0
    assert old.catch_up() == 0
    assert version_and_generation(led) == (2, 2)
    row = old.storage.projector("tally")
    assert row is not None and row.owner == "new"
    assert_equals_a_rebuild_from_scratch(led)


def test_an_older_rebuild_is_refused_and_changes_nothing(led: ledger.Ledger) -> None:
    write_turns(led, "sess_0")
    ProjectorRunner(led, [TALLY_V2], owner="new").catch_up()
    before = tallies(led)
    with pytest.raises(ledger.ProjectorOutdated, match="earlier release"):
        ProjectorRunner(led, [TALLY], owner="old").rebuild(TALLY)
    assert version_and_generation(led) == (2, 1)
    assert tallies(led) == before


def test_a_later_version_swapped_in_during_a_rebuild_refuses_that_one_only(
    led: ledger.Ledger,
) -> None:
    """A later release's version lands while an earlier release rebuilds two read models
    in one pass: that one is refused (its build deleted); the other is swapped in."""
    write_turns(led, "sess_0")
    other = Projector("tally_b", 1, TallyReducer())
    old = ProjectorRunner(led, [TALLY, other], owner="old")
    old.catch_up()

    def later_release_lands(events: int) -> None:
        if events == 0:  # the builds are the old runner's, the versions checked
            live = old.storage.projector("tally")
            assert live is not None
            old.storage.swap("tally", 2, live.generation, live.cursor, "tally~elsewhere")

    with pytest.raises(ledger.ProjectorOutdated, match="earlier release"):
        old.rebuild_all(progress=later_release_lands)
    assert version_and_generation(led) == (2, 1)
    assert old.storage.projector("tally~rebuild") is None
    swapped = old.storage.projector("tally_b")
    assert swapped is not None and swapped.generation == 2
    assert old.storage.projector("tally_b~rebuild") is None


def test_an_earlier_release_never_claims_a_later_versions_row(led: ledger.Ledger) -> None:
    storage = storage_for(led.store)
    assert storage.claim("tally", 2, "new", 30) is not None
    storage.release("tally", "new")
    assert storage.claim("tally", 1, "old", 30) is None  # free, but of a later version
    row = storage.projector("tally")
    assert row is not None and row.owner is None
    assert storage.claim("tally", 2, "new", 30) is not None


def test_the_swap_of_an_older_build_over_a_newer_live_version_is_refused_in_sql(
    led: ledger.Ledger,
) -> None:
    """The old rebuild checked the live version before the newer one swapped in: the
    swap itself must still refuse (its transaction compares the versions)."""
    write_turns(led, "sess_0")
    storage = storage_for(led.store)
    ProjectorRunner(led, [TALLY], owner="old").catch_up()
    new = storage.begin_build("tally~rebuild", 2, "new", 30)
    assert new is not None
    storage.swap("tally", 2, new.generation, new.cursor, new.name, "new")
    old = storage.begin_build("tally~rebuild", 1, "old", 30)
    assert old is not None
    storage.commit("tally~rebuild", old.generation, "old", old.cursor, new.cursor, {}, 30)
    with pytest.raises(ledger.ProjectorOutdated, match="earlier release"):
        storage.swap("tally", 1, old.generation, new.cursor, old.name, "old")
    live = storage.projector("tally")
    assert live is not None and (live.version, live.generation) == (2, new.generation)
    assert storage.projector("tally~rebuild") is None  # its useless build is gone


def test_status_says_the_read_model_is_of_a_later_release(led: ledger.Ledger) -> None:
    write_turns(led, "sess_0", turns=1)
    ProjectorRunner(led, [TALLY_V2], owner="new").catch_up()
    (older,) = status(led, [TALLY])
    assert older.outdated and not older.needs_rebuild
    assert (older.version, older.stored_version) == (1, 2)
    (current,) = status(led, [TALLY_V2])
    assert not current.outdated and not current.needs_rebuild


def test_runner_processes_of_two_releases_at_once_end_on_the_newer_version_rebuilt_once(
    url: str,
) -> None:
    """A rolling deploy: a runner of the earlier release follows the log live; one of the
    next release starts beside it while agents write, and stops before it. The next
    release's read model is swapped in while the earlier runner lives, is built once,
    is never rebuilt back, and equals a rebuild from scratch."""
    with ledger.connect(url) as led:
        storage = storage_for(led.store)
        write_turns(led, "sess_0")
        old = CTX.Process(target=run_tally_live_for, args=(url, 1, 16.0, 1.0))
        old.start()
        try:
            deadline = time.monotonic() + 30
            while (row := storage.projector("tally")) is None or row.cursor.position < 1:
                assert time.monotonic() < deadline, "the old runner never started"
                time.sleep(0.05)
            new = CTX.Process(target=run_tally_live_for, args=(url, 2, 8.0, 1.0))
            new.start()
            try:
                for n in range(1, 11):
                    write_turns(led, f"sess_{n}", turns=2)
                    time.sleep(0.2)
                while (row := storage.projector("tally")) is None or row.version < 2:
                    assert new.is_alive(), "version 2 was never swapped in"
                    time.sleep(0.05)
                assert old.is_alive()
            finally:
                new.join(60)
            write_turns(led, "sess_11", turns=2)  # only the earlier release's runner is left
        finally:
            old.join(60)
        assert (old.exitcode, new.exitcode) == (0, 0)
        assert version_and_generation(led) == (2, 2)  # rebuilt forward once, never back
        runner = ProjectorRunner(led, [TALLY_V2], owner="checker")
        runner.catch_up()  # what came after the new one stopped
        assert version_and_generation(led) == (2, 2)
        assert len(tallies(led)) == 24
        assert_equals_a_rebuild_from_scratch(led)


def test_a_rollback_sets_the_stored_version_back_and_the_earlier_release_rebuilds(
    url: str,
) -> None:
    """Rolling back (docs/read-side.md): the later release's runners stopped, the stored
    version set to 0 by hand; the earlier release's runner then rebuilds its read model
    beside the live one and swaps it in, as for any version change."""
    with ledger.connect(url) as led:
        write_turns(led, "sess_0")
        ProjectorRunner(led, [TALLY_V2], owner="new").catch_up()
        storage_for(led.store).release("tally", "new")  # stopped
        behind_the_store(url, "UPDATE ledger_projectors SET version = 0 WHERE name = 'tally'")
        old = ProjectorRunner(led, [TALLY], owner="old")
        old.catch_up()
        assert version_and_generation(led) == (1, 2)
        assert not old.outdated
        stored = {(u, k): TALLY.load(*d).state for u, k, d in old.storage.scan("tally", None)}
        old.rebuild(TALLY)
        again = {(u, k): TALLY.load(*d).state for u, k, d in old.storage.scan("tally", None)}
        assert stored == again and len(stored) == 2
