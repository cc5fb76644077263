"""Postgres-specific behaviour of PostgresStore: exact storage, concurrency, order, immutability.

The backend-neutral contract is tested elsewhere against every store; here we test what
only a real Postgres can show (other transactions, triggers, migrations under a lock).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import psycopg
import pytest
from psycopg import sql

import ledger
from ledger.chain import GENESIS, Unsealed, recompute, seal
from ledger.errors import (
    ConcurrencyError,
    InvalidEvent,
    NotFound,
    RunIdTaken,
    StoreUnavailable,
)
from ledger.recorder import DEFAULT_TENANT
from ledger.records import START, Record, RunAppend, Tracking
from ledger.store.base import RecordConflict
from ledger.store.postgres import PostgresStore, migrate, split_url
from ledger.store.postgres_schema import LATEST, STEPS
from ledger.store.postgres_schema import migrate as migrate_conn
from tests.pg import migrate_until

T0 = datetime(2024, 5, 17, 9, 30, 1, 123456, tzinfo=UTC)


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    with PostgresStore.from_url(pg_url) as s:
        yield s


@pytest.fixture
def raw(pg_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection whose search_path is the store's schema."""
    conninfo, schema = split_url(pg_url)
    with psycopg.connect(conninfo, autocommit=True, options=f"-c search_path={schema}") as c:
        yield c


def start(user: str, run: str, *payloads: bytes, session: str = "s1") -> RunAppend:
    events = seal(
        user,
        session,
        run,
        0,
        GENESIS,
        [Unsealed(type="message_received", schema=1, occurred_at=T0, payload=p) for p in payloads],
    )
    return RunAppend(user, session, run, 0, GENESIS, events)


def follow(head: Record | RunAppend, *payloads: bytes) -> RunAppend:
    """An append continuing right after ``head`` (a stored record or a previous append)."""
    if isinstance(head, RunAppend):
        last = head.events[-1]
        user, session, run, version, digest = (
            head.user_id,
            head.session_id,
            head.run_id,
            last.version,
            last.hash,
        )
    else:
        user, session, run, version, digest = (
            head.user_id,
            head.session_id,
            head.run_id,
            head.version,
            head.hash,
        )
    events = seal(
        user,
        session,
        run,
        version,
        digest,
        [
            Unsealed(type="tool_called", schema=2, occurred_at=T0 + timedelta(seconds=1), payload=p)
            for p in payloads
        ],
    )
    return RunAppend(user, session, run, version, digest, events)


