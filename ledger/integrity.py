"""Checking the per-run hash chains (DESIGN.md invariant 5)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from ledger.chain import GENESIS, recompute
from ledger.records import Record


class Problem(msgspec.Struct, frozen=True):
    """The first bad event of one run: where, and what is wrong with it."""

    user_id: str
    run_id: str
    version: int
    reason: str


class VerifyReport(msgspec.Struct):
    """What a verification looked at and every broken run it found."""

    runs: int = 0
    events: int = 0
    problems: list[Problem] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every chain checked out."""
        return not self.problems


def first_problem(records: Iterable[Record]) -> Problem | None:
    """Recompute one run's chain (records in version order); the first bad event, if any."""
    prev_hash = GENESIS
    expected_version: int | None = None
    for record in records:
        where = (record.user_id, record.run_id, record.version)
        if expected_version is None:
            expected_version = 1 if record.version >= 1 else record.version
        if record.version != expected_version:
            kind = "missing" if record.version > expected_version else "repeated or reordered"
            return Problem(
                *where,
                reason=(
                    f"version gap: expected version {expected_version}, found {record.version} "
                    f"(an event is {kind})"
                ),
            )
        if record.prev_hash != prev_hash:
            return Problem(
                *where,
                reason=(
                    "prev_hash does not match the previous event's hash "
                    "(an event before it was changed, deleted or inserted)"
                ),
            )
        try:
            recomputed = recompute(record, prev_hash)
        except (TypeError, ValueError) as exc:
            return Problem(*where, reason=f"stored row is malformed and was altered ({exc})")
        if recomputed != record.hash:
            return Problem(
                *where,
                reason=(
                    "hash does not match the stored payload and envelope (the event was altered)"
                ),
            )
        prev_hash = record.hash
        expected_version += 1
    return None
