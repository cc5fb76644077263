"""The auditor handle: the one way to read across tenants (verify, listings, export)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ledger.errors import NotFound
from ledger.events import Event
from ledger.integrity import VerifyReport, first_problem
from ledger.tenant import RunSummary, to_event, to_summary

if TYPE_CHECKING:
    from ledger.connection import Ledger


class Auditor:
    """Reads every tenant and writes nothing."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._store = ledger.store.for_auditor()

    def runs(self, user_id: str | None = None, session_id: str | None = None) -> list[RunSummary]:
        """Every registered run, oldest first, optionally narrowed."""
        return [to_summary(h) for h in self._store.list_runs(user_id, session_id)]

    def events(self, run_id: str) -> list[Event]:
        """A run's events, whoever it belongs to."""
        if self._store.run_head(None, run_id) is None:
            raise NotFound(f"run {run_id!r} not found")
        return [to_event(r) for r in self._store.read_run(None, run_id)]

    def replay(self, run_id: str, at: int | datetime | None = None) -> Any:
        """RunState of any tenant's run at a version or a time (None: its head)."""
        return self._ledger.replayer.replay(None, run_id, at)

    def verify(self, user_id: str | None = None, run_id: str | None = None) -> VerifyReport:
        """Recompute the hash chain of every run in scope; report the first bad event of each."""
        store = self._store
        if run_id is not None:
            head = store.run_head(user_id, run_id)
            if head is None:
                raise NotFound(f"run {run_id!r} not found")
            heads = [head]
        else:
            heads = store.list_runs(user_id)
        report = VerifyReport()
        for head in heads:
            records = store.read_run(head.user_id, head.run_id)
            report.runs += 1
            report.events += len(records)
            problem = first_problem(records)
            if problem is not None:
                report.problems.append(problem)
        return report