def tamper_payload(
    conn: psycopg.Connection[tuple[object, ...]], run_id: str, version: int, payload: bytes
) -> None:
    """What only a superuser can do: bypass the immutability triggers and edit a payload."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "UPDATE ledger_events SET payload = %s WHERE run_id = %s AND version = %s",
            (payload, run_id, version),
        )


# -- storage -------------------------------------------------------------------------


def test_round_trip_exact(store: PostgresStore) -> None:
    user, run = "user-\U0001f600-ü", "run-\U00010348"
    big = bytes(range(256)) * 4096  # 1 MiB, every byte value
    nul = b"\x00\x00a\x00"
    occurred = datetime(2024, 1, 2, 3, 4, 5, 999999, tzinfo=timezone(timedelta(hours=-7)))
    events = seal(
        user,
        "sess-\U0001f680",
        run,
        0,
        GENESIS,
        [
            Unsealed("message_received", 1, occurred, nul, key_id="k-\U0001f511"),
            Unsealed("model_responded", 3, T0, big),
            Unsealed("tool_called", 1, T0, b""),
        ],
    )
    store.add_key(user, "k-\U0001f511", bytes(32))
    stored = store.append([RunAppend(user, "sess-\U0001f680", run, 0, GENESIS, events)])
    assert [r.version for r in stored] == [1, 2, 3]
    positions = [r.position for r in stored]
    assert positions == sorted(positions) and len({r.tx_id for r in stored}) == 1
    assert all(r.recorded_at.utcoffset() == timedelta(0) for r in stored)

    by_run = store.read_run(user, run)
    assert by_run == stored
    assert store.read_log(START) == stored
    assert by_run[0].payload == nul and by_run[1].payload == big and by_run[2].payload == b""
    assert by_run[0].occurred_at == occurred and by_run[0].key_id == "k-\U0001f511"
    assert by_run[0].occurred_at.utcoffset() == timedelta(0)
    prev = GENESIS
    for r in by_run:  # the chain verifies from the stored rows alone
        assert r.prev_hash == prev and recompute(r, prev) == r.hash
        prev = r.hash

    head = store.run_head(user, run)
    assert head is not None and (head.version, head.hash) == (3, stored[-1].hash)
    assert store.list_runs(user) == [head]
    assert store.read_run(None, run, after_version=1, upto_version=2) == stored[1:2]
    assert store.read_run(user, run, desc=True, limit=1) == stored[-1:]
    assert store.max_position() == stored[-1].position


def test_start_without_events_is_refused_and_registers_nothing(store: PostgresStore) -> None:
    with pytest.raises(InvalidEvent, match="must hold its first event"):
        store.append([RunAppend("u1", "s1", "r1", 0, GENESIS, ())])
    assert store.run_head(None, "r1") is None


def test_the_append_function_registers_no_run_without_events(
    store: PostgresStore, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A client calling ``ledger_append`` itself with no events gets 0 inserted and no
    run registered: verify reports a registered run without events as emptied."""
    empty = "ARRAY[]::bigint[], ARRAY[]::text[], ARRAY[]::smallint[], ARRAY[]::timestamptz[]"
    inserted = raw.execute(
        f"SELECT ledger_append(NULL, NULL, 'u1', 'r1', 's1', {empty}, ARRAY[]::bytea[],"
        " ARRAY[]::text[], ARRAY[]::bytea[], ARRAY[]::bytea[], 0, %s, NULL, true)",
        (GENESIS,),
    ).fetchone()
    assert inserted == (0,)
    assert store.run_head(None, "r1") is None


def test_list_runs_oldest_first_and_scoped(store: PostgresStore) -> None:
    store.append([start("u1", "a", b"1")])
    store.append([start("u1", "b", b"1", session="s2")])
    store.append([start("u2", "c", b"1")])
    assert [h.run_id for h in store.list_runs("u1")] == ["a", "b"]
    assert [h.run_id for h in store.list_runs("u1", "s2")] == ["b"]
    assert [h.run_id for h in store.list_runs()] == ["a", "b", "c"]


# -- optimistic concurrency and tenants ----------------------------------------------


def test_stale_head_writes_nothing_and_burns_no_position(store: PostgresStore) -> None:
    first = start("u1", "r1", b"a", b"b")
    stored = store.append([first])
    store.append([follow(first, b"c")])
    with pytest.raises(ConcurrencyError):
        store.append([follow(first, b"stale")])
    with pytest.raises(ConcurrencyError):  # run exists for this tenant
        store.append([start("u1", "r1", b"again")])
    assert [r.payload for r in store.read_run("u1", "r1")] == [b"a", b"b", b"c"]
    nxt = store.append([follow(store.read_run("u1", "r1")[-1], b"d")])
    assert nxt[0].position == stored[-1].position + 2  # the losers drew no position


def test_other_tenants_run(store: PostgresStore) -> None:
    first = start("alice", "r1", b"a")
    store.append([first])
    with pytest.raises(RunIdTaken):
        store.append([start("bob", "r1", b"x")])
    bobs = RunAppend("bob", "s1", "r1", 1, first.events[-1].hash, follow(first, b"x").events)
    with pytest.raises(NotFound):
        store.append([bobs])
    with pytest.raises(NotFound):  # indistinguishable from a run that does not exist
        store.append([RunAppend("bob", "s1", "nope", 1, GENESIS, bobs.events)])
    assert store.run_head("bob", "r1") is None
    assert store.read_run("bob", "r1") == []
    assert store.read_log(START, user_id="bob") == []
    assert len(store.read_run("alice", "r1")) == 1


