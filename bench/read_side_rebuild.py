"""Benchmark 4: rebuilding all three read models from the log, against reading it.

The store is loaded once (``bench.read_side_data.AGENTS``: many users, interleaved
sessions), settled, and every read model built once unmeasured (so each measured
rebuild, like a real one, replaces a live generation). Then, per repeat and in
alternating order:

* floor: ``store.read_log`` from START in pages of the runner's batch size, each page
  decoded as the runner decodes it (``projections.runner.decode``: ``to_event``, a
  msgspec decode of every payload), nothing projected or written;
* rebuild: ``ProjectorRunner(led, default_projectors(), batch_size).rebuild(p)`` for
  each of the three, timed one by one; the rebuild's time is their sum.

A rebuild reads and decodes the log once per projector, so the floor is given both as
one read (what rebuilding all three needs at least) and as three (what the runner does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import ledger
from bench.read_side import (
    Figures,
    postgres_schema,
    ratio_line,
    settle,
    sqlite_file,
    vacuum_read_models,
    verdict,
)
from bench.read_side_data import AGENTS, load
from ledger.records import START
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner, decode


@dataclass(frozen=True)
class Plan:
    events: int
    repeats: int
    batch_size: int = 1000


FULL = Plan(events=200_000, repeats=5)
QUICK = Plan(events=50_000, repeats=3)


def read_floor(led: ledger.Ledger, batch_size: int) -> int:
    """Read the whole log in pages and decode it like the runner; events read."""
    cursor, read = START, 0
    while records := led.store.read_log(cursor, batch_size):
        decode(records)
        read += len(records)
        cursor = records[-1].cursor
    return read


@dataclass
class Result:
    backend: str
    events: int
    floor: Figures
    rebuild: Figures  # all three, events / summed wall time
    each: dict[str, Figures]


def measure(url: str, backend: str, plan: Plan) -> Result:
    started = time.monotonic()
    load(url, AGENTS, plan.events, parts=4 if backend == "postgres" else 2)
    settle(url)
    with ledger.connect(url) as led:
        runner = ProjectorRunner(led, default_projectors(), batch_size=plan.batch_size)
        events = read_floor(led, plan.batch_size)
        for projector in runner.projectors:
            runner.rebuild(projector)
        print(
            f"  loaded {events:,} events and built the read models once in "
            f"{time.monotonic() - started:,.0f}s",
            flush=True,
        )
        result = Result(
            backend,
            events,
            Figures("floor"),
            Figures("rebuild"),
            {p.name: Figures(p.name) for p in runner.projectors},
        )
        for r in range(plan.repeats):
            for step in ("floor", "rebuild") if r % 2 == 0 else ("rebuild", "floor"):
                if step == "floor":
                    t0 = time.perf_counter()
                    assert read_floor(led, plan.batch_size) == events
                    result.floor.values.append(events / (time.perf_counter() - t0))
                    continue
                vacuum_read_models(url)
                total = 0.0
                for projector in runner.projectors:
                    t0 = time.perf_counter()
                    assert runner.rebuild(projector) == events
                    took = time.perf_counter() - t0
                    result.each[projector.name].values.append(events / took)
                    total += took
                result.rebuild.values.append(events / total)
            print(
                f"  repeat {r + 1}/{plan.repeats}: floor {result.floor.values[-1]:,.0f} "
                f"events/s, rebuild of all three {result.rebuild.values[-1]:,.0f} events/s",
                flush=True,
            )
    return result


def report(result: Result) -> None:
    print(
        f"\nBenchmark 4: rebuild on {result.backend}, {result.events:,} events (median of repeats)"
    )
    print(f"  {'':<52} {'events/s':>10} {'(min-max)':>17}")
    rows = [("floor: read_log + decode, one read", result.floor)]
    rows += [(f"rebuild {name}", f) for name, f in result.each.items()]
    rows.append(("rebuild all three (events / summed time)", result.rebuild))
    for label, figures in rows:
        print(f"  {label:<52} {figures.median:>10,.0f} {figures.spread():>17}")
    print()
    one = ratio_line("rebuild / floor, vs one read", result.rebuild, result.floor)
    ratio_line("rebuild / floor, vs three reads", result.rebuild, result.floor, 3.0)
    if result.backend == "postgres":
        verdict("rebuild / floor (one read)", one, 0.5, "x", True)
        verdict("rebuild events/s", result.rebuild.median, 30_000, "ev/s", True)


def run(quick: bool = False) -> list[Result]:
    plan = QUICK if quick else FULL
    results = []
    print(
        f"\nBenchmark 4: rebuild of all three read models, {plan.events:,} events, "
        f"batch {plan.batch_size}",
        flush=True,
    )
    with postgres_schema("rebuild") as url:
        results.append(measure(url, "postgres", plan))
    with sqlite_file() as url:
        results.append(measure(url, "sqlite", plan))
    for result in results:
        report(result)
    return results
