"""SQLite-specific behaviour of the store, on real files: bytes, locking, processes."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import multiprocessing
import os
import sqlite3
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

import ledger.store.sqlite as sqlite_store
from ledger.chain import GENESIS, Unsealed, canonical_time, recompute, seal
from ledger.errors import (
    ConcurrencyError,
    InvalidSetting,
    NotFound,
    RunIdTaken,
    StoreUnavailable,
)
from ledger.recorder import DEFAULT_TENANT
from ledger.records import START, LogCursor, Record, RunAppend, Tracking
from ledger.store import open_store
from ledger.store import sqlite_sql as sql
from ledger.store.base import RecordConflict
from ledger.store.sqlite import SQLiteStore

SPAWN = multiprocessing.get_context("spawn")
WHEN = datetime(2025, 3, 15, 10, 22, 31, 123456, tzinfo=UTC)


def unsealed(*payloads: bytes, key_id: str | None = None) -> list[Unsealed]:
    return [
        Unsealed(type="message_received", schema=1, occurred_at=WHEN, payload=p, key_id=key_id)
        for p in payloads
    ]


def start(user: str, run: str, *payloads: bytes, session: str = "sess") -> RunAppend:
    """Register ``run`` for ``user`` with ``payloads`` as its first events."""
    return RunAppend(
        user, session, run, 0, GENESIS, seal(user, session, run, 0, GENESIS, unsealed(*payloads))
    )


def follow(store: SQLiteStore, user: str, run: str, *payloads: bytes) -> RunAppend:
    """Append ``payloads`` after the run's current head (as a well-behaved writer)."""
    head = store.run_head(user, run)
    assert head is not None
    events = seal(user, head.session_id, run, head.version, head.hash, unsealed(*payloads))
    return RunAppend(user, head.session_id, run, head.version, head.hash, events)


def verify_chain(records: list[Record]) -> None:
    prev = GENESIS
    for expected_version, record in enumerate(records, start=1):
        assert record.version == expected_version
        assert record.prev_hash == prev
        assert recompute(record, prev) == record.hash
        prev = record.hash


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def store(db: Path) -> Any:
    with SQLiteStore(db) as s:
        yield s


# -- round trip ---------------------------------------------------------------------


def test_exact_bytes_and_times_round_trip(db: Path) -> None:
    big = os.urandom(1 << 20)
    payloads = (b"\x00", b"a\x00b\x00\x00", b"", big, bytes(range(256)))
    elsewhere = timezone(timedelta(hours=5, minutes=30))
    odd_time = datetime(2025, 3, 15, 15, 52, 31, 7, tzinfo=elsewhere)
    events = seal(
        "usr",
        "sess",
        "run",
        0,
        GENESIS,
        [
            Unsealed(type="t", schema=3, occurred_at=odd_time, payload=p, key_id="k1")
            for p in payloads
        ],
    )
    with SQLiteStore(db) as store:
        store.add_key("usr", "k1", bytes(32))
        appended = store.append([RunAppend("usr", "sess", "run", 0, GENESIS, events)])
    with SQLiteStore(db) as reopened:  # nothing comes from a Python-side cache
        records = reopened.read_run("usr", "run")
    assert records == appended
    assert [r.payload for r in records] == list(payloads)
    assert all(type(r.payload) is bytes for r in records)
    for record in records:
        assert record.occurred_at == odd_time
        assert record.occurred_at.utcoffset() == timedelta(0)
        assert canonical_time(record.occurred_at) == canonical_time(odd_time)
        assert (record.key_id, record.schema, record.type) == ("k1", 3, "t")
    verify_chain(records)


def test_store_sets_recorded_at_and_one_tx_id_per_append(store: SQLiteStore) -> None:
    before = datetime.now(UTC)
    first = store.append([start("usr", "r1", b"a", b"b"), start("usr", "r2", b"c")])
    second = store.append([follow(store, "usr", "r1", b"d")])
    after = datetime.now(UTC)
    assert [r.position for r in first + second] == [1, 2, 3, 4]
    assert {r.tx_id for r in first} == {1} and second[0].tx_id == 4
    assert all(before <= r.recorded_at <= after for r in first + second)
    assert len({r.recorded_at for r in first}) == 1
    assert store.read_log(START) == first + second
    assert store.read_log(LogCursor(1, 2)) == first[2:] + second


