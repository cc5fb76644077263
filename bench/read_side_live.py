"""Benchmark 5: live lag on Postgres, commit to visible in the conversation read model.

Per measurement, in a fresh schema: ONE runner process does what ``ledger projections
run`` does (``ProjectorRunner(led, default_projectors(), batch_size=1000).run(stop)``,
woken by NOTIFY); 16 writer processes write turns through the public API, each on two
sessions at a time (8 turns a run, then ``complete()`` and a new run in a new session);
an observer process takes every n-th turn's ``(time.time() after `with run.turn()`
returned, user, session, run_id, version)`` and waits until the conversation is
stored with that turn. Lag = the time it saw that minus the commit time. The observer
reads the conversation projector's cursor every ``_SWEEP_SECONDS`` (documents and
cursor commit in one transaction, so a lag reads up to that much high) and, at the
end, checks every stored conversation holds the turns it was timed for
(``applied[run_id] >= version``, no read-your-writes folding).

Three loads: writers as fast as they can (the machine saturated, as in benchmark 1);
the same with the writer processes at ``nice 10``, i.e. the runner (and the observer)
given the CPU before the agents, as a deployment would by priority or a core of its
own; and paced at 10 turns/s per writer (about 800 events/s in all). Writers set up,
then warm up together (paced too), then measure; they exit only after the last lag is
in, so no start-up or exit burst of 16 processes lands in the measured phase.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, NamedTuple

import ledger
from bench.read_side import Figures, postgres_schema, settle, verdict
from bench.report import percentile
from bench.workload import EVENTS_PER_TURN, api_turn
from ledger.records import LogCursor
from projections.catalog import CONVERSATION, default_projectors
from projections.runner import ProjectorRunner
from projections.storage import storage_for
from projections.storage.base import Load

_TIMEOUT = 300.0
_TURNS_PER_RUN = 8
_SWEEP_SECONDS = 0.005


@dataclass(frozen=True)
class Scenario:
    name: str
    interval: float  # seconds between one writer's turns; 0: as fast as it can
    turns: int  # measured turns per writer
    sample_every: int  # every n-th measured turn of a writer is timed
    writer_nice: int = 0  # added to the writer processes' niceness


@dataclass(frozen=True)
class Plan:
    repeats: int
    scenarios: tuple[Scenario, ...]
    writers: int = 16
    warmup: int = 10


FULL = Plan(
    repeats=5,
    scenarios=(
        Scenario("as fast as they can", 0.0, 200, 5),
        Scenario("as fast as they can, writers nice 10", 0.0, 200, 5, writer_nice=10),
        Scenario("paced, 10 turns/s per writer", 0.1, 80, 2),
    ),
)
QUICK = Plan(
    repeats=2,
    scenarios=(
        Scenario("as fast as they can", 0.0, 60, 3),
        Scenario("as fast as they can, writers nice 10", 0.0, 60, 3, writer_nice=10),
        Scenario("paced, 10 turns/s per writer", 0.1, 30, 1),
    ),
)


def _runner(url: str, ready: Any, stop: Any, out: Any) -> None:
    """``ledger projections run``: follow the log until ``stop``; report its CPU time."""
    try:
        with ledger.connect(url) as led:
            runner = ProjectorRunner(led, default_projectors(), batch_size=1000)
            runner.catch_up()
            halt = threading.Event()

            def relay() -> None:
                stop.wait()
                halt.set()

            threading.Thread(target=relay, daemon=True).start()
            ready.set()
            cpu = time.process_time()
            runner.run(halt)
            out.put(("runner", time.process_time() - cpu, None))
    except BaseException:
        ready.set()
        out.put(("runner", 0.0, traceback.format_exc()))


def _writer(
    index: int,
    url: str,
    scenario: Scenario,
    warmup: int,
    barrier: Any,
    release: Any,
    samples: Any,
    out: Any,
) -> None:
    try:
        if scenario.writer_nice:
            os.nice(scenario.writer_nice)
        with ledger.connect(url) as led:
            tenant = led.tenant(f"usr_live_{index:02d}")
            opened = 0

            def new_run() -> ledger.Run:
                nonlocal opened
                opened += 1
                return tenant.start_run(session_id=f"sess_{index:02d}_{opened}", model="gpt-4o")

            runs, done = [new_run(), new_run()], [0, 0]
            events = 0
            barrier.wait(timeout=_TIMEOUT)  # every writer set up: warm up together
            next_at = time.monotonic() + random.uniform(0, scenario.interval)
            for n in range(warmup + scenario.turns):
                if n == warmup:
                    barrier.wait(timeout=_TIMEOUT)
                    start, events = time.time(), 0
                    next_at = time.monotonic() + random.uniform(0, scenario.interval)
                if scenario.interval:
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += scenario.interval
                slot = n % 2
                run = runs[slot]
                api_turn(run, n)
                committed = time.time()
                events += EVENTS_PER_TURN
                if n >= warmup and (n - warmup) % scenario.sample_every == 0:
                    samples.put(
                        (committed, tenant.user_id, run.session_id, run.run_id, run.version)
                    )
                done[slot] += 1
                if done[slot] == _TURNS_PER_RUN:
                    run.complete()
                    runs[slot], done[slot] = new_run(), 0
                    events += 2
            out.put(("writer", (start, time.time(), events), None))
            release.wait(_TIMEOUT)  # exit (a burst of CPU) only once the lags are all in
    except BaseException:
        barrier.abort()
        out.put(("writer", None, traceback.format_exc()))


#: Where each sampled turn's last event sits in the log: (sample index, tx_id, position).
_POSITIONS = """
SELECT s.i, e.tx_id, e.position
FROM unnest(%(users)s::text[], %(runs)s::text[], %(versions)s::bigint[])
     WITH ORDINALITY AS s(user_id, run_id, version, i)
