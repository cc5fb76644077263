"""Where a fork may start: the one rule for ``fork``, ``start_run(parent_run_id=...)`` and
a ``run_started`` line of ``ledger append`` that names a parent.

A fork's history is its parent's events up to the fork point (``replay.state``), read
as the fork's tenant. So the parent must be a run of the same tenant, and the point one
of its versions, before its end: a fork that names anything else could never be
replayed (and another tenant's run must read as missing, like any other id).
"""

from __future__ import annotations

from ledger.errors import InvalidEvent, NotFound, RunEnded
from ledger.events import ENDS_A_RUN
from ledger.store.base import EventStore


def check_fork_point(
    store: EventStore, user_id: str, parent_run_id: str | None, parent_version: int | None
) -> None:
    """Raise unless ``(parent_run_id, parent_version)`` is nothing, or a point a run of
    ``user_id`` may be forked at: NotFound, InvalidEvent or RunEnded, naming it."""
    if parent_run_id is None and parent_version is None:
        return
    if parent_run_id is None or parent_version is None:
        raise InvalidEvent("a fork names its parent_run_id and parent_version together")
    head = store.run_head(user_id, parent_run_id)
    if head is None:
        raise NotFound(f"run {parent_run_id!r} not found for user {user_id!r}")
    where = f"cannot fork run {parent_run_id!r} at version {parent_version}"
    if not 1 <= parent_version <= head.version:
        raise InvalidEvent(f"{where}: it has versions 1..{head.version}")
    if parent_version == head.version and head.type in ENDS_A_RUN:
        raise RunEnded(
            f"{where}: the run ended there ({head.type}), and a fork goes on from its "
            f"point; fork at {parent_version - 1} to go on from just before the end"
        )