def test_an_append_longer_than_one_insert_is_stored_whole_or_not_at_all(
    store: SQLiteStore,
) -> None:
    """Events go in as multi-row INSERTs of at most sql.MAX_EVENTS_A_STATEMENT: an
    append of several statements stores every event in order, and one that fails in
    its last statement leaves nothing of the first ones."""
    count = sql.MAX_EVENTS_A_STATEMENT * 2 + 7
    payloads = [b'{"n":%d}' % n for n in range(count)]
    stored = store.append([start("usr", "long", *payloads)])
    assert [r.position for r in stored] == list(range(1, count + 1))
    records = store.read_run("usr", "long")
    assert [r.payload for r in records] == payloads and records == stored
    verify_chain(records)

    broken = start("usr", "broken", *payloads)
    # The last event repeats the first one's version: only the last INSERT fails.
    broken = msgspec.structs.replace(broken, events=(*broken.events, broken.events[0]))
    with pytest.raises(ConcurrencyError):
        store.append([broken])
    assert store.run_head("usr", "broken") is None
    assert store.read_log(START) == stored


# -- optimistic concurrency and isolation --------------------------------------------


def test_stale_head_is_refused_and_writes_nothing(store: SQLiteStore) -> None:
    store.append([start("usr", "run", b"1")])
    stale = follow(store, "usr", "run", b"2-stale")
    store.append([follow(store, "usr", "run", b"2")])
    log = store.read_log(START)
    with pytest.raises(ConcurrencyError):
        store.append([stale])
    head = store.run_head("usr", "run")
    assert head is not None
    forged = RunAppend("usr", "sess", "run", head.version, b"\x01" * 32, stale.events)
    with pytest.raises(ConcurrencyError):
        store.append([forged])
    with pytest.raises(ConcurrencyError):
        store.append([start("usr", "run", b"again")])
    assert store.read_log(START) == log
    # A losing writer burns no position.
    assert store.append([follow(store, "usr", "run", b"3")])[0].position == 3


def test_another_tenants_run_is_taken_and_invisible(store: SQLiteStore) -> None:
    store.append([start("alice", "run", b"secret")])
    with pytest.raises(RunIdTaken):
        store.append([start("bob", "run", b"mine")])
    head = store.run_head("alice", "run")
    assert head is not None
    events = seal("bob", "sess", "run", head.version, head.hash, unsealed(b"x"))
    with pytest.raises(NotFound):
        store.append([RunAppend("bob", "sess", "run", head.version, head.hash, events)])
    with pytest.raises(NotFound):
        store.append([RunAppend("bob", "sess", "nope", 1, GENESIS, events)])
    assert store.run_head("bob", "run") is None
    assert store.read_run("bob", "run") == []
    assert store.read_log(START, user_id="bob") == []
    assert store.list_runs("bob") == []
    assert [r.payload for r in store.read_run(None, "run")] == [b"secret"]


def test_append_is_atomic_over_runs_and_tracking(store: SQLiteStore) -> None:
    store.append([start("usr", "old", b"1")], tracking=Tracking("usr", "proj", 10))
    stale = RunAppend("usr", "sess", "old", 5, GENESIS, ())
    with pytest.raises(ConcurrencyError):
        store.append([start("usr", "new1", b"a"), start("usr", "new2", b"b"), stale])
    with pytest.raises(RecordConflict):
        store.append([start("usr", "new1", b"a")], tracking=Tracking("usr", "proj", 10))
    with pytest.raises(ConcurrencyError):  # same run twice in one append
        store.append([start("usr", "new1", b"a"), start("usr", "new1", b"b")])
    assert store.run_head("usr", "new1") is None and store.run_head("usr", "new2") is None
    assert store.max_position() == 1
    assert store.max_tracking("usr", "proj") == 10