def test_racing_writers_exactly_one_wins(store: PostgresStore) -> None:
    first = start("u1", "r1", b"a")
    store.append([first])
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            store.append([follow(first, f"writer {i}".encode())])
            outcomes.append("ok")
        except ConcurrencyError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    assert [r.version for r in store.read_run("u1", "r1")] == [1, 2]


def test_many_appends_are_atomic(store: PostgresStore) -> None:
    a = start("u1", "ra", b"a1")
    store.append([a])
    # Second item is stale: the first (a new run) must not be stored either.
    with pytest.raises(ConcurrencyError):
        store.append([start("u1", "rb", b"b1"), follow(a, b"a2"), follow(a, b"a2-stale")])
    assert store.run_head("u1", "rb") is None
    assert len(store.read_run("u1", "ra")) == 1
    # A unique violation inside the pipeline (duplicate version) rolls back as well.
    dup = start("u1", "rd", b"x")
    dup = RunAppend("u1", "s1", "rd", 0, GENESIS, dup.events + dup.events)
    with pytest.raises(ConcurrencyError):
        store.append([start("u1", "rc", b"c1"), dup])
    assert store.run_head("u1", "rc") is None and store.run_head("u1", "rd") is None
    # A tracking conflict rolls back the events.
    store.insert_tracking(Tracking("u1", "proj", 10))
    with pytest.raises(RecordConflict):
        store.append([follow(a, b"a2")], tracking=Tracking("u1", "proj", 10))
    assert len(store.read_run("u1", "ra")) == 1 and store.max_tracking("u1", "proj") == 10
    # And it all works together: a new run and its continuation in one call.
    b = start("u1", "rb", b"b1")
    stored = store.append(
        [b, follow(b, b"b2"), follow(a, b"a2")], tracking=Tracking("u1", "proj", 11)
    )
    assert [(r.run_id, r.version) for r in stored] == [("rb", 1), ("rb", 2), ("ra", 2)]
    assert len({r.tx_id for r in stored}) == 1
    assert store.max_tracking("u1", "proj") == 11
    assert store.read_log(START)[1:] == stored


def test_tracking(store: PostgresStore) -> None:
    assert store.max_tracking("u1", "p") is None
    store.insert_tracking(Tracking("u1", "p", 3))
    for stale in (3, 2):
        with pytest.raises(RecordConflict):
            store.insert_tracking(Tracking("u1", "p", stale))
    store.append([], tracking=Tracking("u1", "p", 7))
    assert store.max_tracking("u1", "p") == 7
    # Another tenant's application of the same name follows its upstream apart.
    assert store.max_tracking("u2", "p") is None
    store.insert_tracking(Tracking("u2", "p", 1))
    assert (store.max_tracking("u1", "p"), store.max_tracking("u2", "p")) == (7, 1)


# -- the global log (invariant 6) ----------------------------------------------------


def test_read_log_stops_at_the_oldest_open_transaction(
    store: PostgresStore, raw: psycopg.Connection[tuple[object, ...]], pg_url: str
) -> None:
    a = store.append([start("u1", "ra", b"a")])[0]
    conninfo, schema = split_url(pg_url)
    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as slow:
        # The slow writer draws its position first, then commits last.
        row = slow.execute(
            "INSERT INTO ledger_events (user_id, run_id, version, session_id, type, schema,"
            " occurred_at, payload, prev_hash, hash)"
            " VALUES ('u2', 'rs', 1, 's', 't', 1, now(), '\\x00', '\\x00', '\\x00')"
            " RETURNING position, tx_id::text"
        ).fetchone()
        assert row is not None
        slow_pos, slow_tx = int(str(row[0])), int(str(row[1]))
        c = store.append([start("u1", "rc", b"c")])[0]
        assert c.position > slow_pos and c.tx_id > slow_tx
        # Committed c is behind an open transaction: nobody may see it yet.
        assert store.read_log(START) == [a]
        assert store.read_log(a.cursor) == []
        assert store.max_position() == a.position
        raw_seen = raw.execute(
            "SELECT count(*) FROM ledger_events"
            " WHERE tx_id >= %s::text::xid8 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())",
            (str(slow_tx),),
        ).fetchone()
        assert raw_seen == (0,)
        slow.commit()
    log = store.read_log(a.cursor)
    assert [(r.run_id, r.position) for r in log] == [("rs", slow_pos), ("rc", c.position)]
    assert store.read_log(log[0].cursor) == [c]
    assert store.read_log(START, limit=2) == [a, log[0]]
    assert store.read_log(START, user_id="u1") == [a, c]


