"""Benchmark 3: append throughput (1 writer, ours, public API, Postgres) on an empty
store against one that already holds millions of events.

The empty store is a fresh schema per repeat; the loaded one is filled once by
``bench.preload`` (5M events, or 500k with ``--quick``) and measured in turns with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import ledger
from bench.pgserver import describe_server, fresh_database, with_schema
from bench.preload import preload, table_size
from bench.report import Ratio, Series, print_ratios, print_table, progress
from bench.runner import measure


@dataclass(frozen=True)
class Plan:
    preload: int
    repeats: int
    turns: int
    warmup: int


FULL = Plan(preload=5_000_000, repeats=5, turns=1000, warmup=30)
QUICK = Plan(preload=500_000, repeats=3, turns=300, warmup=20)


def run(quick: bool = False) -> list[Ratio]:
    plan = QUICK if quick else FULL
    spec = "bench.ours:OursApi"
    empty = Series("ours: public API, empty store", 1)
    loaded = Series(f"ours: public API, {plan.preload:,} events stored", 1)
    with fresh_database() as url:
        print(f"\nBenchmark 3 on {describe_server(url)}", flush=True)
        loaded_url = with_schema(url, "loaded")
        ledger.connect(loaded_url).close()
        started = time.monotonic()
        preload(url, "loaded", plan.preload)
        took = time.monotonic() - started
        print(
            f"  preloaded {plan.preload:,} events in {took:,.0f}s "
            f"(COPY, VACUUM ANALYZE, CHECKPOINT); ledger_events is "
            f"{table_size(url, 'loaded')}",
            flush=True,
        )
        for r in range(plan.repeats):
            empty_url = with_schema(url, f"empty_{r}")
            ledger.connect(empty_url).close()
            pair = [(empty, empty_url), (loaded, loaded_url)]
            for series, target in pair if r % 2 == 0 else pair[::-1]:
                sample = measure(spec, 1, plan.turns, plan.warmup, {"url": target})
                series.samples.append(sample)
                progress(r, plan.repeats, series.name, 1, sample)
    print_table("Benchmark 3: growth (median of repeats)", [empty, loaded])
    ratios = [Ratio(f"{plan.preload:,} stored / empty", loaded, empty, 0.8)]
    print_ratios(ratios)
    return ratios