def test_before_commit_hook_runs_inside_the_transaction(store: SQLiteStore, db: Path) -> None:
    seen: list[object] = []
    raw = sqlite3.connect(db)

    def hook() -> None:  # the rows are written but not yet visible to anyone else
        seen.append(raw.execute("SELECT count(*) FROM ledger_events").fetchone())

    def fail() -> None:
        raise RuntimeError("crash before commit")

    try:
        store.before_commit = hook
        stored = store.append([start("usr", "run", b"a", b"b")])
        assert seen == [(0,)] and store.read_run("usr", "run") == stored
        store.before_commit = fail
        with pytest.raises(RuntimeError):
            store.append([follow(store, "usr", "run", b"c")], tracking=Tracking("usr", "p", 1))
        assert store.read_run("usr", "run") == stored and store.max_tracking("usr", "p") is None
    finally:
        raw.close()


def test_tracking_only_moves_up(store: SQLiteStore) -> None:
    assert store.max_tracking("a", "p") is None
    store.insert_tracking(Tracking("a", "p", 1))
    store.insert_tracking(Tracking("a", "p", 3))
    for position in (3, 2):
        with pytest.raises(RecordConflict):
            store.insert_tracking(Tracking("a", "p", position))
    assert store.max_tracking("a", "p") == 3 and store.max_tracking("a", "q") is None
    # Another tenant's application of the same name follows its upstream apart.
    store.insert_tracking(Tracking("b", "p", 2))
    assert (store.max_tracking("a", "p"), store.max_tracking("b", "p")) == (3, 2)


# -- reads --------------------------------------------------------------------------


def test_reads(store: SQLiteStore) -> None:
    store.append([start("a", "r1", b"1", b"2", b"3", session="s1")])
    store.append([start("b", "r2", b"4", session="s2"), start("a", "r3", b"5", session="s2")])
    assert [r.version for r in store.read_run("a", "r1", after_version=1, upto_version=2)] == [2]
    assert [r.version for r in store.read_run("a", "r1", desc=True, limit=2)] == [3, 2]
    assert [r.version for r in store.read_run("a", "r1", after_version=-1)] == [1, 2, 3]
    assert [r.position for r in store.read_log(LogCursor(1, 1), limit=2)] == [2, 3]
    assert [r.position for r in store.read_log(START, user_id="b")] == [4]
    assert [h.run_id for h in store.list_runs()] == ["r1", "r2", "r3"]
    assert [h.run_id for h in store.list_runs("a")] == ["r1", "r3"]
    assert [h.run_id for h in store.list_runs(session_id="s2")] == ["r2", "r3"]
    assert [(h.run_id, h.version) for h in store.list_runs("a", "s1")] == [("r1", 3)]
    assert store.max_position() == 5


def test_notifications_are_a_tenants_aggregate_events(store: SQLiteStore) -> None:
    """What the eventsourcing adapter follows: one tenant's rows of no session (agent
    runs always have one), by position."""
    store.append([start("a", "g1", b"1", b"2", session="")])  # positions 1, 2
    store.append([start("a", "r1", b"agent", session="s1")])  # 3: an agent run
    store.append([start("b", "g2", b"other", session="")])  # 4: another tenant's
    store.append([start("a", "g3", b"5", session="")])  # 5
    notifications = functools.partial(store.read_notifications, "a")
    assert [r.position for r in notifications(2, 10, stop=5)] == [2, 5]
    assert [r.position for r in notifications(2, 10, inclusive_of_start=False)] == [5]
    assert [r.position for r in notifications(None, 2)] == [1, 2]
    assert notifications(None, 10, types=["nope"]) == []
    assert len(notifications(None, 10, types=["nope", "message_received"])) == 3
    assert store.max_notification_id("a") == 5 and store.max_notification_id("b") == 4
    assert store.max_notification_id("c") is None and store.read_notifications("c", None, 9) == []


