"""Runners of two releases at once (a rolling deploy): a read model only moves forward."""

from __future__ import annotations

import pytest

import ledger
from projections.runner import ProjectorRunner
from projections.storage import storage_for
from tests.tally import TALLY
from tests.writers import turn


@pytest.fixture
def led(store_url: str) -> ledger.Ledger:
    with ledger.connect(store_url) as connection:
        yield connection


def write_turns(led: ledger.Ledger, session: str, turns: int = 3) -> None:
    for user in ("usr_a", "usr_b"):
        run = led.tenant(user).start_run(session_id=session)
        for n in range(turns):
            turn(run, n)


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
