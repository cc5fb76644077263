"""Run W writer processes (multiprocessing spawn) and measure their common phase.

A writer is a class named by ``"module:Class"``: ``Class(index, **params)`` sets up
(connects, starts its own runs, precomputes whatever it may), ``turn(n)`` writes turn
``n``, ``close()`` releases. Each process does ``warmup`` unmeasured turns, waits on a
barrier with the others, then times ``turns`` turns one by one. events/s is
``writers * turns * 5`` over the span from the first measured start to the last end;
the writers' own CPU time per turn (client side: Python, psycopg/sqlite3 calls) is
reported beside it, to tell client cost from database cost.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from bench.report import Sample, Series, progress
from bench.workload import EVENTS_PER_TURN

_SETUP_TIMEOUT = 300.0


class Writer(Protocol):
    def turn(self, n: int) -> None: ...

    def close(self) -> None: ...


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _writer_process(
    spec: str,
    index: int,
    params: dict[str, Any],
    warmup: int,
    turns: int,
    barrier: Any,
    results: Any,
) -> None:
    try:
        writer: Writer = _load(spec)(index, **params)
        for n in range(warmup):
            writer.turn(n)
        barrier.wait(timeout=_SETUP_TIMEOUT)
        latencies: list[int] = []
        clock = time.perf_counter_ns
        cpu = time.process_time()
        start = clock()
        for n in range(warmup, warmup + turns):
            t0 = clock()
            writer.turn(n)
            latencies.append(clock() - t0)
        end = clock()
        cpu = time.process_time() - cpu
        writer.close()
        results.put((index, start, end, latencies, cpu, None))
    except BaseException:
        barrier.abort()
        results.put((index, 0, 0, [], 0.0, traceback.format_exc()))


def measure(
    spec: str, writers: int, turns: int, warmup: int, params: dict[str, Any] | None = None
) -> Sample:
    """Spawn ``writers`` processes of writer ``spec``; the measured phase as a Sample."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(writers)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_writer_process,
            args=(spec, i, params or {}, warmup, turns, barrier, results),
            daemon=True,
        )
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    got: list[tuple[int, int, int, list[int], float, str | None]] = []
    try:
        for _ in procs:
            got.append(results.get(timeout=_SETUP_TIMEOUT * 2))
    except queue.Empty:
        raise RuntimeError(f"{spec}: writers did not report in time") from None
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    errors = [e for *_, e in got if e]
    if errors:
        raise RuntimeError(f"{spec}: a writer failed:\n{errors[0]}")
    start = min(g[1] for g in got)
    end = max(g[2] for g in got)
    latencies = [ns for g in got for ns in g[3]]
    cpu_us = sum(g[4] for g in got) / (writers * turns) * 1e6
    return Sample.of(writers * turns * EVENTS_PER_TURN, (end - start) / 1e9, latencies, cpu_us)


#: A benchmark's own description of a system: any object with ``key``, ``name`` and
#: ``spec`` (the writer class, ``module:Class``).
SystemLike = Any


def interleaved(
    systems: Sequence[SystemLike],
    repeats: int,
    turns: Mapping[int, int],
    warmup: int,
    params_for: Callable[[SystemLike, int, int], dict[str, Any]],
) -> dict[tuple[str, int], Series]:
    """Measure every system at every writer count ``repeats`` times, the systems'
    order rotated each repeat so they share the machine's drift.

    ``turns`` maps a writer count to the turns each writer measures; ``params_for(system,
    repeat, writers)`` prepares a fresh store for one measurement and returns the
    writers' parameters. Returns the samples by ``(system key, writers)``.
    """
    series = {(s.key, w): Series(s.name, w) for w in turns for s in systems}
    for r in range(repeats):
        for w, measured in turns.items():
            order = [*systems[r % len(systems) :], *systems[: r % len(systems)]]
            for system in order:
                sample = measure(system.spec, w, measured, warmup, params_for(system, r, w))
                series[(system.key, w)].samples.append(sample)
                progress(r, repeats, system.name, w, sample)
    return series