def test_notifications_are_a_tenants_aggregate_events_below_the_horizon(
    store: PostgresStore, pg_url: str
) -> None:
    """What the eventsourcing adapter follows: one tenant's rows of no session (agent
    runs always have one), by position, never past an open transaction."""
    a = store.append([start("u1", "agg_a", b"a", session="")])[0]
    store.append([start("u1", "run_x", b"agent", session="s1")])  # an agent run
    store.append([start("u2", "agg_b", b"other", session="")])  # another tenant's
    conninfo, schema = split_url(pg_url)
    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as slow:
        row = slow.execute(
            "INSERT INTO ledger_events (user_id, run_id, version, session_id, type, schema,"
            " occurred_at, payload, prev_hash, hash)"
            " VALUES ('u1', 'agg_s', 1, '', 't', 0, now(), '\\x00', '\\x00', '\\x00')"
            " RETURNING position"
        ).fetchone()
        assert row is not None
        slow_pos = int(str(row[0]))
        c = store.append([start("u1", "agg_c", b"c", session="")])[0]
        assert store.read_notifications("u1", None, 10) == [a]
        assert store.max_notification_id("u1") == a.position
        slow.commit()
    assert [r.position for r in store.read_notifications("u1", None, 10)] == [
        a.position,
        slow_pos,
        c.position,
    ]
    assert [
        r.position for r in store.read_notifications("u1", a.position, 10, inclusive_of_start=False)
    ] == [slow_pos, c.position]
    assert store.read_notifications("u1", None, 10, types=["nope"]) == []
    assert store.max_notification_id("u1") == c.position
    assert [r.run_id for r in store.read_notifications("u2", None, 10)] == ["agg_b"]
    assert (
        store.read_notifications("u3", None, 10) == [] and store.max_notification_id("u3") is None
    )


# -- immutability (invariant 1) ------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_events SET payload = '\\x01'",
        "DELETE FROM ledger_events",
        "TRUNCATE ledger_events",
        "TRUNCATE ledger_events CASCADE",
        "UPDATE ledger_runs SET session_id = 'x'",
        "DELETE FROM ledger_runs",
        "TRUNCATE ledger_runs",
    ],
)
def test_database_refuses_changes(
    store: PostgresStore, raw: psycopg.Connection[tuple[object, ...]], statement: str
) -> None:
    store.append([start("u1", "r1", b"a")])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        raw.execute(statement.encode())
    assert len(store.read_run("u1", "r1")) == 1 and store.run_head("u1", "r1") is not None


