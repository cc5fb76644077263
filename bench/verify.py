"""``python -m bench verify``: how fast ``ledger verify`` checks a large Postgres store.

The store (a schema of a fresh database, dropped at the end) is loaded by binary COPY
with ``events`` events sealed by ``ledger.chain.seal``, so every chain verifies for real:
runs of 100 events (the benchmark turn's payloads, in turn order), ten runs per user,
committed in batches. Then VACUUM ANALYZE and CHECKPOINT, and one unmeasured pass of
each system so both meet a warm cache.

Per repeat, in alternating order:

* floor: one server-side binary cursor selecting the same rows (every column
  ``Auditor.verify`` reads) in the order verify checks them, nothing computed: what
  reading the store costs at least;
* verify: ``led.auditor().verify()``, what ``ledger verify`` runs (minus printing),
  from a fresh connection each time.

Figures are medians of the repeats; the target is >= 50,000 events/s for verify.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

import ledger
from bench.pgserver import conninfo, describe_server, fresh_database, with_schema
from bench.preload import EVENT_COLUMNS, EVENT_TYPES
from bench.read_side import Figures, ratio_line, verdict
from bench.workload import encoded_turn
from ledger.chain import GENESIS, Unsealed, seal
from ledger.store.postgres_sql import RECORD_COLUMNS

SCHEMA = "bench_verify"
TARGET = 50_000


@dataclass(frozen=True)
class Plan:
    events: int
    repeats: int
    per_run: int = 100
    runs_per_user: int = 10
    batch_runs: int = 500


FULL = Plan(events=1_000_000, repeats=3)
QUICK = Plan(events=100_000, repeats=3)


def load(url: str, plan: Plan) -> None:
    """COPY ``plan.events`` properly chained events (and their runs) into the store."""
    turn = encoded_turn(0)
    runs = plan.events // plan.per_run
    base = datetime(2025, 1, 1, tzinfo=UTC)
    with psycopg.connect(conninfo(url, SCHEMA), autocommit=True) as conn:
        for first in range(0, runs, plan.batch_runs):
            batch = range(first, min(runs, first + plan.batch_runs))
            names = [
                (f"run_v{r:07d}", f"usr_v{r // plan.runs_per_user:06d}", f"sess_v{r:07d}")
                for r in batch
            ]
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY ledger_runs (run_id, user_id, session_id) FROM STDIN") as copy:
                    for row in names:
                        copy.write_row(row)
                with cur.copy(
                    f"COPY ledger_events ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(EVENT_TYPES)
                    for r, (run_id, user_id, session_id) in zip(batch, names, strict=True):
                        start = base + timedelta(seconds=r)
                        unsealed = [
                            Unsealed(
                                type=turn[v % len(turn)][0],
                                schema=1,
                                occurred_at=start + timedelta(milliseconds=v),
                                payload=turn[v % len(turn)][1],
                            )
                            for v in range(plan.per_run)
                        ]
                        for e in seal(user_id, session_id, run_id, 0, GENESIS, unsealed):
                            copy.write_row(
                                (
                                    user_id,
                                    run_id,
                                    e.version,
                                    session_id,
                                    e.type,
                                    e.schema,
                                    e.occurred_at,
                                    e.payload,
                                    e.prev_hash,
                                    e.hash,
                                )
                            )
        conn.execute("VACUUM ANALYZE ledger_runs")
        conn.execute("VACUUM ANALYZE ledger_events")
        conn.execute("CHECKPOINT")


def floor(url: str) -> int:
    """Select every row verify reads, in its order, through one server-side cursor."""
    rows = 0
    with (
        psycopg.connect(conninfo(url, SCHEMA)) as conn,
        conn.cursor("verify_floor", binary=True) as cur,
    ):
        cur.itersize = 10_000
        cur.execute(f"SELECT {RECORD_COLUMNS} FROM ledger_events ORDER BY user_id, run_id, version")
        while batch := cur.fetchmany(10_000):
            rows += len(batch)
    return rows


def verify(url: str) -> int:
    """What ``ledger verify`` does: every chain of the store; the events it checked."""
    with ledger.connect(with_schema(url, SCHEMA)) as led:
        report = led.auditor().verify()
    if not report.ok:
        raise AssertionError(f"the benchmark store does not verify: {report.problems[:3]}")
    return report.events


def run(quick: bool = False) -> None:
    plan = QUICK if quick else FULL
    print(f"\nBenchmark: ledger verify, {plan.events:,} events on Postgres", flush=True)
    with fresh_database() as url:
        print(f"  on {describe_server(url)}", flush=True)
        ledger.connect(with_schema(url, SCHEMA)).close()  # migrate
        started = time.monotonic()
        load(url, plan)
        print(
            f"  loaded {plan.events:,} events ({plan.events // plan.per_run:,} runs) in "
            f"{time.monotonic() - started:,.0f}s",
            flush=True,
        )
        systems = {"floor": floor, "verify": verify}
        figures = {name: Figures(name) for name in systems}
        for name, measure in systems.items():  # warm the cache, unmeasured
            assert measure(url) == plan.events, name
        for r in range(plan.repeats):
            order = list(systems) if r % 2 == 0 else list(reversed(systems))
            for name in order:
                t0 = time.perf_counter()
                checked = systems[name](url)
                elapsed = time.perf_counter() - t0
                assert checked == plan.events, (name, checked)
                figures[name].values.append(checked / elapsed)
                print(
                    f"  repeat {r + 1}/{plan.repeats} {name:<7} {checked / elapsed:>10,.0f} "
                    f"events/s ({elapsed:.2f}s)",
                    flush=True,
                )
    print("\nBenchmark: ledger verify (median of repeats)")
    for f in figures.values():
        print(f"  {f.name:<52} {f.median:>10,.0f} events/s  (min-max {f.spread()})")
    ratio_line("verify / floor", figures["verify"], figures["floor"])
    verdict("verify events/s", figures["verify"].median, TARGET, "ev/s", True)
