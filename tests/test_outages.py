"""The database goes away under a running agent: a server restart (every connection
cut), and a connection lost in the middle of an append. Nothing is lost, nothing is
recorded twice, and a turn after the server is back just works."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import pytest
from eventsourcing.persistence import OperationalError, StoredEvent

import ledger
from ledger.jsonl import append_jsonl
from ledger.recorder import LedgerRecorder
from ledger.store.pg_pool import LifoPool
from ledger.store.postgres import PostgresStore, migrate
from tests.pg import cut_connections
from tests.proxy import FaultyProxy
from tests.writers import turn


@pytest.fixture
def led(pg_url: str) -> Iterator[ledger.Ledger]:
    with ledger.connect(pg_url) as connection:
        yield connection


def pool_of(led: ledger.Ledger) -> LifoPool:
    store = led.store
    assert isinstance(store, PostgresStore)
    return store._pool


def test_a_turn_after_a_server_restart_just_works(led: ledger.Ledger, pg_database: str) -> None:
    """The pool checks a connection that sat idle (here longer than its 1 s) before
    handing it out, so the dead ones a restart left behind are replaced, not used."""
    run = led.tenant("usr_a").start_run(session_id="s")
    turn(run, 1)
    assert cut_connections(pg_database) >= 1
    time.sleep(pool_of(led).idle_check + 0.1)  # the agent waits on its model meanwhile
    turn(run, 2)
    assert [e.version for e in led.tenant("usr_a").events(run.run_id)] == list(range(1, 12))


def test_a_read_on_a_connection_lost_in_use_is_tried_again(
    led: ledger.Ledger, pg_database: str
) -> None:
    """A connection used just before the restart is not checked (too recent); a read
    that finds it dead runs once more on another, and the pool checks the rest."""
    run = led.tenant("usr_a").start_run(session_id="s")
    turn(run, 1)
    pool_of(led).idle_check = 3600.0  # nothing counts as idle: no check before use
    assert cut_connections(pg_database) >= 1
    assert [e.version for e in led.tenant("usr_a").events(run.run_id)] == list(range(1, 7))
    turn(run, 2)  # the append after it finds a checked connection too
    assert run.version == 11


def test_connections_in_steady_use_are_not_checked(
    led: ledger.Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check costs a round trip, so a writer turning over without pause pays none."""
    run = led.tenant("usr_a").start_run(session_id="s")
    turn(run, 0)  # the pool's first connection may be checked once
    checks: list[object] = []
    original = LifoPool.check_connection
    monkeypatch.setattr(LifoPool, "check_connection", staticmethod(checks.append))
    for n in range(1, 20):
        turn(run, n)
    assert checks == []
    pool_of(led).idle_check = 0.0  # ...and one idle for longer than idle_check is
    monkeypatch.setattr(
        LifoPool, "check_connection", staticmethod(lambda conn: checks.append(original(conn)))
    )
    turn(run, 20)
    assert len(checks) >= 1


@pytest.fixture
def proxy(pg_url: str) -> Iterator[tuple[FaultyProxy, str]]:
    """A proxy in front of the test server, and the test ledger's URL through it."""
    parts = urlsplit(pg_url)
    with FaultyProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as faulty:
        netloc = f"{parts.username}@127.0.0.1:{faulty.port}" if parts.username else None
        yield faulty, urlunsplit(parts._replace(netloc=netloc or f"127.0.0.1:{faulty.port}"))


@pytest.mark.parametrize("lost", ["request", "reply"])
def test_an_append_cut_off_mid_flight_is_stored_exactly_once(
    proxy: tuple[FaultyProxy, str], lost: str
) -> None:
    """The connection dies with the append on the wire. Lost on the way in: the server
    never saw it, and the handle appends it again. Lost on the way back: the server
    stored it, and the handle sees from the chain that it did. Either way the turn
    returns normally and is stored once."""
    faulty, url = proxy
    with ledger.connect(url) as led:
        t = led.tenant("usr_a")
        run = t.start_run(session_id="s")
        turn(run, 1)
        faulty.lose(lost)
        turn(run, 2)
        assert faulty.fired == [lost]
        assert run.version == 11
        events = t.events(run.run_id)
        assert [e.version for e in events] == list(range(1, 12))
        asked = [e.data["content"][:15] for e in events if e.type == "message_received"]
        assert asked == ["user question 1", "user question 2"]
        assert led.auditor().verify().ok
        turn(run, 3)  # and the handle goes on from the right head
        assert run.version == 16


def test_an_append_whose_outcome_cannot_be_known_yet_says_so(
    proxy: tuple[FaultyProxy, str],
) -> None:
    """The server is gone for good mid-append (here: the proxy): the error says the
    outcome is unknown and how to find out; nothing is appended twice later."""
    faulty, url = proxy
    with ledger.connect(url) as led:
        pool_of(led).timeout = 1.0  # how long to wait for a connection (default 30 s)
        run = led.tenant("usr_a").start_run(session_id="s")
        turn(run, 1)
        faulty.lose("reply", then_refuse=True)
        with pytest.raises(ledger.StoreUnavailable) as raised:
            turn(run, 2)
        assert faulty.fired == ["reply"]
        assert raised.value.in_doubt
        assert "whether this append was stored is not known yet" in str(raised.value)
        assert f"it was if run {run.run_id!r} then has version 11" in str(raised.value)
        assert run.version == 6  # the handle does not guess


