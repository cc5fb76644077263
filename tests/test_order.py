"""Invariant 6: a reader tailing the global log never skips a committed event.

Eight writer processes append turns to many runs, each holding its transaction open
for a random moment before commit (so commits land out of position order), while a
reader tails the log from the start. The same workload read by a reader that orders
by the raw position sequence must lose events: that is the bug this test exists for.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import pytest

import ledger
from ledger.records import START, LogCursor
from tests.pg import raw_connection
from tests.writers import append_turns

WRITERS = 8
RUNS_PER_WRITER = 10
TURNS_PER_WRITER = 1250  # 8 x 1250 turns x 5 events = 50,000 events (+ 80 run_started)
MAX_PAUSE = 0.002

Key = tuple[str, int]  # (run_id, version)
Reader = Callable[[], list[tuple[Key, int]]]  # -> new (key, position) in the order read


def run_workload(url: str, read_batch: Reader) -> tuple[list[Key], set[Key]]:
    """Run the writers while tailing with ``read_batch``; return (seen in order, committed)."""
    seen: list[Key] = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(WRITERS, mp_context=ctx) as pool:
        futures = [
            pool.submit(append_turns, url, w, RUNS_PER_WRITER, TURNS_PER_WRITER, MAX_PAUSE)
            for w in range(WRITERS)
        ]
        while not all(f.done() for f in futures):
            batch = read_batch()
            seen.extend(key for key, _ in batch)
            if not batch:
                time.sleep(0.001)
        expected_total = sum(f.result() for f in futures)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # drain what committed last
        batch = read_batch()
        seen.extend(key for key, _ in batch)
        if not batch:
            break
    with raw_connection(url) as conn:
        committed = {
            (run_id, version)
            for run_id, version in conn.execute("SELECT run_id, version FROM ledger_events")
        }
    assert len(committed) == expected_total
    return seen, committed


def assert_seen_exactly_once_in_run_order(seen: list[Key], committed: set[Key]) -> None:
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    missing = committed - set(seen)
    assert not missing, f"{len(missing)} committed events were skipped, e.g. {sorted(missing)[:3]}"
    last_version: dict[str, int] = {}
    for run_id, version in seen:
        assert version > last_version.get(run_id, 0), f"{run_id} v{version} out of order"
        last_version[run_id] = version


@pytest.mark.slow
def test_a_tailing_reader_sees_every_committed_event_once_in_order(pg_url: str) -> None:
    with ledger.connect(pg_url) as led:
        cursor = START

        def read_batch() -> list[tuple[Key, int]]:
            nonlocal cursor
            records = led.store.read_log(cursor, 2000)
            if records:
                cursor = LogCursor(records[-1].tx_id, records[-1].position)
            return [((r.run_id, r.version), r.position) for r in records]

        seen, committed = run_workload(pg_url, read_batch)
    assert len(committed) >= 50_000
    assert_seen_exactly_once_in_run_order(seen, committed)


@pytest.mark.slow
def test_the_same_workload_read_by_raw_sequence_loses_events(pg_url: str) -> None:
    """A recorder that reads ``WHERE position > last ORDER BY position`` skips events."""
    ledger.connect(pg_url).close()  # create the schema
    with raw_connection(pg_url, autocommit=True) as conn:
        last = 0

        def read_batch() -> list[tuple[Key, int]]:
            nonlocal last
            rows = conn.execute(
                "SELECT run_id, version, position FROM ledger_events"
                " WHERE position > %s ORDER BY position LIMIT 2000",
                (last,),
            ).fetchall()
            if rows:
                last = int(rows[-1][2])  # type: ignore[call-overload]
            return [((str(r[0]), int(r[1])), int(r[2])) for r in rows]  # type: ignore[call-overload]

        seen, committed = run_workload(pg_url, read_batch)
    with pytest.raises(AssertionError, match="committed events were skipped"):
        assert_seen_exactly_once_in_run_order(seen, committed)
