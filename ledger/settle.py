"""Appends that survive losing the connection mid-flight.

When the connection to a server dies with an append on the wire, the error cannot say
whether the server stored it. The hash chain can: the event at the append's last
version carries the hash the writer computed only if the append is stored (the hash
covers its events and everything before them). An append is atomic over all its runs,
so one run answers for all. If it is stored, only the reply was lost. If it is not and
every run's head is still the one the append states, it is sent once more: the head
check makes a second copy impossible. Otherwise another writer moved on meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import ConcurrencyError, StoreUnavailable
from ledger.records import RunAppend, RunHead
from ledger.store.base import EventStore


def append_settled(store: EventStore, appends: Sequence[RunAppend]) -> None:
    """``store.append(appends)`` (no records back), settled if its outcome is in doubt.

    Raises ``StoreUnavailable`` if the store cannot tell yet (saying how to find out
    later), ``ConcurrencyError`` if a run moved on while it was unavailable."""
    try:
        store.append(appends, returning=False)
    except StoreUnavailable as lost:
        if not lost.in_doubt:  # nothing left (no connection could be had, SQLite)
            raise
        _settle(store, appends, lost)


def _settle(store: EventStore, appends: Sequence[RunAppend], lost: StoreUnavailable) -> None:
    probe = next((a for a in appends if a.events), None)
    if probe is None:
        raise lost
    last = probe.events[-1]
    try:
        stored = store.read_run(
            probe.user_id,
            probe.run_id,
            after_version=last.version - 1,
            upto_version=last.version,
        )
        if stored and stored[0].hash == last.hash:
            return
        heads = [store.run_head(a.user_id, a.run_id) for a in appends]
    except StoreUnavailable:
        raise _unknown(lost, probe) from lost
    moved = [a.run_id for a, head in zip(appends, heads, strict=True) if not _still_at(a, head)]
    if moved:
        raise ConcurrencyError(
            f"run {moved[0]!r} moved on while the store was unavailable ({lost}); this "
            "append was not stored"
        ) from lost
    try:
        store.append(appends, returning=False)
    except StoreUnavailable as again:
        if not again.in_doubt:
            raise
        raise _unknown(again, probe) from again


def _unknown(lost: StoreUnavailable, probe: RunAppend) -> StoreUnavailable:
    """The error for an append whose fate cannot be told yet, and how to tell later."""
    last = probe.events[-1]
    return StoreUnavailable(
        f"{lost}; whether this append was stored is not known yet: once the store is "
        f"back, it was if run {probe.run_id!r} then has version {last.version} "
        f"(run.refresh(), or `ledger events {probe.run_id}`)",
        in_doubt=True,
    )


def _still_at(append: RunAppend, head: RunHead | None) -> bool:
    """Whether the run is still where ``append`` would put its events."""
    if append.starts_run:
        return head is None
    return head is not None and (head.version, head.hash) == (
        append.expected_version,
        append.expected_hash,
    )
