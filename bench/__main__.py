"""``python -m bench [pg] [sqlite] [growth] [read] [verify] [replay] [--quick]``: run the
benchmarks.

pg, sqlite, growth: appends (benchmarks 1-3); read: the read side (benchmarks 4-8:
rebuild, live lag, ``t.conversation()`` latency, a long session, a top ten of runs);
verify: ``ledger verify`` over a store of 1,000,000 events against a floor that only
selects them; replay:
``t.replay()`` of a 1,000- and a 100,000-event run among 5,000,000 others.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.workload import turn_bytes

BENCHMARKS = ("pg", "sqlite", "growth", "read", "verify", "replay")


def _machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}"
    )


def _code_under_test() -> str:
    """Where ``ledger`` is imported from, and its git commit (+ "dirty" if edited)."""
    import ledger

    where = Path(ledger.__file__).resolve().parent
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(where), *args],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        dirty = " + uncommitted changes" if git("status", "--porcelain", "--", ".") else ""
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "no git checkout", ""
    return f"{where} ({commit}{dirty})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="|".join(BENCHMARKS),
        help=f"which to run (default: all of {', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer turns and repeats, smaller preloads (a few minutes in all)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.benchmarks) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r} (choose from {', '.join(BENCHMARKS)})")
    chosen = args.benchmarks or list(BENCHMARKS)
    print(
        f"Run Ledger benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        f"{' (quick)' if args.quick else ''}"
    )
    print(f"machine: {_machine()}")
    print(f"ledger: {_code_under_test()}")
    print(f"workload: one turn = 5 events, {turn_bytes():,} bytes of JSON payload")
    started = time.monotonic()
    if "pg" in chosen:
        from bench import append_pg

        append_pg.run(quick=args.quick)
    if "sqlite" in chosen:
        from bench import append_sqlite

        append_sqlite.run(quick=args.quick)
    if "growth" in chosen:
        from bench import growth

        growth.run(quick=args.quick)
    if "read" in chosen:
        from bench import read_side

        read_side.run(quick=args.quick)
    if "verify" in chosen:
        from bench import verify

        verify.run(quick=args.quick)
    if "replay" in chosen:
        from bench import replay

        replay.run(quick=args.quick)
    print(f"\ndone in {time.monotonic() - started:,.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
