"""Benchmark 4: rebuilding all three read models from the log, against reading it.

The store is loaded once (``bench.read_side_data.AGENTS``: many users, interleaved
sessions), settled, and every read model built once unmeasured (so each measured
rebuild, like a real one, replaces a live generation). Then, per repeat and in
alternating order:

* floor: ``store.read_log`` from START in pages of 1,000, each page decoded in full
  as readers of the log get it (``projections.projector.decode``: ``to_event``, a msgspec
  decode of every payload, and the hashes as hex), nothing projected or written. (The
  runner decodes the same payloads the same way, but leaves out the hashes, which no
  reducer reads.);
* rebuild: ``ProjectorRunner(led, default_projectors()).rebuild_all()``, what
  ``ledger projections rebuild`` does: ONE pass over the log for the three read models,
  in the runner's rebuild batches (``rebuild_batch_size``), each batch one commit of
  all three builds, then the three swaps.

Both read the log once, so the ratio is rebuild / floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import ledger
from bench.read_side import (
    Figures,
    on_both,
    ratio_line,
    settle,
    vacuum_read_models,
    verdict,
)
from bench.read_side_data import AGENTS, load
from ledger.records import START
from projections.catalog import default_projectors
from projections.projector import decode
from projections.runner import ProjectorRunner


@dataclass(frozen=True)
class Plan:
    events: int
    repeats: int
    page_size: int = 1000  # of the floor's reads


FULL = Plan(events=200_000, repeats=5)
QUICK = Plan(events=50_000, repeats=3)


def read_floor(led: ledger.Ledger, page_size: int) -> int:
    """Read the whole log in pages and decode it like the runner; events read."""
    cursor, read = START, 0
    while records := led.store.read_log(cursor, page_size):
        decode(records)
        read += len(records)
        cursor = records[-1].cursor
    return read


@dataclass
class Result:
    backend: str
    events: int
    batch_size: int  # the runner's rebuild batches
    floor: Figures
    rebuild: Figures  # all three in one pass, events / wall time


def measure(url: str, backend: str, plan: Plan) -> Result:
    started = time.monotonic()
    load(url, AGENTS, plan.events, parts=4 if backend == "postgres" else 2)
    settle(url)
    with ledger.connect(url) as led:
        runner = ProjectorRunner(led, default_projectors())
        events = read_floor(led, plan.page_size)
        runner.rebuild_all()
        print(
            f"  loaded {events:,} events and built the read models once in "
            f"{time.monotonic() - started:,.0f}s",
            flush=True,
        )
        result = Result(
            backend, events, runner.rebuild_batch_size, Figures("floor"), Figures("rebuild")
        )
        for r in range(plan.repeats):
            for step in ("floor", "rebuild") if r % 2 == 0 else ("rebuild", "floor"):
                if step == "floor":
                    t0 = time.perf_counter()
                    assert read_floor(led, plan.page_size) == events
                    result.floor.values.append(events / (time.perf_counter() - t0))
                    continue
                vacuum_read_models(url)
                t0 = time.perf_counter()
                assert runner.rebuild_all() == events
                result.rebuild.values.append(events / (time.perf_counter() - t0))
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
    rows = [
        ("floor: read_log + decode", result.floor),
        (f"rebuild all three, one pass (batch {result.batch_size:,})", result.rebuild),
    ]
    for label, figures in rows:
        print(f"  {label:<52} {figures.median:>10,.0f} {figures.spread():>17}")
    print()
    ratio = ratio_line("rebuild / floor", result.rebuild, result.floor)
    if result.backend == "postgres":
        verdict("rebuild / floor", ratio, 0.5, "x", True)
        verdict("rebuild events/s", result.rebuild.median, 30_000, "ev/s", True)


def run(quick: bool = False) -> list[Result]:
    plan = QUICK if quick else FULL
    print(f"\nBenchmark 4: rebuild of all three read models, {plan.events:,} events", flush=True)
    results = on_both("rebuild", lambda url, backend: measure(url, backend, plan))
    for result in results:
        report(result)
    return results
