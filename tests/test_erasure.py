"""Erasure by crypto-shredding (DESIGN.md invariant 7, compliance issue).

After ``forget``: the user's content is unreadable everywhere (API, read models, raw
tables), the chain still verifies, cost accounting is unchanged, replay shows the
content as erased, the erasure is an event, and other users are untouched.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

import ledger
from ledger.personal import ERASED
from ledger.storable import MARKER
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner
from tests.pg import raw_connection
from tests.test_cli import ledger_cli

SECRET = "tumour-marker-7731"  # a plaintext no table may ever hold


def _record(led: ledger.Ledger, user: str, session: str = "sess_1") -> str:
    t = led.tenant(user)
    run = t.start_run(session_id=session, model="gpt-4o")
    with run.turn():
        run.message_received(content=f"{SECRET} says {user}", attachments=[{"note": SECRET}])
        run.model_responded(
            model="gpt-4o",
            content=f"looking up {SECRET}",
            tool_calls=[{"id": "c1", "name": "search", "arguments": {"q": SECRET}}],
            usage={"input_tokens": 1200, "output_tokens": 40},
            latency_ms=800,
        )
        run.tool_called(call_id="c1", name="search", input={"q": SECRET})
        run.tool_returned(call_id="c1", name="search", output={"hits": [SECRET]}, duration_ms=120)
    run.memory_written(namespace="health", key="marker", value=SECRET)
    run.complete(output={"answer": SECRET})
    return run.run_id


@pytest.fixture
def led(store_url: str) -> Any:
    with ledger.connect(store_url, encrypt=True) as opened:
        yield opened


def _everything_readable(led: ledger.Ledger, user: str, run_id: str) -> str:
    """All a tenant can read of the run, as one JSON text."""
    t = led.tenant(user)
    parts = [
        [e.data for e in t.events(run_id)],
        t.conversation("sess_1").model_dump(mode="json"),
        [m.model_dump(mode="json") for m in t.memories()],
        t.replay(run_id).model_dump(mode="json"),
        [e.data for e in led.auditor().events(run_id)],
        led.auditor().replay(run_id).model_dump(mode="json"),
    ]
    return json.dumps(parts)


def test_content_reads_back_before_and_is_erased_after(led: ledger.Ledger) -> None:
    run_id = _record(led, "usr_a")
    other = _record(led, "usr_b")
    before = _everything_readable(led, "usr_a", run_id)
    assert SECRET in before and MARKER not in before
    cost_before = led.tenant("usr_a").run_metadata(run_id).model_dump(mode="json")

    erasure = led.forget("usr_a", reason="GDPR art. 17, ticket 42")

    after = _everything_readable(led, "usr_a", run_id)
    assert SECRET not in after and MARKER not in after
    state = led.tenant("usr_a").replay(run_id)
    assert [m["content"] for m in state.messages[:2]] == [ERASED, ERASED]
    assert led.tenant("usr_a").memories()[0].value == ERASED
    # accounting survives: tokens, cost, tool calls, timings
    assert led.tenant("usr_a").run_metadata(run_id).model_dump(mode="json") == cost_before
    # the chain covers ciphertext: the erasure breaks nothing
    report = led.auditor().verify()
    assert report.problems == [] and report.events > 0
    # the erasure is on the record
    (record,) = [e for e in led.tenant("usr_a").events(erasure.run_id) if e.type == "user_erased"]
    assert record.data["key_ids"] == erasure.destroyed_keys != []
    assert record.data["reason"] == "GDPR art. 17, ticket 42"
    # another user is untouched
    assert SECRET in _everything_readable(led, "usr_b", other)


def test_a_forgotten_user_can_come_back_with_a_new_key(led: ledger.Ledger) -> None:
    old = _record(led, "usr_a")
    led.forget("usr_a")
    t = led.tenant("usr_a")
    run = t.start_run(session_id="sess_2")
    run.message_received(content="hello again")
    assert t.events(run.run_id)[1].data["content"] == "hello again"
    assert t.events(old)[1].data["content"] == ERASED


@pytest.mark.parametrize("backend", ["sqlite_url", "pg_url"])
def test_a_process_holding_a_stale_key_never_writes_unreadable_content(
    request: pytest.FixtureRequest, backend: str
) -> None:
    store_url = str(request.getfixturevalue(backend))  # two connections share one store
    with (
        ledger.connect(store_url, encrypt=True) as writer,
        ledger.connect(store_url, encrypt=True) as admin,
    ):
        run = writer.tenant("usr_a").start_run(session_id="sess_1")
        run.message_received(content="first")  # the writer now caches usr_a's key
        admin.forget("usr_a")
        run.message_received(content="second")  # sealed with the dead key: refused, resealed
        events = writer.tenant("usr_a").events(run.run_id)
        assert [e.data.get("content") for e in events[1:]] == [ERASED, "second"]
        assert events[1].hash != "" and admin.auditor().verify().problems == []


def test_input_that_looks_sealed_is_refused(led: ledger.Ledger) -> None:
    run = led.tenant("usr_a").start_run(session_id="sess_1")
    with pytest.raises(ledger.InvalidEvent, match="seal marker"):
        run.message_received(content=MARKER + "k_x/abc")
    assert run.version == 1


#: The events of ``_record`` that hold personal content (all but ``run_started``).
_PERSONAL_EVENTS = 6


def test_forget_with_encryption_off_refuses_to_claim_an_erasure(sqlite_url: str) -> None:
    """Content stored in the clear cannot be shredded: never reported erased, and no
    erasure is recorded that did not happen."""
    with ledger.connect(sqlite_url) as plain:  # SQLite: off by default
        assert not plain.encrypting
        run_id = _record(plain, "usr_a")
        with pytest.raises(ledger.NotErasable, match=r"6 of their events .* in the clear"):
            plain.forget("usr_a")
        assert [r.run_id for r in plain.auditor().runs()] == [run_id]  # nothing recorded
    done = ledger_cli(sqlite_url, "forget", "--user", "usr_a")
    assert done.returncode == 1 and "forgot" not in done.stdout
    assert "nothing can be erased" in done.stderr and "Traceback" not in done.stderr


def test_forget_of_content_partly_in_the_clear_says_how_much_it_could_not_erase(
    sqlite_url: str,
) -> None:
    with ledger.connect(sqlite_url) as plain:  # the same user, before encryption was on
        _record(plain, "usr_a", "sess_plain")
    with ledger.connect(sqlite_url, encrypt=True) as led:
        sealed = _record(led, "usr_a")
    done = ledger_cli(sqlite_url, "forget", "--user", "usr_a", "--json")
    assert done.returncode == 1, done.stderr
    erasure = json.loads(done.stdout)
    assert len(erasure["destroyed_keys"]) == 1
    assert erasure["plain_events"] == _PERSONAL_EVENTS
    assert f"only partly erased: {_PERSONAL_EVENTS} of their events" in done.stderr
    with ledger.connect(sqlite_url, encrypt=True) as led:
        assert SECRET not in _everything_readable(led, "usr_a", sealed)  # the sealed part went
        assert led.forget("usr_a").plain_events == _PERSONAL_EVENTS  # and stays reported


def test_postgres_encrypts_by_default(pg_url: str) -> None:
    with ledger.connect(pg_url) as led:
        assert led.encrypting


# -- raw tables (Postgres): the plaintext is never there --------------------------------


def _tables_holding(pg_url: str, needle: str) -> list[str]:
    """Tables of the ledger's schema with a text or bytea column holding ``needle``."""
    found = []
    with raw_connection(pg_url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND data_type IN ('text', 'bytea')"
        ).fetchall()
        for table, column, kind in columns:
            probe = (
                f"position(%s::bytea in {column}) > 0"
                if kind == "bytea"
                else f"position(%s in {column}) > 0"
            )
            arg: Any = needle.encode() if kind == "bytea" else needle
            (hits,) = conn.execute(f"SELECT count(*) FROM {table} WHERE {probe}", (arg,)).fetchone()  # type: ignore[misc]
            if hits:
                found.append(f"{table}.{column}")
    return found


