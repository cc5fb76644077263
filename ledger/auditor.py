"""The auditor handle: the one way to read across tenants (verify, listings, export)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ledger.errors import NotFound
from ledger.events import Event
from ledger.integrity import Problem, VerifyReport, first_problem
from ledger.read_side import check_listing
from ledger.records import Record, RunHead
from ledger.tenant import RunSummary, readable_event, readable_events, to_summary

if TYPE_CHECKING:
    from ledger.connection import Ledger


class Auditor:
    """Reads every tenant and writes nothing."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._store, self._keyring = ledger.reads_for(None)

    def runs(self, user_id: str | None = None, session_id: str | None = None) -> list[RunSummary]:
        """Every registered run, oldest first, optionally narrowed."""
        return [to_summary(h) for h in self._store.list_runs(user_id, session_id)]

    def runs_metadata(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        *,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """RunMetadata (tokens, cost, tools, wall time) of every tenant's runs, oldest
        first, optionally narrowed: "which runs cost the most?" across all users
        (``order_by`` and ``limit`` as ``Tenant.runs``)."""
        check_listing(order_by, limit)
        return self._ledger.read_side.runs_across(
            self._store, self._keyring, user_id, session_id, order_by, limit
        )

    def events(self, run_id: str, *, mark_unreadable: bool = False) -> list[Event]:
        """A run's events, whoever it belongs to (``mark_unreadable``: see
        ``ledger.tenant.readable_events``)."""
        if self._store.run_head(None, run_id) is None:
            raise NotFound(f"run {run_id!r} not found")
        records = self._store.read_run(None, run_id)
        return readable_events(records, self._keyring, mark_unreadable=mark_unreadable)

    def replay(self, run_id: str, at: int | datetime | None = None) -> Any:
        """RunState of any tenant's run at a version or a time (None: its head)."""
        return self._ledger.replayer.replay(None, run_id, at)

    def verify(
        self,
        user_id: str | None = None,
        run_id: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> VerifyReport:
        """Recompute the hash chain of every run in scope; report the first bad event of each.

        ``progress(events_checked, events_in_scope)`` is called after each run, so a
        long verification can show how far it has got (the total is the runs' heads
        when they were listed)."""
        store = self._store
        if run_id is not None:
            head = store.run_head(user_id, run_id)
            if head is None:
                raise NotFound(f"run {run_id!r} not found")
            heads = [head]
        else:
            heads = store.list_runs(user_id)
            if user_id is not None and not heads:
                # "verified 0 runs: ok" for a mistyped id would read as a clean audit.
                raise NotFound(f"user {user_id!r} not found")
        report = VerifyReport()
        total = sum(head.version for head in heads)
        for head in heads:
            records = store.read_run(head.user_id, head.run_id)
            report.runs += 1
            report.events += len(records)
            problem = first_problem(records) if records else _emptied(head)
            if problem is not None:
                report.problems.append(problem)
            if progress is not None:
                progress(report.events, total)
        return report

    def records(self, run_id: str, *, upto_version: int | None = None) -> list[Record]:
        """A run's stored records exactly as the store holds them (exports, offline checks)."""
        if self._store.run_head(None, run_id) is None:
            raise NotFound(f"run {run_id!r} not found")
        return self._store.read_run(None, run_id, upto_version=upto_version)

    def data(self, record: Record) -> dict[str, Any]:
        """The readable payload of a stored record: the one place an auditor turns stored
        bytes into data: personal fields opened with the user's key, or ``[erased]``."""
        return readable_event(record, self._keyring).data


def _emptied(head: RunHead) -> Problem:
    """A registered run with no events: the ledger registers a run only together with
    its first events, so they were deleted behind the database's back."""
    return Problem(
        head.user_id,
        head.run_id,
        1,
        reason="version gap: the run is registered but holds no events (all were deleted)",
    )
