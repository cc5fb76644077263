"""``python -m bench read``: the read-side benchmarks, and what they share.

* rebuild (``bench.read_side_rebuild``): all three read models rebuilt from the log,
  against a floor that only reads and decodes the same log, Postgres and SQLite;
* live lag (``bench.read_side_live``): 16 writer processes and one live runner on
  Postgres, commit-to-visible time of the conversation document;
* reads (``bench.read_side_reads``): ``t.conversation()`` latency with 100,000 sessions
  stored, caught up and one turn behind, Postgres and SQLite;
* a long session (``bench.read_side_long``): what one more turn costs the projector and
  a read in a 2,000-turn session, against a 10-turn one;
* a top ten of runs (``bench.read_side_runs``): ``t.runs(order_by=..., limit=10)`` of
  one tenant with 100,000 runs stored, against listing them all, Postgres and SQLite.

Each measurement repeats; the figures are medians over repeats, the ratios are of
medians, and "per-repeat" is the range of the ratios of one repeat's pair.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TypeVar

import psycopg

from bench.pgserver import conninfo, describe_server, fresh_database, with_schema
from bench.report import percentile


@dataclass
class Figures:
    """One figure measured once per repeat."""

    name: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self, fmt: str = ",.0f") -> str:
        return f"{min(self.values):{fmt}}-{max(self.values):{fmt}}"


def ratio_line(label: str, top: Figures, bottom: Figures, scale: float = 1.0) -> float:
    """Print ``scale * top / bottom`` of medians and its per-repeat range; return it."""
    value = scale * top.median / bottom.median
    pairs = [scale * a / b for a, b in zip(top.values, bottom.values, strict=False)]
    print(f"  {label:<52} {value:6.2f}x  (per-repeat {min(pairs):.2f}-{max(pairs):.2f})")
    return value


def figure_pairs(
    heads: tuple[str, str, str], rows: Iterable[tuple[str, Figures, Figures]], width: int, fmt: str
) -> None:
    """A table of two figures a row, each as its median and min-max over repeats."""
    label, first, second = heads
    print(f"  {label:<{width}} {first:>9} {'(min-max)':>13} {second:>9} {'(min-max)':>13}")
    for name, a, b in rows:
        print(
            f"  {name:<{width}} {a.median:>9{fmt}} {a.spread(fmt):>13} "
            f"{b.median:>9{fmt}} {b.spread(fmt):>13}"
        )


def verdict(label: str, value: float, target: float, unit: str, higher_is_better: bool) -> None:
    """Print ``value`` against its target: MET or MISSED."""
    met = value >= target if higher_is_better else value < target
    sign = ">=" if higher_is_better else "<"
    shown = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    print(
        f"  {label:<52} {shown:>10} {unit:<5} target {sign} {target:,g}: "
        f"{'MET' if met else 'MISSED'}"
    )


def latency_ms(latencies_ns: Sequence[int]) -> tuple[float, float]:
    """p50 and p99 of ``latencies_ns``, in ms."""
    ms = [ns / 1e6 for ns in latencies_ns]
    return percentile(ms, 50), percentile(ms, 99)


@contextmanager
def postgres_schema(schema: str) -> Iterator[str]:
    """A URL into ``schema`` of a fresh database (dropped at the end)."""
    with fresh_database() as url:
        print(f"  on {describe_server(url)}", flush=True)
        yield with_schema(url, schema)


@contextmanager
def sqlite_file() -> Iterator[str]:
    """A URL of a new SQLite file in a temporary directory (removed at the end)."""
    with TemporaryDirectory(prefix="bench_read_") as tmp:
        print(f"  on SQLite {sqlite3.sqlite_version}", flush=True)
        yield f"sqlite:///{Path(tmp) / 'ledger.db'}"


R = TypeVar("R")


def on_both(schema: str, measure: Callable[[str, str], R]) -> list[R]:
    """``measure(url, backend)`` in a fresh Postgres schema, then in a new SQLite file."""
    results = []
    with postgres_schema(schema) as url:
        results.append(measure(url, "postgres"))
    with sqlite_file() as url:
        results.append(measure(url, "sqlite"))
    return results


def settle(url: str) -> None:
    """After a bulk load: fresh statistics, and the log written out (no checkpoint debt)."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    plain, _, query = url.partition("?schema=")
    with psycopg.connect(conninfo(plain, query), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def vacuum_read_models(url: str) -> None:
    """Between repeats: clear the dead rows of the last rebuild (Postgres)."""
    if url.startswith("sqlite:"):
        return
    plain, _, query = url.partition("?schema=")
    with psycopg.connect(conninfo(plain, query), autocommit=True) as conn:
        conn.execute("VACUUM ledger_read_models")


def run(quick: bool = False) -> None:
    from bench import (
        read_side_live,
        read_side_long,
        read_side_reads,
        read_side_rebuild,
        read_side_runs,
    )

    read_side_rebuild.run(quick)
    read_side_live.run(quick)
    read_side_reads.run(quick)
    read_side_long.run(quick)
    read_side_runs.run(quick)