def test_no_table_ever_holds_the_plaintext(pg_url: str) -> None:
    with ledger.connect(pg_url) as led:
        run_id = _record(led, "usr_a")
        long = led.tenant("usr_a").start_run(session_id="sess_long")
        for n in range(70):  # long enough for its conversation to be stored in pages
            with long.turn():
                long.message_received(content=f"{SECRET} {n}")
                long.model_responded(content=f"about {SECRET}")
        ProjectorRunner(led, default_projectors()).catch_up()
        # the probe works, pages included
        assert "ledger_read_model_pages.user_id" in _tables_holding(pg_url, "usr_a")
        assert _tables_holding(pg_url, SECRET) == []
        led.forget("usr_a")
        ProjectorRunner(led, default_projectors()).catch_up()
        assert _tables_holding(pg_url, SECRET) == []
        with raw_connection(pg_url) as conn:
            keys = conn.execute("SELECT key IS NULL, destroyed_at IS NOT NULL FROM ledger_keys")
            assert keys.fetchall() == [(True, True)]
        # the read models still answer, with the content erased
        assert led.tenant("usr_a").conversation("sess_1").messages[0]["content"] == ERASED
        assert led.tenant("usr_a").run_metadata(run_id).total_tokens == 1240
        paged = led.tenant("usr_a").conversation("sess_long").messages
        assert len(paged) == 140 and {m["content"] for m in paged} == {ERASED}


