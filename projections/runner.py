"""The projector runner: follows the global log and keeps read models exactly once.

Each step, for every projector whose lease it holds, the runner reads the next batch
of the log after the projector's cursor, folds it into the affected documents and
commits documents and cursor together (``ReadModelStorage.commit``, fenced). Killed at
any instant, it leaves either the whole batch applied or none of it; a runner that lost
its lease (or whose generation a rebuild replaced) changes nothing and re-claims.

Several runners may run against one database: each projector is held by one runner at
a time through a lease renewed on every commit; a dead runner's projectors are taken
over when its lease expires.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from ledger.connection import Ledger
from ledger.events import CATALOG, Event
from ledger.records import LogCursor, Record
from ledger.tenant import to_event
from projections.projector import Document, Projector
from projections.storage import DocKey, ProjectorRow, ReadModelStorage, storage_for
from projections.storage.base import BUILD_SUFFIX

Progress = Callable[[int], None]

_KNOWN_TYPES = frozenset(CATALOG.names)


def runner_id() -> str:
    """A name for this runner that says where it runs: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def decode(records: Sequence[Record]) -> list[Event]:
    """The catalog events among ``records`` (rows of other writers are not projected)."""
    return [to_event(r) for r in records if r.type in _KNOWN_TYPES]


class ProjectorRunner:
    """Runs a set of projectors over one ledger."""

    def __init__(
        self,
        ledger: Ledger,
        projectors: Sequence[Projector[Any]],
        *,
        owner: str | None = None,
        batch_size: int = 1000,
        lease_seconds: float = 15.0,
    ) -> None:
        self.ledger = ledger
        self.projectors = list(projectors)
        self.owner = owner or runner_id()
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.storage: ReadModelStorage = storage_for(ledger.store)

    # -- one step ----------------------------------------------------------------
    def step(self) -> int:
        """Apply at most one batch to every projector this runner can hold; events applied."""
        applied = 0
        decoded: dict[LogCursor, tuple[list[Record], list[Event]]] = {}
        for projector in self.projectors:
            row = self.storage.claim(
                projector.name, projector.version, self.owner, self.lease_seconds
            )
            if row is None:
                continue  # another runner holds it
            if row.version != projector.version:
                self.rebuild(projector)
                continue
            applied += self._advance(projector, row, decoded)
        return applied

    def catch_up(self) -> int:
        """Step until no projector this runner holds has anything left; events applied."""
        total = 0
        while True:
            applied = self.step()
            total += applied
            if applied == 0:
                return total

    def _advance(
        self,
        projector: Projector[Any],
        row: ProjectorRow,
        decoded: dict[LogCursor, tuple[list[Record], list[Event]]],
    ) -> int:
        """Fold the batch after ``row.cursor`` into ``projector``'s documents and commit."""
        if row.cursor not in decoded:
            records = self.ledger.store.read_log(row.cursor, self.batch_size)
            decoded[row.cursor] = (records, decode(records))
        records, events = decoded[row.cursor]
        if not records:
            return 0
        by_key: dict[DocKey, list[Event]] = defaultdict(list)
        key_of = projector.reducer.key
        for event in events:
            key = key_of(event)
            if key is not None:
                by_key[(event.user_id, key)].append(event)
        stored = self.storage.load(row.name, row.generation, list(by_key))
        docs: dict[DocKey, bytes] = {}
        for doc_key, doc_events in by_key.items():
            data = stored.get(doc_key)
            doc: Document[Any] | None = None if data is None else projector.load(data)
            folded = projector.fold(doc, doc_events)
            if folded is not None:
                docs[doc_key] = projector.dump(folded)
        committed = self.storage.commit(
            row.name,
            row.generation,
            self.owner,
            row.cursor,
            records[-1].cursor,
            docs,
            self.lease_seconds,
        )
        return len(records) if committed else 0

    # -- rebuilds ----------------------------------------------------------------
    def rebuild(self, projector: Projector[Any], progress: Progress | None = None) -> int:
        """Build ``projector`` from the start beside the live copy, then swap it in whole.

        Readers keep reading the live copy until the swap, which is one transaction.
        Returns the number of log events read.
        """
        build = projector.name + BUILD_SUFFIX
        self.storage.drop(build)
        builder = Projector(build, projector.version, projector.reducer)
        total = 0
        while True:
            row = self.storage.claim(build, projector.version, self.owner, self.lease_seconds)
            if row is None:
                raise RuntimeError(f"another runner is rebuilding {projector.name}")
            applied = self._advance(builder, row, {})
            if applied == 0:
                break
            total += applied
            if progress is not None:
                progress(applied)
        row = self.storage.projector(build)
        assert row is not None
        self.storage.swap(projector.name, projector.version, row.generation, row.cursor, build)
        return total

    # -- live --------------------------------------------------------------------
    def run(self, stop: threading.Event, *, poll_seconds: float = 0.5) -> None:
        """Follow the log until ``stop`` is set; wake on appends (Postgres) or poll."""
        waiter = _waiter_for(self.ledger, poll_seconds)
        try:
            while not stop.is_set():
                if self.step() == 0:
                    waiter.wait(stop)
        finally:
            waiter.close()
            for projector in self.projectors:
                self.storage.release(projector.name, self.owner)


class _Poller:
    """Sleeps between empty steps (SQLite, memory): no server to push to us."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.seconds)

    def close(self) -> None:
        pass


def _waiter_for(ledger: Ledger, poll_seconds: float) -> Any:
    if ledger.store.backend == "postgres":
        from projections.listen import Listener

        # Writers notify at most once per notify_interval, so the last append of a
        # burst may come without one: never sleep much longer than that interval.
        interval = getattr(ledger.store, "notify_interval", poll_seconds)
        return Listener(ledger, min(poll_seconds, 2.5 * interval))
    return _Poller(poll_seconds)
