"""Append benchmarks of Run Ledger against baselines measured in the same run.

``python -m bench`` (or ``make bench``) runs them; ``docs/benchmarks.md`` has the figures.
Speed is measured here, never asserted in tests.
"""