# -- the database refuses changes ---------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_events SET payload = x'00'",
        "UPDATE ledger_events SET user_id = 'mallory' WHERE position = 1",
        "DELETE FROM ledger_events WHERE position = 1",
        "DELETE FROM ledger_events",
        "DELETE FROM ledger_runs",
        "UPDATE ledger_runs SET user_id = 'mallory'",
    ],
)
def test_database_refuses_update_and_delete(store: SQLiteStore, db: Path, statement: str) -> None:
    store.append([start("usr", "run", b"1", b"2")])
    before = store.read_log(START)
    raw = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(statement)
        raw.commit()
    finally:
        raw.close()
    assert store.read_log(START) == before
    assert store.run_head("usr", "run") is not None


# -- files, URLs, locking -----------------------------------------------------------


def test_file_setup_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "ledger.db"
    with pytest.raises(StoreUnavailable, match="no/such/dir"):
        SQLiteStore(missing)
    with pytest.raises(InvalidSetting, match="sqlite:///"):
        SQLiteStore.from_url("sqlite://ledger.db")
    monkeypatch.chdir(tmp_path)
    with SQLiteStore.from_url("sqlite:///relative.db?timeout=2") as relative:
        assert relative.path == tmp_path / "relative.db" and relative.timeout == 2.0
    absolute = tmp_path / "abs.db"
    with open_store(f"sqlite:///{absolute}") as store:
        assert isinstance(store, SQLiteStore) and store.path == absolute
    raw = sqlite3.connect(absolute)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (sql.LATEST,)
        raw.isolation_level = None
        assert sql.migrate(raw) == 0
    finally:
        raw.close()
    store.close()  # idempotent
    with pytest.raises(StoreUnavailable, match="closed"):
        store.max_position()


def test_busy_file_gives_store_unavailable(db: Path) -> None:
    store = SQLiteStore(db, timeout=0.2)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            store.append([start("usr", "run", b"1")])
        assert store.max_position() is None  # readers are not blocked (WAL)
        blocker.execute("ROLLBACK")
        assert store.append([start("usr", "run", b"1")])[0].position == 1
    finally:
        blocker.close()
        store.close()