def test_ledger_tail_follows_on_across_a_server_restart(
    pg_url: str, proxy: tuple[FaultyProxy, str]
) -> None:
    """``ledger tail`` is for watching live agents: a restart that takes a while gets
    lines on stderr, not an exit, and the events after it still show."""
    faulty, url = proxy
    with ledger.connect(pg_url) as led:
        run = led.tenant("usr_a").start_run(session_id="s")
    url += "&pool_timeout=0.5"  # the outage outlasts a call's wait for a connection
    tail = subprocess.Popen(
        [sys.executable, "-m", "cli", "--url", url, "tail", "--poll", "0.05", "--for", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in tail.stdout or ()], daemon=True).start()

    def shows(version: int) -> None:
        deadline = time.monotonic() + 30
        while f"/{version} " not in lines.get(timeout=max(0.0, deadline - time.monotonic())):
            pass

    try:
        time.sleep(1.0)  # tail starts at the log's head: let it get there
        with ledger.connect(pg_url) as led:  # (the writer does not go through the proxy)
            turn(led.tenant("usr_a").run(run.run_id), 1)
            shows(6)
            faulty.down(1.5)
            time.sleep(2.0)
            turn(led.tenant("usr_a").run(run.run_id), 2)
        shows(11)
        assert tail.poll() is None
    finally:
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=30)
    assert tail.returncode == 0, err
    assert "store unavailable" in err and "store available again" in err


@pytest.mark.parametrize("lost", ["request", "reply"])
def test_a_jsonl_append_cut_off_mid_flight_is_stored_exactly_once(
    proxy: tuple[FaultyProxy, str], lost: str
) -> None:
    """``ledger append`` (one transaction over several runs) settles the same way."""
    faulty, url = proxy
    lines = [
        json.dumps(
            {
                "user_id": "usr_a",
                "session_id": "s",
                "run_id": run_id,
                "type": "message_received",
                "occurred_at": "2025-03-15T10:22:31Z",
                "data": {"content": f"hello {n}"},
            }
        )
        for run_id in ("run_j1", "run_j2")
        for n in range(3)
    ]
    with ledger.connect(url) as led:
        # Several runs in one transaction: the general statement, not ledger_append.
        faulty.lose(lost, mark=b"INSERT INTO ledger_events")
        summary = append_jsonl(led.store, lines, led.settings.max_event_bytes, led.keyring)
        assert faulty.fired == [lost]
        assert summary.runs == {"run_j1": 3, "run_j2": 3}
        for run_id in ("run_j1", "run_j2"):
            events = led.tenant("usr_a").events(run_id)
            assert [e.version for e in events] == [1, 2, 3]


def test_how_long_a_call_waits_for_a_connection_is_set_in_the_url(pg_url: str) -> None:
    with ledger.connect(pg_url + "&pool_timeout=2.5") as led:
        assert pool_of(led).timeout == 2.5
        led.tenant("usr_a").start_run(session_id="s")  # and the URL still works
    for bad in ("0", "-1", "soon", ""):
        with pytest.raises(ledger.InvalidSetting, match="bad pool_timeout"):
            ledger.connect(pg_url + f"&pool_timeout={bad}")
    # Everything else that takes a ledger URL keeps it from libpq too (``ledger init``'s
    # migrate was handed it and refused the URL).
    assert migrate(pg_url + "&pool_timeout=2.5") == 0


def test_an_append_that_never_got_a_connection_is_not_in_doubt(
    proxy: tuple[FaultyProxy, str],
) -> None:
    """With the server down, an append gets no connection at all: nothing was sent, so
    it fails after one wait for a connection, with no second wait to settle it."""
    faulty, url = proxy
    with ledger.connect(url + "&pool_timeout=0.5") as led:
        run = led.tenant("usr_a").start_run(session_id="s")
        turn(run, 1)  # the user's key is cached from here on
        faulty.down(3600)
        pool_of(led).idle_check = 0.0  # the pool finds its connection dead before use
        with pytest.raises(ledger.StoreUnavailable) as raised:
            turn(run, 2)
    assert not raised.value.in_doubt
    assert "no Postgres connection available" in str(raised.value)
    assert "not known yet" not in str(raised.value)


def test_the_eventsourcing_adapter_reports_an_outage_as_the_librarys_error(
    proxy: tuple[FaultyProxy, str],
) -> None:
    """Applications built on the eventsourcing library catch its ``OperationalError``
    for a lost database, as its own recorders raise it."""
    faulty, url = proxy
    with ledger.connect(url + "&pool_timeout=0.5") as led:
        recorder = LedgerRecorder(led.store)
        assert recorder.max_notification_id() is None
        faulty.down(3600)
        pool_of(led).idle_check = 0.0
        with pytest.raises(OperationalError, match="no Postgres connection available"):
            recorder.max_notification_id()
        with pytest.raises(OperationalError):
            recorder.insert_events(
                [StoredEvent(originator_id=uuid4(), originator_version=1, topic="t", state=b"{}")]
            )