def test_superuser_can_tamper_with_triggers_off(
    store: PostgresStore, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    original = store.append([start("u1", "r1", b"hello")])[0]
    tamper_payload(raw, "r1", 1, b"hellO")
    [changed] = store.read_run("u1", "r1")
    assert changed.payload == b"hellO"
    assert recompute(changed, GENESIS) != original.hash  # what `ledger verify` detects


# -- migrations and connections ------------------------------------------------------


def test_migrate_is_idempotent(
    store: PostgresStore, pg_url: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    assert store.migrate() == 0
    assert migrate(pg_url) == 0
    with PostgresStore.from_url(pg_url) as again:
        assert again.list_runs() == []
    versions = raw.execute("SELECT version FROM ledger_schema_version ORDER BY 1").fetchall()
    assert [v for (v,) in versions] == [s.version for s in STEPS] and len(STEPS) == LATEST
    indexes = raw.execute(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'ledger_events'"
        " AND schemaname = current_schema()"
    ).fetchone()
    assert indexes == (3,)  # primary key, log order, the adapter's rows (partial)


def test_migrate_concurrently_on_a_fresh_schema(pg_url: str) -> None:
    conninfo, schema = split_url(pg_url)
    assert schema is not None
    barrier = threading.Barrier(4)
    applied: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                barrier.wait()
                applied.append(migrate_conn(conn, schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(applied) == [0, 0, 0, len(STEPS)]
    with psycopg.connect(conninfo) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchone()
    assert found == (5,)  # runs, events, tracking, keys, schema_version


def test_from_url_keeps_everything_in_its_schema(pg_url: str) -> None:
    conninfo, schema = split_url(pg_url)
    assert schema is not None and "schema" not in conninfo
    with PostgresStore.from_url(pg_url) as s:
        s.append([start("u1", "r1", b"a")])
    with psycopg.connect(conninfo) as conn:
        where = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.ledger_events").format(sql.Identifier(schema))
        ).fetchone()
    assert where == (1,)


def test_libpq_parameters_with_spaces_reach_the_server_from_a_url(pg_url: str) -> None:
    """``options=-c lock_timeout=...`` (how a URL sets a deployment's lock_timeout) keeps
    its space: libpq decodes %20 in a URL, not '+'."""
    url = f"{pg_url}&options=-c%20lock_timeout%3D1234ms&application_name=ledger%20test"
    with PostgresStore.from_url(url) as s, psycopg.connect(s.conninfo) as conn:
        shown = conn.execute(
            "SELECT current_setting('lock_timeout'), current_setting('application_name')"
        ).fetchone()
    assert shown == ("1234ms", "ledger test")


def test_unreachable_server_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        PostgresStore("postgresql://root@127.0.0.1:1/nowhere", connect_timeout=2)


def test_bad_schema_name_is_refused() -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresStore("postgresql://root@127.0.0.1:1/x", schema="Robert'); DROP")


def test_before_commit_hook_runs_inside_the_transaction(
    store: PostgresStore, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    seen: list[object] = []

    def hook() -> None:  # the rows are written but not yet visible to anyone else
        seen.append(raw.execute("SELECT count(*) FROM ledger_events").fetchone())

    store.before_commit = hook
    stored = store.append([start("u1", "r1", b"a", b"b")])
    assert seen == [(0,)] and len(store.read_run("u1", "r1")) == 2 == len(stored)

    def fail() -> None:
        raise RuntimeError("crash before commit")

    store.before_commit = fail
    with pytest.raises(RuntimeError):
        store.append([follow(stored[-1], b"c")])
    assert len(store.read_run("u1", "r1")) == 2


def test_an_append_notifies_listeners_after_commit(pg_url: str) -> None:
    import psycopg as _psycopg

    import ledger as _ledger
    from ledger.store.postgres_schema import NOTIFY_CHANNEL

    with _ledger.connect(pg_url) as led:
        store = led.store
        listener = _psycopg.connect(store.conninfo, autocommit=True)  # type: ignore[attr-defined]
        try:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            led.tenant("usr_a").start_run(session_id="s")
            notices = list(listener.notifies(timeout=2.0, stop_after=1))
        finally:
            listener.close()
    assert [n.payload for n in notices] == [store.schema]  # type: ignore[attr-defined]


def test_appends_inside_the_notify_interval_get_one_trailing_notice(pg_url: str) -> None:
    """The first append notifies at once; the ones right after it are covered by ONE
    notice at the end of the interval (not left for the readers' poll), and closing
    the store sends a notice still pending."""
    import psycopg as _psycopg

    import ledger as _ledger
    from ledger.store.postgres_schema import NOTIFY_CHANNEL

    with _psycopg.connect(split_url(pg_url)[0], autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with _ledger.connect(pg_url) as led:
            store = led.store
            store.notify_interval = 0.5  # type: ignore[attr-defined]
            run = led.tenant("usr_a").start_run(session_id="s")
            assert len(list(listener.notifies(timeout=0.3, stop_after=1))) == 1
            for n in range(3):
                run.message_received(content=f"m{n}")
            committed = time.monotonic()
            assert len(list(listener.notifies(timeout=3.0, stop_after=1))) == 1
            assert time.monotonic() - committed < 2.5  # with the interval, no poll here
            assert list(listener.notifies(timeout=0.8)) == [], "one covers all three"
            run.message_received(content="last")  # due: notifies at once
            run.message_received(content="after")  # inside the interval: pending
        # closed at once: the pending notice was sent, not dropped
        assert len(list(listener.notifies(timeout=1.0))) == 2


def test_settle_waits_for_transactions_running_at_the_call(
    store: PostgresStore, pg_url: str
) -> None:
    conninfo, schema = split_url(pg_url)
    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as slow:
        slow.execute("SELECT pg_current_xact_id()")  # holds the horizon back
        a = store.append([start("u1", "ra", b"a")])[0]
        assert store.read_log(START) == []
        assert store.settle(timeout=0.2) is False
        slow.commit()
    assert store.settle(timeout=5) is True
    assert store.read_log(START) == [a]


def test_the_append_arrays_reach_postgres_exactly(pg_url: str) -> None:
    """The store's own binary array encoding (ledger.store.pg_arrays) against Postgres'
    parser: edge values come back as sent, NULLs included."""
    from psycopg.adapt import PyFormat, Transformer

    from ledger.store import pg_arrays
    from ledger.store.postgres import _ADAPTERS

    moments = [
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
        T0,
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 5, 17, 11, 30, tzinfo=timezone(timedelta(hours=2))),
    ]
    sent = (
        pg_arrays.Int8s([1, -1, 2**63 - 1, -(2**63), 0]),
        pg_arrays.Int2s([1, -1, 32767, -32768, 0]),
        pg_arrays.Texts(["run_started", None, "😀 é 中", "", None]),
        pg_arrays.Timestamps(moments),
        pg_arrays.Byteas([b"", b"\x00\xff" * 1000, b"{}", bytes(32), b"x"]),
    )
    dumpers = Transformer(_ADAPTERS)
    for value in sent:  # the store's encoders, not psycopg's list dumper
        assert type(dumpers.get_dumper(value, PyFormat.BINARY)).__module__ == pg_arrays.__name__
    conninfo, _ = split_url(pg_url)
    with psycopg.connect(conninfo, context=_ADAPTERS) as conn:
        row = conn.execute(
            "SELECT %b::bigint[], %b::smallint[], %b::text[], %b::timestamptz[], %b::bytea[]",
            sent,
        ).fetchone()
    assert row is not None
    assert [list(column) for column in row[:4]] == [*map(list, sent[:3]), moments]
    assert [bytes(b) for b in row[4]] == list(sent[4])


def test_pool_hands_out_the_most_recently_returned_connection(store: PostgresStore) -> None:
    """Last in, first out (``pg_pool.LifoPool``): a writer keeps reusing one warm
    connection (and server backend) instead of cycling through every idle one."""
    pool = store._pool
    first, second = pool.getconn(), pool.getconn()
    backends = {first.info.backend_pid, second.info.backend_pid}
    assert len(backends) == 2
    pool.putconn(first)
    pool.putconn(second)
    for _ in range(3):
        with pool.connection() as conn:
            assert conn.info.backend_pid == second.info.backend_pid
    # ...and the least recently used one is still there for when two are needed.
    a, b = pool.getconn(), pool.getconn()
    assert {a.info.backend_pid, b.info.backend_pid} == backends
    pool.putconn(a)
    pool.putconn(b)


def test_the_quiet_append_prepares_again_after_deallocate_all(store: PostgresStore) -> None:
    """The API's append (``pg_append``: a statement prepared under our own name) still
    works when something deallocated every prepared statement on its connection."""
    store.notify_interval = 3600.0  # the first append notifies (another path), no other
    first = start("u1", "r1", b'{"n":1}')
    second = follow(first, b'{"n":2}')
    store.append([first], returning=False)
    store.append([second], returning=False)
    with store.connection() as conn:
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() != (0,)
        conn.execute("DEALLOCATE ALL")
    store.append([follow(second, b'{"n":3}')], returning=False)
    assert [r.payload for r in store.read_run("u1", "r1")] == [b'{"n":%d}' % n for n in (1, 2, 3)]


def test_the_quiet_append_reports_what_the_server_refused(store: PostgresStore) -> None:
    """A server-side error of the API's append arrives as the ledger's error (here a NUL
    that text columns cannot hold), and nothing is stored."""
    bad = start("u1", "r1", b"{}")
    bad = RunAppend(
        bad.user_id,
        bad.session_id,
        bad.run_id,
        0,
        GENESIS,
        tuple(msgspec.structs.replace(e, type="bad\x00type") for e in bad.events),
    )
    with pytest.raises(InvalidEvent, match="0x00"):
        store.append([bad], returning=False)
    assert store.run_head("u1", "r1") is None


def test_large_payloads_are_compressed_with_lz4_where_the_server_has_it(
    store: PostgresStore,
) -> None:
    """Migration step 10: lz4 for the payload column (stored bytes, and so the chain,
    are the same; only how the server packs them changes)."""
    with store.connection() as conn:
        available = conn.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).fetchone()
        method = conn.execute(
            "SELECT attcompression FROM pg_attribute"
            " WHERE attrelid = 'ledger_events'::regclass AND attname = 'payload'"
        ).fetchone()
    has_lz4 = bool(available and available[0])
    assert method is not None and (method[0] == "l") == has_lz4
    big = b'{"output":"' + b"line of tool output " * 50_000 + b'"}'
    store.append([start("u1", "r1", big)])
    assert store.read_run("u1", "r1")[0].payload == big
    with store.connection() as conn:
        row = conn.execute(
            "SELECT pg_column_compression(payload), pg_column_size(payload) FROM ledger_events"
        ).fetchone()
    assert row is not None and row[1] < len(big) // 10
    if has_lz4:
        assert row[0] == "lz4"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_gets_connections_of_its_own(pg_url: str) -> None:
    """A ledger opened before a fork (a preloading server, a forking worker pool) must
    not share the parent's sockets: replies were read by the wrong process, and a child
    closing its ledger terminated the parent's sessions."""
    with ledger.connect(pg_url, encrypt=False) as led:
        parent = led.tenant("usr_parent").start_run(session_id="s")
        parent.message_received(content="before the fork")
        led.auditor().runs()  # an auditor view made before the fork follows its store
        children = []
        for i in range(3):
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child's exit status is the assertion)
                code = 1
                try:
                    t = led.tenant(f"usr_child_{i}")
                    run = t.start_run(session_id="s")
                    for n in range(20):
                        run.message_received(content=f"child {i}: {n}")
                        assert len(t.conversation("s").messages) == n + 1
                    assert len(led.auditor().runs()) >= 2
                    led.close()  # must close the child's connections only
                    code = 0
                finally:
                    os._exit(code)
            children.append(pid)
        for n in range(20):
            parent.message_received(content=f"parent: {n}")
            assert len(led.tenant("usr_parent").conversation("s").messages) == n + 2
        assert [os.waitpid(pid, 0)[1] for pid in children] == [0, 0, 0]
        parent.message_received(content="after the children closed theirs")
        report = led.auditor().verify()
        assert (report.ok, report.runs, report.events) == (True, 4, 2 + 20 + 1 + 3 * 21)


def test_tracking_positions_from_before_tenants_are_the_default_tenants(pg_url: str) -> None:
    """A schema of migration 11 (tracking rows by name only) upgrades in place: its
    positions are the eventsourcing adapter's default tenant's, not lost."""
    conninfo, schema = split_url(pg_url)
    assert schema is not None
    migrate_until(conninfo, schema, 11)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.ledger_tracking (name, position) VALUES ('Bank', 7)").format(
                sql.Identifier(schema)
            )
        )
        assert migrate_conn(conn, schema) == len(STEPS) - 11
    with PostgresStore.from_url(pg_url) as store:
        assert store.max_tracking(DEFAULT_TENANT, "Bank") == 7
        assert store.max_tracking("usr_other", "Bank") is None
