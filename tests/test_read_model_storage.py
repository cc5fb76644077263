"""The read-model storage contract, on memory, SQLite and Postgres."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid

import pytest

import ledger
from ledger.records import START, LogCursor
from projections.storage import ReadModelStorage, storage_for
from projections.storage.base import BUILD_SUFFIX, Stored, Write
from tests.pg import raw_connection, with_schema


@pytest.fixture
def storage(store_url: str) -> ReadModelStorage:
    with ledger.connect(store_url) as led:
        yield storage_for(led.store)


C1, C2 = LogCursor(5, 7), LogCursor(9, 8)


def test_a_first_claim_creates_the_row_at_the_start(storage: ReadModelStorage) -> None:
    row = storage.claim("conversation", 3, "runner-a", 30)
    assert row is not None
    assert (row.version, row.generation, row.cursor, row.owner) == (3, 1, START, "runner-a")
    assert storage.claim("conversation", 3, "runner-b", 30) is None  # held
    assert storage.claim("conversation", 3, "runner-a", 30) is not None  # renewed


def test_an_expired_or_released_lease_is_taken_over(storage: ReadModelStorage) -> None:
    assert storage.claim("p", 1, "a", 0.2) is not None
    assert storage.claim("p", 1, "b", 30) is None
    time.sleep(0.4)
    taken = storage.claim("p", 1, "b", 30)
    assert taken is not None and taken.owner == "b"
    assert not storage.commit("p", 1, "a", START, C1, {("u", "k"): b"late"}, 30)
    storage.release("p", "b")
    assert storage.claim("p", 1, "c", 30) is not None


def test_commit_is_fenced_on_cursor_generation_and_owner(storage: ReadModelStorage) -> None:
    storage.claim("p", 1, "a", 30)
    assert storage.commit("p", 1, "a", START, C1, {("u1", "s1"): b"one"}, 30)
    assert storage.get("p", "u1", "s1") == Stored(b"one")
    for generation, owner, expected in [(1, "a", START), (2, "a", C1), (1, "b", C1)]:
        assert not storage.commit(
            "p", generation, owner, expected, C2, {("u1", "s1"): b"stale"}, 30
        )
    assert storage.get("p", "u1", "s1") == Stored(b"one")
    assert storage.commit("p", 1, "a", C1, C2, {("u1", "s1"): b"two", ("u2", "s1"): b"x"}, 30)
    row = storage.projector("p")
    assert row is not None and row.cursor == C2
    assert storage.load("p", 1, [("u1", "s1"), ("u2", "s1"), ("u3", "s9")]) == {
        ("u1", "s1"): b"two",
        ("u2", "s1"): b"x",
    }
    assert [k for _, k, _ in storage.scan("p", "u2")] == ["s1"]
    assert len(storage.scan("p", None)) == 2


def test_pages_are_written_with_their_document_and_read_back_with_it_in_order(
    storage: ReadModelStorage,
) -> None:
    storage.claim("p", 1, "a", 30)
    pages = {("u1", "s1", 1): b"[2]", ("u1", "s1", 0): b"[1]", ("u2", "s1", 0): b"[9]"}
    write = Write("p", 1, START, C1, {("u1", "s1"): b"head", ("u2", "s1"): b"h2"}, 0, pages)
    assert storage.commit_many("a", [write], 30) == [True]
    assert storage.get("p", "u1", "s1") == Stored(b"head", (b"[1]", b"[2]"))
    assert storage.scan("p", None) == [
        ("u1", "s1", Stored(b"head", (b"[1]", b"[2]"))),
        ("u2", "s1", Stored(b"h2", (b"[9]",))),
    ]
    assert storage.scan("p", "u2") == [("u2", "s1", Stored(b"h2", (b"[9]",)))]
    assert storage.load_pages("p", 1, ("u1", "s1"), [1, 5]) == {1: b"[2]"}
    assert storage.load_pages("p", 1, ("u2", "s1"), [1]) == {}
    # a page written again replaces it; a fenced-out write writes no page either
    again = Write("p", 1, C1, C2, {("u1", "s1"): b"head2"}, 0, {("u1", "s1", 0): b"[1, 1]"})
    stale = Write("p", 1, START, C2, {("u1", "s1"): b"stale"}, 0, {("u1", "s1", 2): b"[0]"})
    assert storage.commit_many("a", [again], 30) == [True]
    assert storage.commit_many("a", [stale], 30) == [False]
    assert storage.get("p", "u1", "s1") == Stored(b"head2", (b"[1, 1]", b"[2]"))
    # the last few pages only, numbered from the first one read
    assert storage.get("p", "u1", "s1", 1) == Stored(b"head2", (b"[2]",), 1)
    assert storage.get("p", "u1", "s1", 0) == Stored(b"head2", (), 0)
    assert storage.get("p", "u1", "s1", 5) == Stored(b"head2", (b"[1, 1]", b"[2]"), 0)
    # a rebuild's generation has its own pages: swapped in, the old ones go
    build = "p" + BUILD_SUFFIX
    storage.claim(build, 2, "r", 30)
    new = Write(build, 2, START, C2, {("u1", "s1"): b"new"}, 0, {("u1", "s1", 0): b"[7]"})
    assert storage.commit_many("r", [new], 30) == [True]
    assert storage.get("p", "u1", "s1") == Stored(b"head2", (b"[1, 1]", b"[2]"))
    storage.swap("p", 2, 2, C2, build)
    assert storage.get("p", "u1", "s1") == Stored(b"new", (b"[7]",))
    assert storage.get("p", "u2", "s1") is None
    assert storage.load_pages("p", 1, ("u1", "s1"), [0, 1]) == {}
    # an abandoned build's pages go with it
    storage.claim(build, 3, "r", 30)
    storage.commit_many(
        "r", [Write(build, 3, START, C1, {("u", "k"): b"h"}, 0, {("u", "k", 0): b"[]"})], 30
    )
    storage.drop(build)
    assert storage.load_pages(build, 3, ("u", "k"), [0]) == {}


def test_a_rebuild_is_invisible_until_swapped_in_whole(storage: ReadModelStorage) -> None:
    storage.claim("p", 1, "live", 30)
    storage.commit("p", 1, "live", START, C1, {("u", "k"): b"old", ("u", "gone"): b"old"}, 30)
    build = "p" + BUILD_SUFFIX
    row = storage.claim(build, 2, "rebuilder", 30)
    assert row is not None and row.generation == 2
    assert storage.commit(build, 2, "rebuilder", START, C2, {("u", "k"): b"new"}, 30)
    assert storage.get("p", "u", "k") == Stored(b"old")  # readers still see generation 1
    storage.swap("p", 2, 2, C2, build)
    assert storage.get("p", "u", "k") == Stored(b"new")
    assert storage.get("p", "u", "gone") is None
    live = storage.projector("p")
    assert live is not None
    assert (live.version, live.generation, live.cursor, live.owner) == (2, 2, C2, "live")
    assert storage.projector(build) is None
    # the live runner's next commit, fenced on generation 1, changes nothing
    assert not storage.commit("p", 1, "live", C1, C2, {("u", "k"): b"stale"}, 30)
    assert storage.get("p", "u", "k") == Stored(b"new")


def test_drop_forgets_an_abandoned_build(storage: ReadModelStorage) -> None:
    build = "p" + BUILD_SUFFIX
    storage.claim(build, 1, "r", 30)
    storage.commit(build, 1, "r", START, C1, {("u", "k"): b"half"}, 30)
    storage.drop(build)
    assert storage.projector(build) is None
    assert storage.load(build, 1, [("u", "k")]) == {}


def test_a_killed_builds_generation_is_never_handed_out_again(storage: ReadModelStorage) -> None:
    """A build killed half-way leaves its row and documents; neither a first live row
    nor the next build may take its generation (and so its half-written documents)."""
    build = "p" + BUILD_SUFFIX
    killed = storage.claim(build, 1, "killed", 0.2)
    assert killed is not None
    half = {("u", "k"): b"half"}
    assert storage.commit(build, killed.generation, "killed", START, C1, half, 0.2)
    live = storage.claim("p", 1, "live", 30)
    assert live is not None and live.generation != killed.generation
    assert storage.get("p", "u", "k") is None  # not the killed build's document
    assert storage.begin_build(build, 1, "next", 30) is None  # its lease still runs
    time.sleep(0.4)  # ... until it runs out
    again = storage.begin_build(build, 1, "next", 30)
    assert again is not None and again.owner == "next" and again.cursor == START
    assert again.generation > max(killed.generation, live.generation)
    assert storage.load(build, killed.generation, [("u", "k")]) == {}  # discarded
    assert not storage.renew(build, "killed", killed.generation, 30)
    with pytest.raises(ledger.RebuildInProgress, match="taken over"):
        storage.swap("p", 1, killed.generation, C1, build, "killed")
    assert storage.projector("p") == live


def test_a_build_in_progress_is_renewed_and_not_begun_again(storage: ReadModelStorage) -> None:
    build = "p" + BUILD_SUFFIX
    row = storage.begin_build(build, 1, "a", 0.3)
    assert row is not None
    time.sleep(0.2)
    assert storage.renew(build, "a", row.generation, 30)  # the heartbeat
    time.sleep(0.2)
    assert storage.begin_build(build, 1, "b", 30) is None  # renewed: still held
    assert not storage.renew(build, "b", row.generation, 30)
    assert storage.commit(build, row.generation, "a", START, C1, {("u", "k"): b"new"}, 30)
    storage.swap("p", 1, row.generation, C1, build, "a")
    assert storage.get("p", "u", "k") == Stored(b"new")
    assert storage.projector(build) is None
    storage.release("p", "nobody")
    # a build given up cleanly (released) is begun again at once, afresh
    given_up = storage.begin_build(build, 1, "c", 30)
    assert given_up is not None
    storage.release(build, "c")
    fresh = storage.begin_build(build, 1, "d", 30)
    assert fresh is not None and fresh.generation > given_up.generation


def test_skipped_events_add_up_with_each_commit_and_a_swap_takes_the_builds(
    storage: ReadModelStorage,
) -> None:
    storage.claim("p", 1, "a", 30)
    assert storage.commit_many("a", [Write("p", 1, START, C1, {}, 2)], 30) == [True]
    assert storage.commit_many("a", [Write("p", 1, START, C2, {}, 7)], 30) == [False]  # fenced
    assert storage.commit_many("a", [Write("p", 1, C1, C2, {}, 3)], 30) == [True]
    live = storage.projector("p")
    assert live is not None and live.skipped == 5
    build = "p" + BUILD_SUFFIX
    storage.claim(build, 2, "r", 30)
    storage.commit_many("r", [Write(build, 2, START, C2, {("u", "k"): b"new"}, 1)], 30)
    storage.swap("p", 2, 2, C2, build)
    swapped = storage.projector("p")
    assert swapped is not None and swapped.skipped == 1  # what the new generation skipped


def _with_a_document(request: pytest.FixtureRequest, backend: str) -> str:
    """A ledger on ``backend`` whose projector ``p`` committed one document."""
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    with ledger.connect(url) as led:
        storage = storage_for(led.store)
        storage.claim("p", 1, "a", 30)
        storage.commit("p", 1, "a", START, C1, {("u", "k"): b"doc"}, 30)
    return url


def behind_the_store(url: str, statement: str) -> None:
    """Run ``statement`` on the ledger's database directly (as an old release left it)."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute(statement)
        conn.commit()
        conn.close()
    else:
        with raw_connection(url, autocommit=True) as pg:
            pg.execute(statement)


