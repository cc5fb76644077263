"""Benchmark 2: SQLite appends, ours (public API and store alone) against raw sqlite3.

1 writer, and 4 writer processes on one file. Every measurement gets a fresh file in a
temporary directory; repeats are interleaved across systems.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ledger
from bench.raw_sqlite import create_raw_file
from bench.report import Ratio, print_ratios, print_table
from bench.runner import interleaved


@dataclass(frozen=True)
class System:
    key: str
    name: str
    spec: str
    prepare: Callable[[Path, int], dict[str, Any]]  # (fresh file path, total turns)


def _ours(path: Path, total: int) -> dict[str, Any]:
    url = f"sqlite:///{path}"
    ledger.connect(url).close()  # create the file and its schema before the writers start
    return {"url": url, "total": total}


def _raw(path: Path, total: int) -> dict[str, Any]:
    create_raw_file(str(path))
    return {"path": str(path), "total": total}


SYSTEMS = (
    System("api", "ours: public API", "bench.ours:OursApi", _ours),
    System("store", "ours: store.append", "bench.ours:OursStore", _ours),
    System("raw", "raw sqlite3 floor", "bench.raw_sqlite:RawSqlite", _raw),
)


@dataclass(frozen=True)
class Plan:
    repeats: int
    turns: dict[int, int]  # measured turns per writer, by writer count
    warmup: int


FULL = Plan(repeats=5, turns={1: 3000, 4: 1000}, warmup=50)
QUICK = Plan(repeats=3, turns={1: 500, 4: 200}, warmup=20)


def run(quick: bool = False) -> list[Ratio]:
    plan = QUICK if quick else FULL
    print(f"\nBenchmark 2 on SQLite {sqlite3.sqlite_version}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:

        def params_for(system: System, r: int, w: int) -> dict[str, Any]:
            path = Path(tmp) / f"r{r}_w{w}_{system.key}.db"
            return system.prepare(path, plan.warmup + plan.turns[w])

        series = interleaved(SYSTEMS, plan.repeats, plan.turns, plan.warmup, params_for)
    print_table(
        "Benchmark 2: SQLite appends (median of repeats)",
        [series[(s.key, w)] for w in plan.turns for s in SYSTEMS],
    )
    ratios: list[Ratio] = []
    for w in plan.turns:
        ratios.append(
            Ratio(
                f"ours API / raw sqlite3, {w} writers", series[("api", w)], series[("raw", w)], 0.7
            )
        )
        ratios.append(
            Ratio(
                f"ours store / raw sqlite3, {w} writers", series[("store", w)], series[("raw", w)]
            )
        )
    print_ratios(ratios)
    return ratios
