"""Benchmark 8: ``t.runs(order_by=..., limit=10)`` of one tenant with many runs stored.

One tenant gets ``runs`` runs (``run_started`` and one five-event turn each, loaded as
``bench.read_side_data`` loads), then one ``catch_up()`` of all three projectors, then
``behind`` more runs through the public API with no runner running (read-your-writes:
the listing folds them). Each repeat times, one call each: the ten costliest runs, the
ten with most tokens, the ten longest, the ten oldest (no order), and the full listing
(the baseline: every run built into a model).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import ledger
from bench.read_side import Figures, on_both, ratio_line, settle
from bench.read_side_data import Shape, load, user_id
from bench.workload import api_turn
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner


@dataclass(frozen=True)
class Plan:
    runs: int
    behind: int  # runs written after the catch-up
    repeats: int


FULL = Plan(runs=100_000, behind=100, repeats=5)
QUICK = Plan(runs=10_000, behind=20, repeats=3)

#: One tenant: every session (one run of one turn) is the same user's.
_ONE_TENANT = Shape(sessions_per_user=10**9, runs=1, turns=1, memory_every=0, complete=False)
_CASES = ("cost", "tokens", "wall_time", None)


@dataclass
class Result:
    backend: str
    top: dict[str, Figures] = field(default_factory=dict)  # seconds, by order
    full: Figures = field(default_factory=lambda: Figures("all runs"))


def _timed(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def measure(url: str, backend: str, plan: Plan) -> Result:
    load(url, _ONE_TENANT, plan.runs * 6, parts=1, chunk=200)
    settle(url)
    result = Result(backend)
    with ledger.connect(url) as led:
        ProjectorRunner(led, default_projectors(), batch_size=1000).catch_up()
        tenant = led.tenant(user_id(0, 0, _ONE_TENANT))
        for n in range(plan.behind):
            api_turn(tenant.start_run(f"sess_behind_{n}", f"run_behind_{n}"), n)
        tenant.runs(order_by="cost", limit=10)  # warm-up: connections, statements
        for r in range(plan.repeats):
            for order in _CASES:
                figures = result.top.setdefault(str(order), Figures(str(order)))
                figures.values.append(_timed(partial(tenant.runs, order_by=order, limit=10)))
            result.full.values.append(_timed(tenant.runs))
            shown = ", ".join(f"{k} {f.values[-1]:.3f}s" for k, f in result.top.items())
            print(
                f"  repeat {r + 1}/{plan.repeats}: top 10 by {shown}; "
                f"all {result.full.values[-1]:.3f}s",
                flush=True,
            )
    return result


def report(result: Result, plan: Plan) -> None:
    print(
        f"\nBenchmark 8: t.runs(order_by=..., limit=10) on {result.backend}, "
        f"{plan.runs + plan.behind:,} runs of one tenant ({plan.behind} not projected yet), "
        f"median of {plan.repeats} repeats"
    )
    for order, figures in result.top.items():
        print(
            f"  top 10 by {order:<10} {figures.median * 1000:9.1f} ms  ({figures.spread('.3f')} s)"
        )
    print(
        f"  all runs          {result.full.median * 1000:9.1f} ms  ({result.full.spread('.3f')} s)"
    )
    ratio_line("all runs / top 10 by cost", result.full, result.top["cost"])


def run(quick: bool = False) -> list[Result]:
    plan = QUICK if quick else FULL
    print(f"\nBenchmark 8: t.runs() top 10 of {plan.runs:,} runs", flush=True)
    results = on_both("runs", lambda url, backend: measure(url, backend, plan))
    for result in results:
        report(result, plan)
    return results