def test_a_schema_from_before_pages_gets_the_pages_table(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Read models made by an earlier release have no pages table: opening the storage
    makes it (on Postgres, with its row-level security), documents kept."""
    url = _with_a_document(request, backend)
    behind_the_store(url, "DROP TABLE ledger_read_model_pages")
    with ledger.connect(url) as led:
        storage = storage_for(led.store)
        assert storage.get("p", "u", "k") == Stored(b"doc")
        write = Write("p", 1, C1, C2, {("u", "k"): b"doc2"}, 0, {("u", "k", 0): b"[]"})
        assert storage.commit_many("a", [write], 30) == [True]
        assert storage.get("p", "u", "k") == Stored(b"doc2", (b"[]",))


def test_a_projector_table_from_before_skipped_counts_gets_the_column(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Tables made by an earlier release lack ``skipped``: opening the storage adds it,
    rows kept."""
    url = _with_a_document(request, backend)
    behind_the_store(url, "ALTER TABLE ledger_projectors DROP COLUMN skipped")
    with ledger.connect(url) as led:
        storage = storage_for(led.store)
        row = storage.projector("p")
        assert row is not None and (row.cursor, row.skipped) == (C1, 0)
        assert storage.get("p", "u", "k") == Stored(b"doc")
        assert storage.commit_many("a", [Write("p", 1, C1, C2, {}, 4)], 30) == [True]
        again = storage.projector("p")
        assert again is not None and again.skipped == 4


def test_a_schema_from_before_the_generation_counter_gets_it_above_every_row(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Tables made by an earlier release have no ``ledger_generations``: opening the
    storage makes it, and the first generation it hands out is above the rows'."""
    url = _with_a_document(request, backend)
    with ledger.connect(url) as led:
        storage = storage_for(led.store)
        old_build = storage.claim("p" + BUILD_SUFFIX, 1, "r", 30)  # generation 2
        assert old_build is not None
    behind_the_store(url, "DROP TABLE ledger_generations")
    with ledger.connect(url) as led:
        storage = storage_for(led.store)
        build = storage.begin_build("p" + BUILD_SUFFIX, 1, "r", 30)
        assert build is not None and build.generation > old_build.generation
        assert storage.get("p", "u", "k") == Stored(b"doc")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _first_reads_at_once(url: str, threads: int = 8) -> list[Exception]:
    """What ``threads`` threads raised reading a conversation all at once, first thing."""
    with ledger.connect(url) as led:
        t = led.tenant("usr_a")
        t.start_run(session_id="s").message_received(content="hi")
        start, failures = threading.Barrier(threads), []

        def first_read() -> None:
            start.wait()
            try:
                assert [m["content"] for m in t.conversation("s").messages] == ["hi"]
            except Exception as exc:  # collected: a thread's raise would be lost
                failures.append(exc)

        readers = [threading.Thread(target=first_read) for _ in range(threads)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        return failures


def test_first_reads_from_many_threads_at_once_on_a_fresh_schema(pg_database: str) -> None:
    """Threads (or processes) that all read first on a new schema make its read-model
    tables once: those that waited on the creator's lock must not run the DDL again,
    whose exclusive locks deadlocked with the readers already in the tables."""
    for _ in range(3):
        schema = f"t_{uuid.uuid4().hex[:12]}"
        try:
            assert _first_reads_at_once(with_schema(pg_database, schema)) == []
        finally:
            with raw_connection(pg_database, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
