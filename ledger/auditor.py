"""The auditor handle: the one way to read across tenants (verify, listings, export)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ledger.errors import NotFound
from ledger.events import Event
from ledger.integrity import VerifyReport, verify_rows
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
        """Check every stored event in scope against the runs registry and recompute
        every run's hash chain; report the first bad event of each bad run.

        One streamed scan of the store (``EventStore.audit_scan``), so event rows the
        registry does not know are checked too, never skipped. ``progress(events_checked,
        events_in_scope)`` is called after each run, so a long verification can show how
        far it has got (the total is the registered runs' heads when they were listed)."""
        store = self._store
        tick = None
        if progress is not None:
            total = sum(head.version for head in self._heads(user_id, run_id))
            tick = functools.partial(_progress, progress, total)
        report = verify_rows(store.audit_scan(user_id, run_id), tick)
        if not report.runs and (run_id is not None or user_id is not None):
            # "verified 0 runs: ok" for a mistyped id would read as a clean audit.
            what = f"run {run_id!r}" if run_id is not None else f"user {user_id!r}"
            raise NotFound(f"{what} not found")
        return report

    def _heads(self, user_id: str | None, run_id: str | None) -> list[RunHead]:
        if run_id is None:
            return self._store.list_runs(user_id)
        head = self._store.run_head(user_id, run_id)
        return [] if head is None else [head]

    def records(self, run_id: str, *, upto_version: int | None = None) -> list[Record]:
        """A run's stored records exactly as the store holds them (exports, offline checks)."""
        if self._store.run_head(None, run_id) is None:
            raise NotFound(f"run {run_id!r} not found")
        return self._store.read_run(None, run_id, upto_version=upto_version)

    def data(self, record: Record) -> dict[str, Any]:
        """The readable payload of a stored record: the one place an auditor turns stored
        bytes into data: personal fields opened with the user's key, or ``[erased]``."""
        return readable_event(record, self._keyring).data


def _progress(progress: Callable[[int, int], None], total: int, done: int) -> None:
    progress(done, total)