def test_the_chain_covers_the_key_id(pg_url: str) -> None:
    with ledger.connect(pg_url) as led:
        run_id = _record(led, "usr_a")
        with raw_connection(pg_url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "UPDATE ledger_events SET key_id = 'k_other' WHERE run_id = %s AND version = 2",
                (run_id,),
            )
        (problem,) = led.auditor().verify().problems
        assert (problem.run_id, problem.version) == (run_id, 2)


def test_the_app_role_cannot_destroy_or_read_keys_of_others(pg_url: str) -> None:
    with ledger.connect(pg_url) as led:
        _record(led, "usr_a")
        _record(led, "usr_b")
    with raw_connection(pg_url, autocommit=True) as conn:
        conn.execute("SET ROLE ledger_app")
        conn.execute("SELECT set_config('ledger.user_id', 'usr_b', false)")
        assert conn.execute("SELECT DISTINCT user_id FROM ledger_keys").fetchall() == [("usr_b",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE ledger_keys SET key = NULL")


# -- the command --------------------------------------------------------------------------


def test_ledger_forget_on_the_command_line(pg_url: str) -> None:
    with ledger.connect(pg_url) as led:
        run_id = _record(led, "usr_a")
    done = ledger_cli(pg_url, "forget", "--user", "usr_a", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["destroyed_keys"]
    shown = ledger_cli(pg_url, "replay", run_id, "--user", "usr_a", "--json")
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout and ERASED in shown.stdout
    assert ledger_cli(pg_url, "verify").returncode == 0
    missing = ledger_cli(pg_url, "forget")
    assert missing.returncode == 2 and "--user" in missing.stderr
    unknown = ledger_cli(pg_url, "forget", "--user", "usr_typo")
    assert unknown.returncode == 1 and "user 'usr_typo' not found" in unknown.stderr
    # Nothing recorded: the log never learns the id of someone it did not hold.
    with ledger.connect(pg_url) as led:
        assert {r.user_id for r in led.auditor().runs()} == {"usr_a"}
    again = ledger_cli(pg_url, "forget", "--user", "usr_a")  # known: recorded again
    assert again.returncode == 0 and "destroyed 0 keys" in again.stdout


def test_an_append_under_a_destroyed_key_writes_nothing(led: ledger.Ledger) -> None:
    """Not even the run's registration (no run without its first events)."""
    from datetime import UTC, datetime

    from ledger.chain import GENESIS, Unsealed, seal
    from ledger.records import RunAppend

    store = led.store
    key_id, _ = store.add_key("usr_a", "k_doomed", bytes(32))
    store.destroy_keys("usr_a")
    events = seal(
        "usr_a",
        "sess_1",
        "run_doomed",
        0,
        GENESIS,
        [Unsealed("message_received", 1, datetime.now(UTC), b'{"content":"x"}', key_id=key_id)],
    )
    with pytest.raises(ledger.KeyErased):
        store.append([RunAppend("usr_a", "sess_1", "run_doomed", 0, GENESIS, events)])
    assert store.run_head("usr_a", "run_doomed") is None


def test_jsonl_appends_are_sealed_too(pg_url: str) -> None:
    line = json.dumps(
        {
            "user_id": "usr_a",
            "session_id": "sess_1",
            "run_id": "run_jsonl",
            "type": "message_received",
            "occurred_at": "2025-03-15T10:22:31Z",
            "data": {"role": "user", "content": SECRET},
        }
    )
    done = ledger_cli(pg_url, "append", "-", stdin=line + "\n")
    assert done.returncode == 0, done.stderr
    assert _tables_holding(pg_url, SECRET) == []
    with ledger.connect(pg_url) as led:
        assert led.tenant("usr_a").events("run_jsonl")[-1].data["content"] == SECRET
    forged = line.replace(SECRET, MARKER.replace("\x00", "\\u0000") + "k_x/AAAA")
    refused = ledger_cli(pg_url, "append", "-", stdin=forged + "\n")
    assert refused.returncode == 2 and "seal marker" in refused.stderr


def test_an_export_made_after_the_erasure_holds_no_content(
    led: ledger.Ledger, tmp_path: Any
) -> None:
    from ledger.export import export_user, verify_export

    _record(led, "usr_a")
    export_user(led.auditor(), "usr_a", tmp_path / "before")
    assert SECRET in (tmp_path / "before" / "events.jsonl").read_text()
    led.forget("usr_a")
    export_user(led.auditor(), "usr_a", tmp_path / "after")
    text = (tmp_path / "after" / "events.jsonl").read_text()
    assert SECRET not in text and ERASED in text
    assert verify_export(tmp_path / "after").ok


def test_a_token_moved_into_another_users_data_is_unreadable_not_a_crash(pg_url: str) -> None:
    """Tampering that copies A's sealed content into B's events: B's reader never opens
    it (the key and the user are bound into every token), and verify names the row."""
    from ledger.personal import UNREADABLE

    with ledger.connect(pg_url) as led:
        a_run, b_run = _record(led, "usr_a"), _record(led, "usr_b")
        with raw_connection(pg_url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "UPDATE ledger_events b SET payload = a.payload FROM ledger_events a"
                " WHERE a.run_id = %s AND b.run_id = %s AND a.version = 2 AND b.version = 2",
                (a_run, b_run),
            )
            # and inside B's own token of version 3, one character changed
            conn.execute(
                "UPDATE ledger_events SET payload = overlay(payload placing"
                " (CASE WHEN substring(payload from 95 for 1) = 'A'::bytea"
                " THEN 'B' ELSE 'A' END)::bytea from 95 for 1)"
                " WHERE run_id = %s AND version = 3",
                (b_run,),
            )
        events = led.tenant("usr_b").events(b_run)
        moved, altered = events[1].data, events[2].data
        assert moved["content"] == ERASED  # no key of B's opens it: nothing to show
        assert altered["content"] == UNREADABLE  # B's key, but not B's ciphertext
        assert "usr_a" not in json.dumps(moved)  # A's message never shows up in B's data
        problems = led.auditor().verify().problems
        assert [(p.run_id, p.version) for p in problems] == [(b_run, 2)]


#: A ``forget`` killed (SIGKILL) between destroying the keys and recording the erasure.
_KILLED_FORGET = """
import os, signal, sys
import ledger
from ledger.tenant import Tenant

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

Tenant.start_run = die  # the erasure's run: the keys are already destroyed by then
with ledger.connect(sys.argv[1]) as led:
    led.forget("usr_a")
"""


def test_forget_killed_after_destroying_the_keys_is_completed_by_running_it_again(
    url: str,
) -> None:
    with ledger.connect(url, encrypt=True) as led:
        run_id = _record(led, "usr_a")
        (key_id,) = led.store.key_ids("usr_a")
    killed = subprocess.run([sys.executable, "-c", _KILLED_FORGET, url], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    with ledger.connect(url, encrypt=True) as led:  # the content is gone, unrecorded yet
        assert SECRET not in _everything_readable(led, "usr_a", run_id)
        assert [r.run_id for r in led.auditor().runs()] == [run_id]
    done = ledger_cli(url, "forget", "--user", "usr_a", "--json")
    assert done.returncode == 0, done.stderr
    with ledger.connect(url, encrypt=True) as led:
        erasure_run = json.loads(done.stdout)["run_id"]
        (record,) = [e for e in led.tenant("usr_a").events(erasure_run) if e.type == "user_erased"]
        assert record.data["key_ids"] == [key_id]  # named, though destroyed by the killed run
        assert led.auditor().verify().ok


def test_forget_on_sqlite_never_leaves_the_old_key_in_the_files_unsaid(tmp_path: Any) -> None:
    """The destroyed key's old bytes leave the SQLite files only once the WAL is
    checkpointed and truncated, which waits for every reader of the file: while one
    holds a read open, forget says so (exit 1) and records nothing; run again once it
    has ended, it completes."""
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}?timeout=0.2"
    with ledger.connect(url, encrypt=True) as led:
        run_id = _record(led, "usr_a")
        (key_id,) = led.store.key_ids("usr_a")
        key = led.store.read_key("usr_a", key_id)
    assert key is not None

    def files_holding_the_key() -> list[str]:
        return [p.name for p in tmp_path.iterdir() if key in p.read_bytes()]

    reader = sqlite3.connect(path)  # another process's read, in progress
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM ledger_events").fetchone()
    held = ledger_cli(url, "forget", "--user", "usr_a")
    assert held.returncode == 1 and f"still in {path}" in held.stderr, held.stderr
    assert "forget --user usr_a' again" in held.stderr and "Traceback" not in held.stderr
    assert files_holding_the_key() != []
    reader.rollback()
    reader.close()
    done = ledger_cli(url, "forget", "--user", "usr_a", "--json")
    assert done.returncode == 0, done.stderr
    assert files_holding_the_key() == []
    with ledger.connect(url, encrypt=True) as led:
        assert SECRET not in _everything_readable(led, "usr_a", run_id)
        erasure_run = json.loads(done.stdout)["run_id"]
        (record,) = [e for e in led.tenant("usr_a").events(erasure_run) if e.type == "user_erased"]
        assert record.data["key_ids"] == [key_id]


def test_aggregate_state_stored_through_the_eventsourcing_recorder_is_never_reported_erased(
    url: str,
) -> None:
    """An eventsourcing application kept under a user's tenant (``LEDGER_TENANT``) stores
    its aggregates' state byte for byte, sealed by nobody: ``forget`` cannot shred it,
    so it must count it as content in the clear, never report the user forgotten."""
    import uuid

    from eventsourcing.persistence import StoredEvent

    from ledger.recorder import LedgerRecorder

    state = json.dumps({"owner": SECRET}).encode()
    with ledger.connect(url, encrypt=True) as led:
        LedgerRecorder(led.store, "usr_a").insert_events(
            [StoredEvent(uuid.uuid4(), 1, "bank:AccountOpened", state)]
        )
        with pytest.raises(ledger.NotErasable, match=r"1 of their events"):
            led.forget("usr_a")  # nothing else of theirs: no key, nothing recorded
        assert {r.session_id for r in led.auditor().runs()} == {""}
        _record(led, "usr_a")
    done = ledger_cli(url, "forget", "--user", "usr_a", "--json")
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["plain_events"] == 1
    assert "only partly erased: 1 of their events" in done.stderr


# -- forget racing an append (Postgres: appends check the key at READ COMMITTED) ---------


@contextmanager
def _append_held_open(
    writer: ledger.Ledger, run: ledger.Run, content: str
) -> Iterator[Callable[[], None]]:
    """``run.message_received(content)`` in a thread, held open inside its transaction
    after the key check (``writer``'s ``before_commit`` hook) until the yielded function
    is called or the block ends; re-raises what the append raised."""
    checked, release = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def hold() -> None:
        checked.set()
        release.wait(120)

    def append() -> None:
        try:
            run.message_received(content=content)
        except BaseException as exc:
            failed.append(exc)

    writer.store.before_commit = hold
    appending = threading.Thread(target=append)
    appending.start()
    try:
        assert checked.wait(120), "the append never reached its commit"

        def commit() -> None:
            release.set()
            appending.join()
            writer.store.before_commit = None

        yield commit
    finally:
        release.set()
        appending.join()
    if failed:
        raise failed[0]


def _log_place(led: ledger.Ledger, user_id: str, run_id: str, type_: str) -> tuple[int, int]:
    """Where the run's (first) event of ``type_`` sits in log order: (tx_id, position)."""
    (place,) = [
        (r.tx_id, r.position) for r in led.store.read_run(user_id, run_id) if r.type == type_
    ][:1]
    return place


def test_forget_is_recorded_after_every_append_that_raced_it(pg_url: str) -> None:
    """An append whose transaction saw the key live before forget destroyed it commits
    after that: forget waits for it before recording the erasure, so the log shows the
    append (reading as erased) before the erasure, never stored "after" it; the writer's
    next append finds the key destroyed and goes under a fresh one."""
    with (
        ledger.connect(pg_url, encrypt=True) as writer,
        ledger.connect(pg_url, encrypt=True) as admin,
    ):
        run = writer.tenant("usr_a").start_run(session_id="sess_1")
        done: list[ledger.Erasure] = []
        forgetting = threading.Thread(target=lambda: done.append(admin.forget("usr_a")))
        with _append_held_open(writer, run, "raced") as commit:
            forgetting.start()
            while admin.store.live_key("usr_a") is not None:  # destroyed, append still open
                time.sleep(0.01)
            forgetting.join(timeout=2)
            returned_early = not forgetting.is_alive()
            commit()
        forgetting.join()
        assert not returned_early, "forget returned while an append under the key was open"
        run.message_received(content="after")  # the cached key is dead: a fresh key
        (erasure,) = done
        erased = _log_place(admin, "usr_a", erasure.run_id, "user_erased")
        assert _log_place(admin, "usr_a", run.run_id, "message_received") < erased
        events = writer.tenant("usr_a").events(run.run_id)
        assert [e.data.get("content") for e in events[1:]] == [ERASED, "after"]
        assert admin.auditor().verify().ok


def test_forget_held_up_by_a_transaction_says_so_and_completes_when_run_again(
    pg_url: str,
) -> None:
    """A transaction that began before the keys were destroyed and does not end keeps
    forget from recording the erasure: after ``forget_timeout`` it exits 1 with one line
    saying what was done and what to do, and run again once it has ended, it records."""
    with ledger.connect(pg_url, encrypt=True) as led:
        run_id = _record(led, "usr_a")
    stuck = raw_connection(pg_url)  # e.g. a session left idle in a transaction
    stuck.execute("SELECT 1").fetchone()
    (pid,) = stuck.execute("SELECT pg_backend_pid()").fetchone() or ()
    held = ledger_cli(f"{pg_url}&forget_timeout=0.5", "forget", "--user", "usr_a")
    assert held.returncode == 1 and "Traceback" not in held.stderr, held.stderr
    assert len(held.stderr.strip().splitlines()) == 1 and f"pid {pid}" in held.stderr
    assert "forget --user usr_a' again" in held.stderr
    with ledger.connect(pg_url, encrypt=True) as led:  # the content is gone, unrecorded yet
        assert SECRET not in _everything_readable(led, "usr_a", run_id)
        assert [r.run_id for r in led.auditor().runs()] == [run_id]
    stuck.rollback()
    stuck.close()
    done = ledger_cli(pg_url, "forget", "--user", "usr_a", "--json")
    assert done.returncode == 0, done.stderr
    with ledger.connect(pg_url, encrypt=True) as led:
        erasure_run = json.loads(done.stdout)["run_id"]
        assert [e.type for e in led.tenant("usr_a").events(erasure_run)][1] == "user_erased"


_WAITING_ON_A_LOCK = (
    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def test_an_append_that_drew_no_transaction_id_yet_is_waited_for_too(pg_url: str) -> None:
    """The key check and the first insert are one statement, but its snapshot is taken
    before its transaction draws an id (at the insert), which may wait: here a run's
    registration waits on another transaction holding the same run id, so the append's
    id is drawn after the erasure's unless forget waits for it."""
    with (
        ledger.connect(pg_url, encrypt=True) as writer,
        ledger.connect(pg_url, encrypt=True) as admin,
    ):
        writer.tenant("usr_a").start_run(session_id="sess_1", metadata={"note": "first"})
        blocker = raw_connection(pg_url)
        blocker.execute(
            "INSERT INTO ledger_runs (run_id, user_id, session_id)"
            " VALUES ('run_raced', 'usr_a', 's')"
        )
        started = threading.Thread(
            target=writer.tenant("usr_a").start_run,
            kwargs={"session_id": "sess_1", "run_id": "run_raced", "metadata": {"note": "raced"}},
        )
        started.start()
        with raw_connection(pg_url, autocommit=True) as watcher:  # until it waits on the blocker
            while not watcher.execute(_WAITING_ON_A_LOCK).fetchone():
                time.sleep(0.01)
        done: list[ledger.Erasure] = []
        forgetting = threading.Thread(target=lambda: done.append(admin.forget("usr_a")))
        forgetting.start()
        while admin.store.live_key("usr_a") is not None:
            time.sleep(0.01)
        forgetting.join(timeout=2)
        blocker.rollback()  # the run's registration goes ahead, under the key it checked
        blocker.close()
        started.join()
        forgetting.join()
        (erasure,) = done
        erased = _log_place(admin, "usr_a", erasure.run_id, "user_erased")
        assert _log_place(admin, "usr_a", "run_raced", "run_started") < erased
