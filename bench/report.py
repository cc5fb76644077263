"""Statistics over repeated measurements, and the tables and ratio lines printed."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Sample:
    """One measured phase: events/s over its wall time and its turn-commit latencies."""

    events_per_s: float
    p50_ms: float
    p99_ms: float
    turns: int
    cpu_us: float  # the writers' own CPU time per turn

    @classmethod
    def of(cls, events: int, wall_s: float, latencies_ns: Sequence[int], cpu_us: float) -> Sample:
        ms = [ns / 1e6 for ns in latencies_ns]
        return cls(events / wall_s, percentile(ms, 50), percentile(ms, 99), len(ms), cpu_us)


@dataclass
class Series:
    """Repeats of one scenario (system x writers); figures are medians over repeats."""

    name: str
    writers: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return statistics.median(s.events_per_s for s in self.samples)

    @property
    def p50_ms(self) -> float:
        return statistics.median(s.p50_ms for s in self.samples)

    @property
    def p99_ms(self) -> float:
        return statistics.median(s.p99_ms for s in self.samples)

    @property
    def cpu_us(self) -> float:
        return statistics.median(s.cpu_us for s in self.samples)

    def spread(self) -> str:
        rates = [s.events_per_s for s in self.samples]
        return f"{min(rates):,.0f}-{max(rates):,.0f}"


def print_table(title: str, series: Sequence[Series]) -> None:
    """Median events/s (min-max over repeats), p50/p99 turn latency, writer CPU per turn."""
    print(f"\n{title}")
    header = f"{'system':<44} {'writers':>7} {'events/s':>10} {'(min-max)':>15} "
    header += f"{'p50 ms':>8} {'p99 ms':>8} {'cpu us/turn':>12} {'runs':>5}"
    print(header)
    print("-" * len(header))
    for s in series:
        print(
            f"{s.name:<44} {s.writers:>7} {s.events_per_s:>10,.0f} {s.spread():>15} "
            f"{s.p50_ms:>8.2f} {s.p99_ms:>8.2f} {s.cpu_us:>12,.0f} {len(s.samples):>5}"
        )


@dataclass
class Ratio:
    """``top / bottom`` of median events/s, with the target it is held to."""

    label: str
    top: Series
    bottom: Series
    target: float | None = None

    @property
    def value(self) -> float:
        return self.top.events_per_s / self.bottom.events_per_s

    def paired(self) -> str:
        """Median and min-max of the per-repeat ratios (repeats are interleaved, so the
        two systems of a pair share the machine's drift)."""
        pairs = [
            a.events_per_s / b.events_per_s
            for a, b in zip(self.top.samples, self.bottom.samples, strict=False)
        ]
        if not pairs:
            return "-"
        return f"median {statistics.median(pairs):.2f}, {min(pairs):.2f}-{max(pairs):.2f}"

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.value >= self.target


def print_ratios(ratios: Sequence[Ratio]) -> None:
    print()
    for r in ratios:
        verdict = (
            "" if r.met is None else (f"  target >= {r.target:g}x: {'MET' if r.met else 'MISSED'}")
        )
        print(f"{r.label:<48} {r.value:6.2f}x  (per-repeat {r.paired()}){verdict}")


def progress(repeat: int, repeats: int, name: str, writers: int, sample: Sample) -> None:
    """One line per measurement, with the 1-minute load average (the machine is shared)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"  repeat {repeat + 1}/{repeats} {name:<44} {writers:>2} writers: "
        f"{sample.events_per_s:>8,.0f} events/s  p50 {sample.p50_ms:6.2f} ms  "
        f"p99 {sample.p99_ms:6.2f} ms  cpu {sample.cpu_us:5,.0f} us/turn  (load {load:.1f})",
        flush=True,
    )
