"""Checking the per-run hash chains (DESIGN.md invariant 5).

The check is incremental (``ChainCheck`` takes one record at a time), so a verifier
never needs a whole run, let alone the whole store, in memory: ``ledger verify`` feeds it
from the store and ``ledger verify --export`` from an export file, line by line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec

from ledger.chain import GENESIS, recompute
from ledger.errors import IntegrityError
from ledger.records import AuditRow, Record


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

    def raise_for_problems(self) -> VerifyReport:
        """Raise ``IntegrityError`` naming the run and version of the first problem
        (``run_id``/``version`` on the error too); return this report when there is none."""
        if not self.problems:
            return self
        first = self.problems[0]
        others = len(self.problems) - 1
        more = f" ({others} other run{'s' if others != 1 else ''} also failed)" if others else ""
        raise IntegrityError(
            f"run {first.run_id!r} of user {first.user_id!r} fails verification at version "
            f"{first.version}: {first.reason}{more}",
            run_id=first.run_id,
            version=first.version,
        )


class ChainCheck:
    """One run's chain, recomputed as its records arrive in version order.

    After the first problem it only counts (a verifier reports the first bad event of a
    run; everything after it is suspect anyway). ``head_version``/``head_hash`` are those
    of the last record that checked out, so a caller can compare them with a head it was
    told about (a manifest's, a run registry's).
    """

    __slots__ = ("_expected", "events", "head_hash", "head_version", "problem")

    def __init__(self) -> None:
        self.events = 0
        self.head_version = 0
        self.head_hash = GENESIS
        self.problem: Problem | None = None
        self._expected: int | None = None

    def add(self, record: Record) -> Problem | None:
        """Check the next record; the run's first problem once there is one."""
        self.events += 1
        if self.problem is None:
            self.problem = self._check(record)
            if self.problem is None:
                self.head_version, self.head_hash = record.version, record.hash
        return self.problem

    def _check(self, record: Record) -> Problem | None:
        where = (record.user_id, record.run_id, record.version)
        if self._expected is None:
            self._expected = 1 if record.version >= 1 else record.version
        expected = self._expected
        if record.version != expected:
            kind = "missing" if record.version > expected else "repeated or reordered"
            return Problem(
                *where,
                reason=(
                    f"version gap: expected version {expected}, found {record.version} "
                    f"(an event is {kind})"
                ),
            )
        if record.prev_hash != self.head_hash:
            return Problem(
                *where,
                reason=(
                    "prev_hash does not match the previous event's hash "
                    "(an event before it was changed, deleted or inserted)"
                ),
            )
        try:
            recomputed = recompute(record, self.head_hash)
        except (TypeError, ValueError) as exc:
            return Problem(*where, reason=f"stored row is malformed and was altered ({exc})")
        if recomputed != record.hash:
            return Problem(
                *where,
                reason=(
                    "hash does not match the stored payload and envelope (the event was altered)"
                ),
            )
        self._expected = expected + 1
        return None


def first_problem(records: Iterable[Record]) -> Problem | None:
    """Recompute one run's chain (records in version order); the first bad event, if any."""
    check = ChainCheck()
    for record in records:
        if check.add(record) is not None:
            return check.problem
    return None


def verify_rows(
    rows: Iterable[AuditRow], progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Check the rows of ``EventStore.audit_scan``: each run's events against the runs
    registry, then its chain; one problem per bad run. ``progress(events_checked)`` is
    called after each run."""
    report = VerifyReport()
    run: RunCheck | None = None
    for row in rows:
        if run is None or row.run_id != run.run_id or row.user_id != run.user_id:
            if run is not None:
                run.close(report, progress)
            run = RunCheck(row)
        record = row.record
        if record is None:
            run.problem = _emptied(row)
            continue
        run.events += 1
        if run.problem is None:  # the hot path: one comparison and the chain, per event
            if record.session_id != run.session_id:
                run.problem = _moved(row, record)
            else:
                run.problem = run.chain.add(record)
    if run is not None:
        run.close(report, progress)
    return report


class RunCheck:
    """One run's rows of an audit scan: its registration, checked at its first row, and
    its chain."""

    __slots__ = ("chain", "events", "problem", "run_id", "session_id", "user_id")

    def __init__(self, first: AuditRow) -> None:
        self.user_id, self.run_id = first.user_id, first.run_id
        self.session_id = first.registered_session
        self.chain = ChainCheck()
        self.events = 0
        self.problem = None if first.record is None else _unregistered(first, first.record)

    def close(self, report: VerifyReport, progress: Callable[[int], None] | None) -> None:
        """Count the run into ``report``, with its problem if it has one."""
        report.runs += 1
        report.events += self.events
        if self.problem is not None:
            report.problems.append(self.problem)
        if progress is not None:
            progress(report.events)


def _unregistered(row: AuditRow, record: Record) -> Problem | None:
    """Whether the runs registry has no entry for the run of a stored event, or one of
    another user. The ledger registers a run together with its first events (and never
    removes it), so either means rows changed behind its back."""
    where = (row.user_id, row.run_id, record.version)
    if row.registered_user is None:
        return Problem(
            *where,
            reason="events stored for a run that is not in the runs registry (rows "
            "inserted, or the run's registration deleted, behind the ledger's back)",
        )
    if row.registered_user != row.user_id:
        return Problem(
            *where,
            reason=f"events stored under user {row.user_id!r} for a run registered to "
            "another user (rows inserted behind the ledger's back)",
        )
    return None


def _moved(row: AuditRow, record: Record) -> Problem:
    """A stored event whose session is not the one the runs registry has for its run."""
    return Problem(
        row.user_id,
        row.run_id,
        record.version,
        reason=f"the runs registry says session {row.registered_session!r}, the stored "
        f"event says {record.session_id!r} (one of them was changed)",
    )


def _emptied(row: AuditRow) -> Problem:
    """A registered run with no events: the ledger registers a run only together with
    its first events, so they were deleted behind the database's back."""
    return Problem(
        row.user_id,
        row.run_id,
        1,
        reason="version gap: the run is registered but holds no events (all were deleted)",
    )
