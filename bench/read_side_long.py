"""Benchmark 7: a long session, projected and read, against a short one in the same store.

A conversation is stored as a head plus pages of its oldest messages
(``projections.projector``), so what one more turn costs the projector should not grow
with the session. One session gets ``turns`` agent turns (``bench.workload``, five
events each: 4 messages a turn), a second one ten, both caught up. Each sample appends
one turn to one of them (alternating, public API) and times the ``catch_up()`` that
projects it (one batch, all three read models, the runner's default cache), then
``t.conversation()`` of that session, whole and its last 50 messages
(``last=50``). The ratio long/short of the batch time is the figure: 1x means a turn
costs the same whatever the session's length; so does the read of the last 50.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import ledger
from bench.read_side import Figures, figure_pairs, on_both, ratio_line
from bench.workload import api_turn
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner


@dataclass(frozen=True)
class Plan:
    turns: int
    samples: int  # per session and repeat
    repeats: int


LAST = 50  # messages of t.conversation(last=...)

FULL = Plan(turns=2000, samples=30, repeats=5)
QUICK = Plan(turns=500, samples=20, repeats=3)


@dataclass
class Result:
    backend: str
    batch: dict[str, Figures] = field(default_factory=dict)  # session -> ms per repeat
    read: dict[str, Figures] = field(default_factory=dict)
    last: dict[str, Figures] = field(default_factory=dict)  # t.conversation(last=LAST)


def measure(url: str, backend: str, plan: Plan) -> Result:
    result = Result(backend)
    sizes = {"long": plan.turns, "short": 10}
    with ledger.connect(url) as led:
        t = led.tenant("usr_long")
        runner = ProjectorRunner(led, default_projectors())
        runs = {}
        for name, turns in sizes.items():
            runs[name] = run = t.start_run(session_id=f"sess_{name}", model="gpt-4o")
            for n in range(turns):
                api_turn(run, n)
                if n % 250 == 0:
                    runner.catch_up()
            result.batch[name], result.read[name] = Figures(name), Figures(name)
            result.last[name] = Figures(name)
        runner.catch_up()
        n = 100_000
        for _ in range(plan.repeats):
            times: dict[str, tuple[list[float], ...]] = {s: ([], [], []) for s in sizes}
            for _ in range(plan.samples):
                for name, run in runs.items():
                    api_turn(run, n)
                    n += 1
                    t0 = time.perf_counter()
                    runner.catch_up()
                    t1 = time.perf_counter()
                    t.conversation(run.session_id)
                    t2 = time.perf_counter()
                    t.conversation(run.session_id, last=LAST)
                    t3 = time.perf_counter()
                    for kept, took in zip(times[name], (t1 - t0, t2 - t1, t3 - t2), strict=True):
                        kept.append(took * 1e3)
            for name, (batch, read, last) in times.items():
                result.batch[name].values.append(statistics.median(batch))
                result.read[name].values.append(statistics.median(read))
                result.last[name].values.append(statistics.median(last))
            print(
                "  repeat: batch "
                + ", ".join(f"{s} {result.batch[s].values[-1]:.2f} ms" for s in sizes)
                + "; read "
                + ", ".join(f"{s} {result.read[s].values[-1]:.2f} ms" for s in sizes),
                flush=True,
            )
    return result


def report(result: Result, plan: Plan) -> None:
    print(
        f"\nBenchmark 7: a {plan.turns:,}-turn session ({plan.turns * 4:,} messages) against "
        f"a 10-turn one, {result.backend} (medians of {plan.repeats} repeats)"
    )
    sessions = [(name, result.batch[name], result.read[name]) for name in result.batch]
    figure_pairs(("session", "batch ms", "read ms"), sessions, 10, ".2f")
    for name, figures in result.last.items():
        spread = figures.spread(".2f")
        print(f"  {name:<10} read of the last {LAST}: {figures.median:.2f} ms ({spread})")
    ratio_line(
        "one turn's batch, long / short session", result.batch["long"], result.batch["short"]
    )


def run(quick: bool = False) -> list[Result]:
    plan = QUICK if quick else FULL
    print(f"\nBenchmark 7: a long session, {plan.turns:,} turns", flush=True)
    results = on_both("long", lambda url, backend: measure(url, backend, plan))
    for result in results:
        report(result, plan)
    return results
