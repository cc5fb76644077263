"""A stored event the read side cannot fold does not stop it, for any tenant.

The API validates what it stores, but a login of the application role may INSERT rows
for its own tenant by hand. Such a row (a payload that does not decode, or one the
reducer raises on) used to stop every projector at its position, for every tenant.
Now it is skipped and logged, the same way live, in rebuilds and in reads that fold
what the projector has not reached, so read models still equal a rebuild.
"""

from __future__ import annotations

import logging
import sqlite3

import pytest

import ledger
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner
from projections.status import status
from tests.pg import raw_connection
from tests.test_cli import ledger_cli
from tests.writers import turn

_COLUMNS = "user_id, run_id, session_id, occurred_at, recorded_at, key_id, tx_id"

#: (type, schema, payload): the reducer of run metadata raises on the first (a token
#: count that is not a number); the other two do not decode at all.
POISON = [
    ("model_responded", 1, b'{"usage": {"input_tokens": "lots"}}'),
    ("message_received", 1, b"[1, 2]"),
    ("tool_called", 0, b'{"call_id": "c", "name": "n"}'),
]


def _insert_after_head(url: str, run_id: str, type_: str, schema: int, payload: bytes) -> None:
    """As the database's owner, one row after the run's head (chained to it)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            conn.execute(
                f"INSERT INTO ledger_events ({_COLUMNS}, type, schema, payload, version,"
                f" prev_hash, hash) SELECT {_COLUMNS}, ?, ?, ?, version + 1, hash,"
                " randomblob(32) FROM ledger_events WHERE run_id = ? ORDER BY version DESC"
                " LIMIT 1",
                (type_, schema, payload, run_id),
            )
            conn.commit()
        finally:
            conn.close()
        return
    with raw_connection(url, autocommit=True) as pg:
        pg.execute(
            f"INSERT INTO ledger_events ({_COLUMNS}, type, schema, payload, version,"
            f" prev_hash, hash) SELECT {_COLUMNS}, %s, %s, %s, version + 1, hash,"
            " sha256(hash) FROM ledger_events WHERE run_id = %s ORDER BY version DESC"
            " LIMIT 1",
            (type_, schema, payload, run_id),
        )


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def test_unfoldable_events_are_skipped_and_logged_and_the_rest_is_folded(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with ledger.connect(url) as led:
        a, b = led.tenant("usr_a"), led.tenant("usr_b")
        run_a = a.start_run(session_id="sess_a", model="gpt-4o")
        turn(run_a, 1)
        for type_, schema, payload in POISON:  # versions 7, 8 and 9
            _insert_after_head(url, run_a.run_id, type_, schema, payload)
        turn(a.run(run_a.run_id), 2)  # after the poison, in the same run
        run_b = b.start_run(session_id="sess_b", model="gpt-4o")
        turn(run_b, 1)

        # Read before any projector ran: read-your-writes folds everything, skipping.
        unprojected = (a.conversation("sess_a"), a.run_metadata(run_a.run_id), a.memories())
        with caplog.at_level(logging.ERROR, logger="projections"):
            runner = ProjectorRunner(led, default_projectors(), owner="test")
            runner.catch_up()
        logged = "\n".join(r.getMessage() for r in caplog.records)
        for version in (7, 8, 9):
            assert f"skipped stored event {version} of run {run_a.run_id!r}" in logged
        assert "run_metadata raised ValueError" in logged
        assert "cannot be read as 'tool_called': " in logged

        # Nothing stalled: everything after the poison is in, for both tenants.
        # Nor hidden: each read model counts what it skipped. Versions 8 and 9 do not
        # decode (skipped by all three); version 7 is folded by the conversation and run
        # metadata (both read a model response's usage) and by memory not at all.
        skipped = {"conversation": 3, "run_metadata": 3, "memory": 2}
        assert [(s.name, s.lag_events, s.skipped) for s in status(led, default_projectors())] == [
            (p.name, 0, skipped[p.name]) for p in default_projectors()
        ]
        meta = a.run_metadata(run_a.run_id)
        assert meta.model_calls == 4 and meta.tool_calls == 2  # both turns, not the poison
        assert meta.version == 14  # the head: versions 10-14 are the second turn
        contents = [m.get("content") or "" for m in a.conversation("sess_a").messages]
        assert [c[:15] for c in contents if c.startswith("user question")] == [
            "user question 1",
            "user question 2",
        ]
        assert b.run_metadata(run_b.run_id).model_calls == 2
        # What reads folded themselves is what the projectors stored.
        assert (a.conversation("sess_a"), a.run_metadata(run_a.run_id), a.memories()) == (
            unprojected
        )
        for projector in default_projectors():  # and a rebuild skips exactly the same
            before = runner.storage.scan(projector.name, None)
            runner.rebuild(projector)
            assert runner.storage.scan(projector.name, None) == before, projector.name
        assert {s.name: s.skipped for s in status(led, default_projectors())} == skipped
    shown = ledger_cli(url, "projections", "status")
    assert shown.returncode == 0, shown.stderr
    assert "skipped 3 unfoldable events (see its log)" in shown.stdout


def test_ledger_events_shows_an_unreadable_row_among_the_rest(url: str) -> None:
    """The API says which row it cannot read; the debugging command shows the whole
    run, with that row marked, since it is where an operator looks for it."""
    with ledger.connect(url) as led:
        t = led.tenant("usr_a")
        run = t.start_run(session_id="s")
        turn(run, 1)
        _insert_after_head(url, run.run_id, "message_received", 1, b"\xff\x00")  # version 7
        turn(t.run(run.run_id), 2)
        with pytest.raises(ledger.InvalidEvent, match=r"stored event 7 of run .* cannot be read"):
            t.events(run.run_id)
        marked = t.events(run.run_id, mark_unreadable=True)
        assert [e.version for e in marked] == list(range(1, 13))
        assert marked[6].data == {
            "unreadable": f"stored event 7 of run {run.run_id!r} cannot be read as "
            "'message_received': JSON is malformed: invalid character (byte 0)",
            "payload_base64": "/wA=",
        }
        assert led.auditor().events(run.run_id, mark_unreadable=True) == marked
    shown = ledger_cli(url, "events", run.run_id)
    assert shown.returncode == 0, shown.stderr
    assert "UNREADABLE: stored event 7" in shown.stdout and "user question 2" in shown.stdout