JOIN ledger_events e USING (user_id, run_id, version)
"""


class _Turn(NamedTuple):
    committed: float  # time.time() when ``with run.turn()`` returned
    user_id: str
    session_id: str
    run_id: str
    version: int


def _observer(url: str, samples: Any, out: Any) -> None:
    """Time each sampled turn from its commit until the conversation projector has
    committed past it, then check every stored conversation includes its turns.

    A sweep is one small query (the projector's cursor): the cursor and the documents
    it covers commit in one transaction, so past the cursor means in the stored
    conversation; the check at the end reads the documents to confirm it. (Polling
    every pending document each sweep made the observer use more CPU than the runner
    it was timing.)"""
    try:
        with ledger.connect(url) as led:
            storage = storage_for(led.store)
            seen_turns: list[tuple[LogCursor, _Turn]] = []
            waiting: list[tuple[LogCursor, _Turn]] = []
            lags: list[float] = []
            closing_at: float | None = None
            cpu = time.process_time()  # what observing costs, not starting up
            while True:
                fresh: list[_Turn] = []
                try:
                    block = not waiting and closing_at is None
                    while item := samples.get(block, 0.1):
                        block = False
                        fresh.append(_Turn(*item))
                    closing_at = closing_at or time.time()  # None: the writers are done
                except queue.Empty:
                    pass
                if fresh:
                    waiting += _positions(led, fresh)
                if not waiting and closing_at is not None:
                    break
                row = storage.projector(CONVERSATION)
                seen = time.time()
                if row is not None:
                    passed = [(c, t) for c, t in waiting if c <= row.cursor]
                    lags += [seen - t.committed for _, t in passed]
                    seen_turns += passed
                    waiting = [(c, t) for c, t in waiting if c > row.cursor]
                if closing_at is not None and time.time() - closing_at > 60:
                    break
                time.sleep(_SWEEP_SECONDS)
            _check_stored(storage, seen_turns)
            out.put(("observer", (lags, len(waiting), time.process_time() - cpu), None))
    except BaseException:
        out.put(("observer", None, traceback.format_exc()))


def _positions(led: ledger.Ledger, turns: list[_Turn]) -> list[tuple[LogCursor, _Turn]]:
    """Each turn's last event's place in the log, in one round trip."""
    params = {
        "users": [t.user_id for t in turns],
        "runs": [t.run_id for t in turns],
        "versions": [t.version for t in turns],
    }
    with led.store.connection() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(_POSITIONS, params).fetchall()
    if len(rows) != len(turns):
        raise RuntimeError(f"{len(turns) - len(rows)} sampled turns are not in the log")
    return [(LogCursor(int(tx), int(pos)), turns[int(i) - 1]) for i, tx, pos in rows]


def _check_stored(storage: Any, turns: list[tuple[LogCursor, _Turn]]) -> None:
    """Every turn seen past the cursor is in its stored conversation document: named
    in it at or past its version, or (its run ended and left it) before its cursor."""
    live = storage.projector(CONVERSATION)
    keys = sorted({(t.user_id, t.session_id) for _, t in turns})
    (found,) = storage.load_many([Load(CONVERSATION, live.generation, keys)])
    projector = next(p for p in default_projectors() if p.name == CONVERSATION)
    docs = {key: projector.load(data) for key, data in found.items()}

    def stored(cursor: LogCursor, turn: _Turn) -> bool:
        doc = docs.get((turn.user_id, turn.session_id))
        if doc is None:
            return False
        if turn.run_id in doc.applied:
            return doc.applied[turn.run_id] >= turn.version
        return doc.cursor is not None and cursor <= doc.cursor

    missing = [t for c, t in turns if not stored(c, t)]
    if missing:
        raise RuntimeError(f"{len(missing)} turns past the cursor are not in their conversation")


@dataclass
class Sample:
    events_per_s: float
    lags_ms: list[float]
    unresolved: int
    runner_cpu: float  # share of one core the runner used
    observer_cpu: float


def measure(url: str, scenario: Scenario, plan: Plan) -> Sample:
    ledger.connect(url).close()
    settle(url)  # the last measurement's WAL and dead rows are not this one's to pay
    time.sleep(2)
    ctx = mp.get_context("spawn")
    out, samples = ctx.Queue(), ctx.Queue()
    ready, stop, release = ctx.Event(), ctx.Event(), ctx.Event()
    barrier = ctx.Barrier(plan.writers)
    runner = ctx.Process(target=_runner, args=(url, ready, stop, out), daemon=True)
    observer = ctx.Process(target=_observer, args=(url, samples, out), daemon=True)
    writers = [
        ctx.Process(
            target=_writer,
            args=(i, url, scenario, plan.warmup, barrier, release, samples, out),
            daemon=True,
        )
        for i in range(plan.writers)
    ]
    runner.start()
    ready.wait(_TIMEOUT)
    observer.start()
    started = time.time()
    for p in writers:
        p.start()
    got: dict[str, list[Any]] = {"writer": [], "observer": [], "runner": []}
    try:
        for _ in writers:
            _collect(out, got)
        samples.put(None)
        _collect(out, got)
        wall = time.time() - started
        stop.set()
        _collect(out, got)
    finally:
        stop.set()
        release.set()
        for p in [*writers, observer, runner]:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    spans = got["writer"]
    events = sum(s[2] for s in spans)
    rate = events / (max(s[1] for s in spans) - min(s[0] for s in spans))
    lags, unresolved, observer_cpu = got["observer"][0]
    return Sample(
        rate, [s * 1000 for s in lags], unresolved, got["runner"][0] / wall, observer_cpu / wall
    )


def _collect(out: Any, got: dict[str, list[Any]]) -> None:
    try:
        kind, value, error = out.get(timeout=_TIMEOUT)
    except queue.Empty:
        raise RuntimeError("a live-lag process did not report in time") from None
    if error:
        raise RuntimeError(f"a live-lag {kind} failed:\n{error}")
    got[kind].append(value)


def run(quick: bool = False) -> dict[str, list[Sample]]:
    plan = QUICK if quick else FULL
    print(
        f"\nBenchmark 5: live lag, {plan.writers} writers (public API) and one runner", flush=True
    )
    results: dict[str, list[Sample]] = {s.name: [] for s in plan.scenarios}
    with postgres_schema("unused") as base:
        for r in range(plan.repeats):
            order = plan.scenarios if r % 2 == 0 else plan.scenarios[::-1]
            for i, scenario in enumerate(order):
                url = base.replace("schema=unused", f"schema=live_{r}_{i}")
                sample = measure(url, scenario, plan)
                results[scenario.name].append(sample)
                p50, p99 = percentile(sample.lags_ms, 50), percentile(sample.lags_ms, 99)
                print(
                    f"  repeat {r + 1}/{plan.repeats} {scenario.name:<38} "
                    f"{sample.events_per_s:>7,.0f} events/s written, "
                    f"{len(sample.lags_ms)} samples: lag p50 {p50:6.1f} ms  p99 {p99:7.1f} ms"
                    f"  max {max(sample.lags_ms):7.1f} ms  unresolved {sample.unresolved}  "
                    f"cpu: runner {sample.runner_cpu:.0%}, observer {sample.observer_cpu:.0%}",
                    flush=True,
                )
    report(results)
    return results


def report(results: dict[str, list[Sample]]) -> None:
    print(
        "\nBenchmark 5: live lag, commit to visible in the stored conversation (median of repeats)"
    )
    header = f"  {'writers':<38} {'events/s':>9} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} "
    print(header + f"{'max ms':>8} {'runner cpu':>11}")
    for name, samples in results.items():
        rate = Figures("rate", [s.events_per_s for s in samples])
        p50 = Figures("p50", [percentile(s.lags_ms, 50) for s in samples])
        p99 = Figures("p99", [percentile(s.lags_ms, 99) for s in samples])
        worst = Figures("max", [max(s.lags_ms) for s in samples])
        cpu = Figures("cpu", [s.runner_cpu for s in samples])
        count = sum(len(s.lags_ms) for s in samples) // len(samples)
        print(
            f"  {name:<38} {rate.median:>9,.0f} {count:>8} {p50.median:>8.1f} "
            f"{p99.median:>8.1f} {worst.median:>8.1f} {cpu.median:>11.0%}"
        )
        verdict(f"lag p99, {name}", p99.median, 100, "ms", False)
