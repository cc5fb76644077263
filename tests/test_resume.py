"""``t.run(run_id)`` resumes a run in another process at the right version."""

from __future__ import annotations

import multiprocessing

import pytest

import ledger
from tests.writers import resume_and_finish, turn


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def test_another_process_resumes_at_the_head(url: str) -> None:
    with ledger.connect(url) as led:
        t = led.tenant("usr_a")
        run = t.start_run(session_id="s")
        turn(run, 1)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            version = pool.apply(resume_and_finish, (url, "usr_a", run.run_id))
        assert version == 12
        events = t.events(run.run_id)
        assert [e.version for e in events] == list(range(1, 13))
        assert events[-1].data == {"output": "resumed elsewhere"}
        with pytest.raises(ledger.ConcurrencyError):
            run.step_completed(step="late", index=9)  # this handle is now stale
        assert led.auditor().verify(run_id=run.run_id).ok
