"""Benchmark 6: ``t.conversation(session_id)`` latency with many sessions stored.

The store gets ``sessions`` short sessions (``bench.read_side_data.SHORT``: run_started
and one five-event turn each, ten sessions per user), then one ``catch_up()`` of all
three projectors, timed. Each repeat takes two fresh random sets of sessions: before
the repeat, one more turn is written (public API) to each session of the second set,
with no runner running, so its stored document is one turn behind and the read folds
that turn (``projections.reading.current``). Reads then alternate between the two sets,
one call at a time, each timed alone (``perf_counter_ns`` around the call).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import ledger
from bench.read_side import Figures, figure_pairs, latency_ms, on_both, settle, verdict
from bench.read_side_data import SHORT, load, run_id, session_id, user_id
from bench.workload import api_turn
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner

_PARTS = 4  # loader processes; sessions are numbered per loader


@dataclass(frozen=True)
class Plan:
    sessions: int
    samples: int  # reads per set per repeat
    repeats: int


FULL = Plan(sessions=100_000, samples=2000, repeats=5)
QUICK = Plan(sessions=10_000, samples=1000, repeats=3)


@dataclass
class Result:
    backend: str
    catch_up_events_per_s: float
    fresh: tuple[Figures, Figures]  # p50, p99 per repeat (ms)
    behind: tuple[Figures, Figures]


def _sessions(plan: Plan) -> list[tuple[str, str, str]]:
    """(user, session, run) of sessions the loaders surely completed, shuffled."""
    per_part = plan.sessions // _PARTS - SHORT.active
    found = [
        (user_id(p, s, SHORT), session_id(p, s), run_id(p, s, 0))
        for p in range(_PARTS)
        for s in range(per_part)
    ]
    random.Random(7).shuffle(found)
    return found


def measure(url: str, backend: str, plan: Plan) -> Result:
    started = time.monotonic()
    events_per_session = 1 + 5  # run_started + one turn
    load(url, SHORT, plan.sessions * events_per_session, parts=_PARTS)
    settle(url)
    print(f"  loaded {plan.sessions:,} sessions in {time.monotonic() - started:,.0f}s", flush=True)
    result = Result(
        backend, 0.0, (Figures("p50"), Figures("p99")), (Figures("p50"), Figures("p99"))
    )
    with ledger.connect(url) as led:
        t0 = time.perf_counter()
        applied = ProjectorRunner(led, default_projectors(), batch_size=1000).catch_up()
        took = time.perf_counter() - t0
        result.catch_up_events_per_s = applied / 3 / took
        print(
            f"  catch-up of all three projectors: {applied // 3:,} events in {took:,.1f}s "
            f"({result.catch_up_events_per_s:,.0f} events/s)",
            flush=True,
        )
        pool = _sessions(plan)
        for user, session, _ in pool[-200:]:  # warm-up: connections, prepared statements
            led.tenant(user).conversation(session)
        for r in range(plan.repeats):
            chunk = pool[2 * r * plan.samples : 2 * (r + 1) * plan.samples]
            fresh, behind = chunk[: plan.samples], chunk[plan.samples :]
            for n, (user, _, run) in enumerate(behind):
                api_turn(led.tenant(user).run(run), 1000 + n)
            times: tuple[list[int], list[int]] = ([], [])
            for i in range(plan.samples):
                pair = ((0, fresh[i]), (1, behind[i]))
                for which, (user, session, _) in pair if i % 2 else pair[::-1]:
                    tenant = led.tenant(user)
                    t0_ns = time.perf_counter_ns()
                    tenant.conversation(session)
                    times[which].append(time.perf_counter_ns() - t0_ns)
            for figures, latencies in zip((result.fresh, result.behind), times, strict=True):
                p50, p99 = latency_ms(latencies)
                figures[0].values.append(p50)
                figures[1].values.append(p99)
            print(
                f"  repeat {r + 1}/{plan.repeats}: caught up p50 {result.fresh[0].values[-1]:.3f}"
                f" p99 {result.fresh[1].values[-1]:.3f} ms; one turn behind p50 "
                f"{result.behind[0].values[-1]:.3f} p99 {result.behind[1].values[-1]:.3f} ms",
                flush=True,
            )
    return result


def report(result: Result, plan: Plan) -> None:
    print(
        f"\nBenchmark 6: t.conversation() on {result.backend}, {plan.sessions:,} sessions, "
        f"{plan.samples:,} reads per case and repeat (median of repeats)"
    )
    cases = (("caught up", *result.fresh), ("one turn behind", *result.behind))
    figure_pairs(("case", "p50 ms", "p99 ms"), cases, 40, ".3f")
    print(f"  catch-up before the reads: {result.catch_up_events_per_s:,.0f} events/s")
    if result.backend == "postgres":
        verdict("conversation p50, caught up", result.fresh[0].median, 1.0, "ms", False)


def run(quick: bool = False) -> list[Result]:
    plan = QUICK if quick else FULL
    print(f"\nBenchmark 6: t.conversation() latency, {plan.sessions:,} sessions", flush=True)
    results = on_both("reads", lambda url, backend: measure(url, backend, plan))
    for result in results:
        report(result, plan)
    return results