def test_threads_racing_on_one_run(store: SQLiteStore) -> None:
    store.append([start("usr", "run", b"0")])
    contenders = [follow(store, "usr", "run", f"{i}".encode()) for i in range(8)]
    outcomes: list[str] = []
    gate = threading.Barrier(len(contenders))

    def attempt(item: RunAppend) -> None:
        gate.wait()
        try:
            store.append([item])
            outcomes.append("won")
        except ConcurrencyError:
            outcomes.append("lost")

    threads = [threading.Thread(target=attempt, args=(c,)) for c in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    verify_chain(store.read_run("usr", "run"))


# -- several processes on one file --------------------------------------------------

TURNS = 15


def _append_worker(path: str, worker: int, go: Any) -> None:
    """Own runs: TURNS turns of 3 events each; a shared run: retry until appended."""
    go.wait()
    with SQLiteStore(path) as store:
        runs = [f"w{worker}-r{k}" for k in range(2)]
        store.append([start(f"u{worker}", run, b"start") for run in runs])
        for turn in range(TURNS):
            for run in runs:
                store.append(
                    [
                        follow(
                            store,
                            f"u{worker}",
                            run,
                            *[f"{run}:{turn}:{i}".encode() for i in range(3)],
                        )
                    ]
                )
            while True:
                try:
                    store.append([follow(store, "shared", "shared", f"{worker}:{turn}".encode())])
                    break
                except ConcurrencyError:
                    continue


def _run_processes(target: Any, args: list[tuple[Any, ...]]) -> None:
    procs = [SPAWN.Process(target=target, args=a) for a in args]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def test_processes_append_at_once(db: Path) -> None:
    workers = 4
    with SQLiteStore(db) as store:
        store.append([start("shared", "shared", b"start")])
        go = SPAWN.Event()
        seen: list[Record] = []
        done = threading.Event()

        def tail() -> None:  # a live reader must see every event exactly once
            cursor = START
            while True:
                finished = done.is_set()
                batch = store.read_log(cursor, limit=37)
                seen.extend(batch)
                if batch:
                    cursor = batch[-1].cursor
                elif finished:
                    return

        tailer = threading.Thread(target=tail)
        tailer.start()
        go.set()
        try:
            _run_processes(_append_worker, [(str(db), w, go) for w in range(workers)])
        finally:
            done.set()
            tailer.join()
        log = store.read_log(START, limit=100_000)

    expected = 1 + workers * (2 * (1 + 3 * TURNS) + TURNS)
    assert len(log) == expected
    assert seen == log
    positions = [r.position for r in log]
    assert positions == sorted(set(positions))
    keys = [(r.run_id, r.version) for r in log]
    assert len(set(keys)) == len(keys)
    by_run: dict[str, list[Record]] = defaultdict(list)
    for record in log:
        by_run[record.run_id].append(record)  # in log order
    for records in by_run.values():
        verify_chain(records)
    assert len(by_run["shared"]) == 1 + workers * TURNS
    payloads = {r.payload for r in by_run["w0-r1"]}
    assert payloads == {b"start"} | {
        f"w0-r1:{t}:{i}".encode() for t in range(TURNS) for i in range(3)
    }


def _open_worker(path: str, worker: int, gate: Any) -> None:
    gate.wait()  # all processes open the new file at the same moment
    with SQLiteStore(path) as store:
        store.append([start("usr", f"run{worker}", b"hello")])


def test_processes_opening_a_new_file_at_once(db: Path) -> None:
    procs = 6
    gate = SPAWN.Barrier(procs)
    _run_processes(_open_worker, [(str(db), w, gate) for w in range(procs)])
    with SQLiteStore(db) as store:
        assert sorted(h.run_id for h in store.list_runs()) == [f"run{w}" for w in range(procs)]
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (sql.LATEST,)
        names = [n for (n,) in raw.execute("SELECT name FROM sqlite_master")]
        assert len(names) == len(set(names))
        assert {"ledger_runs", "ledger_events", "ledger_tracking"} <= set(names)
    finally:
        raw.close()


#: The tests' bound on the -wal file (the store's own is 32 MiB). Without a bound of its
#: own the file reaches at least SQLite's automatic checkpoint of 1,000 pages (4.1 MB).
WAL_LIMIT = 1024 * 1024


def _wal_worker(path: str, worker: int, appends: int, gate: Any) -> None:
    sqlite_store.WAL_LIMIT_BYTES = WAL_LIMIT
    gate.wait()
    with SQLiteStore(path) as store:
        run = f"w{worker}"
        store.append([start("usr", run, b"start")])
        for _ in range(appends):
            store.append([follow(store, "usr", run, *[os.urandom(1500) for _ in range(3)])])


def test_writers_of_several_processes_keep_the_wal_bounded(db: Path) -> None:
    """Writers committing back to back from several processes starve SQLite's automatic
    checkpoint (it never waits): the -wal file grew to 568 MB in a minute of six agents.
    A writer past the limit checkpoints and truncates it."""
    workers, appends = 3, 300
    wal = Path(f"{db}-wal")
    sizes: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.002):
            with contextlib.suppress(FileNotFoundError):  # none yet, or removed at close
                sizes.append(wal.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    gate = SPAWN.Barrier(workers)
    try:
        _run_processes(_wal_worker, [(str(db), w, appends, gate) for w in range(workers)])
    finally:
        done.set()
        watcher.join()
    assert max(sizes) < 3 * WAL_LIMIT, f"-wal file peaked at {max(sizes):,} bytes"
    with SQLiteStore(db) as store:
        log = store.read_log(START, limit=100_000)
    assert len(log) == workers * (1 + 3 * appends)
    assert len({r.position for r in log}) == len(log)


def test_a_writer_tries_again_soon_after_a_read_held_the_wal(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint a long read kept from the log is tried again after a quarter of the
    limit more (not a whole one: in a loop of audits the -wal file peaked at 149 MB)."""
    monkeypatch.setattr(sqlite_store, "WAL_LIMIT_BYTES", WAL_LIMIT)
    wal = Path(f"{db}-wal")
    with SQLiteStore(db) as store:
        store.append([start("usr", "run", b"start")])
        reader = sqlite3.connect(db, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM ledger_events").fetchone()  # a snapshot
            while wal.stat().st_size < WAL_LIMIT:  # the last append's checkpoint failed
                store.append([follow(store, "usr", "run", *[os.urandom(1500)] * 3)])
            kept = wal.stat().st_size
            reader.execute("COMMIT")
        finally:
            reader.close()
        sizes = [kept]
        while sizes[-1] >= kept and sizes[-1] < kept + WAL_LIMIT * 3 // 4:
            store.append([follow(store, "usr", "run", *[os.urandom(1500)] * 3)])
            sizes.append(wal.stat().st_size)
    assert sizes[-1] < kept, f"not truncated after {sizes[-1] - kept:,} more bytes"


#: The byte of the -shm file whose lock SQLite's checkpointers take (WAL_CKPT_LOCK).
_CHECKPOINT_LOCK_BYTE = 121


def _hold_checkpoint_lock(shm: str, held: Any, release: Any) -> None:
    with open(shm, "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX, 1, _CHECKPOINT_LOCK_BYTE)
        held.set()
        release.wait(60)


def test_forget_waits_for_another_processs_checkpoint(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint running elsewhere (every writer's after its commit, once the log is
    past 1,000 pages) made destroy_keys report the WAL untruncatable at once."""
    with SQLiteStore(db) as store:
        store.add_key("usr", "k1", bytes(32))
        held, release = SPAWN.Event(), SPAWN.Event()
        holder = SPAWN.Process(target=_hold_checkpoint_lock, args=(f"{db}-shm", held, release))
        holder.start()
        try:
            assert held.wait(30)
            real_sleep = sqlite_store.time.sleep

            def release_then_sleep(seconds: float) -> None:  # the first retry frees it
                release.set()
                holder.join(30)
                real_sleep(seconds)

            monkeypatch.setattr(sqlite_store.time, "sleep", release_then_sleep)
            assert store.destroy_keys("usr") == ["k1"]
        finally:
            release.set()
            holder.join(30)
        assert not holder.is_alive() and holder.exitcode == 0
        assert Path(f"{db}-wal").stat().st_size == 0


def test_tracking_positions_from_before_tenants_are_the_default_tenants(tmp_path: Path) -> None:
    """A file of schema 2 (tracking rows by name only) upgrades in place: its positions
    are the eventsourcing adapter's default tenant's, not lost."""
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        for step in sql.STEPS[:2]:
            for statement in step.statements:
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 2")
        raw.execute("INSERT INTO ledger_tracking (name, position) VALUES ('Bank', 7)")
    finally:
        raw.close()
    store = SQLiteStore(path)
    try:
        assert store.max_tracking(DEFAULT_TENANT, "Bank") == 7
        assert store.max_tracking("usr_other", "Bank") is None
    finally:
        store.close()


def test_destroying_keys_zeroes_their_bytes_on_the_connection_it_uses_and_no_other_after(
    db: Path,
) -> None:
    """The key row is rewritten with secure_delete on (its old bytes zeroed as the page
    changes), and the pooled connection gets its own setting back: left on, every later
    delete of that process zero-filled pages it did not need to."""
    key = b"\x5a" * 16 + b"key-bytes-to-go!"
    with SQLiteStore(db) as store:
        store.add_key("usr", "k1", key)
        with store._conn() as conn:
            (before,) = conn.execute(sql.SECURE_DELETE).fetchone()
        assert store.destroy_keys("usr") == ["k1"]
        with store._conn() as conn:
            assert conn.execute(sql.SECURE_DELETE).fetchone() == (before,)
    for path in db.parent.iterdir():
        if path.name.startswith(db.name):
            assert key not in path.read_bytes(), path
