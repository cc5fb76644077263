"""The replay engine behind ``t.replay()``, ``t.fork()`` and ``run.state()``
(registered with the ledger as the ``ledger.replay`` entry point)."""

from __future__ import annotations

from datetime import datetime

from ledger.connection import Ledger
from ledger.errors import InvalidEvent
from ledger.run import Run
from ledger.tenant import Tenant, to_event
from projections.models import RunState
from replay.state import lineage_records, replay


class Replayer:
    """Point-in-time states and forks of one ledger's runs."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def replay(self, user_id: str | None, run_id: str, at: int | datetime | None) -> RunState:
        """The state of a run (of ``user_id``, or of anyone for the auditor) at ``at``,
        personal content opened with the user's key (or shown as erased)."""
        if at is not None and not isinstance(at, datetime):
            _check_version(at, "a version (int) or a datetime")
        store, keyring = self.ledger.reads_for(user_id)
        return replay(store, user_id, run_id, at, keyring)

    def fork(self, tenant: Tenant, run_id: str, at: int) -> Run:
        """A new run in the parent's session, starting from the parent's state at ``at``."""
        _check_version(at, "a version (int)")
        records = lineage_records(self.ledger.store, tenant.user_id, run_id)
        own = [r for r in records if r.run_id == run_id]
        # start_run checks the fork point (ledger.forks): a version of this run, before its end.
        started = to_event(own[0]).data if own[0].type == "run_started" else {}
        return tenant.start_run(
            session_id=own[0].session_id,
            agent=started.get("agent"),
            model=started.get("model"),
            parent_run_id=run_id,
            parent_version=at,
            metadata={"forked_from": {"run_id": run_id, "version": at}},
        )


def _check_version(at: object, expected: str) -> None:
    """InvalidEvent naming the parameter unless ``at`` is a version: an int (a bool is
    one to Python, never to a person)."""
    if isinstance(at, bool) or not isinstance(at, int):
        raise InvalidEvent(f"at must be {expected}, got {type(at).__name__} {at!r}")
