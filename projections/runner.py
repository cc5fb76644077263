"""The projector runner: follows the global log and keeps read models exactly once.

Each step reads the next batch of the log once for every projector this runner holds
at the same cursor, folds it into each projector's affected documents, and commits all
of them in ONE transaction (``ReadModelStorage.commit_many``): per projector, documents
and cursor together, fenced on its generation, cursor and owner. Killed at any instant,
it leaves each batch either wholly applied or not at all; a runner that lost its lease
(or whose generation a rebuild replaced) changes nothing and re-claims.

Several runners may run against one database: each projector is held by one runner at
a time through a lease. Every commit renews the lease; the runner claims again only
when it holds nothing yet, after a failed commit, or when a third of the lease has gone
by without a commit. A dead runner's projectors are taken over when its lease expires.

Documents a runner has just written stay in its memory, encoded (a cache per projector,
bounded in bytes), so the sessions in flight are not loaded again. The cache is only
trusted while this runner's commits follow each other unbroken: a cursor never moves
back, so a commit fenced on the cursor we last wrote proves nobody wrote in between.

A rebuild builds every projector asked for in ONE pass over the log (``rebuild_all``).

Runners of two releases may run at once (a rolling deploy). A read model only moves
forward: a runner whose projector is of a later version than the stored one rebuilds it
(even while an earlier release's runner holds the live row: it builds beside it and
swaps in); one whose projector is of an earlier version sets it aside, logs an error,
gives its lease up and carries on with the others (the claim and the swap compare the
versions in SQL, so no race lets it take or replace a later release's read model).
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

import msgspec

from ledger.connection import Ledger
from ledger.errors import ProjectorOutdated, RebuildInProgress, StoreUnavailable
from ledger.events import Event
from ledger.records import LogCursor, Record
from ledger.retry import Backoff
from projections.projector import Projector, decode_for_fold
from projections.storage import DocKey, ProjectorRow, ReadModelStorage, storage_for
from projections.storage.base import BUILD_SUFFIX, Load, PageKey, Write, lost_build, outdated

Progress = Callable[[int], None]

#: How long a runner's lease on a projector (or a rebuild's on its build) lasts unless
#: renewed, by default: a killed runner's work is taken over this long after it died.
LEASE_SECONDS = 15.0

log = logging.getLogger(__name__)


def runner_id() -> str:
    """A name for this runner that says where it runs: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _Hold:
    """A projector row this runner holds the lease of, as of its last claim or commit."""

    __slots__ = ("docs", "evicted", "projector", "renew_at", "row", "size")

    def __init__(self, projector: Projector[Any], row: ProjectorRow, renew_at: float) -> None:
        self.projector = projector
        self.row = row
        self.renew_at = renew_at  # time.monotonic() after which to claim again
        self.docs: dict[DocKey, bytes] = {}  # as last written; least recent first
        self.size = 0  # bytes in ``docs``
        #: For a generation only this hold ever wrote (a build): the documents it wrote
        #: that ``docs`` no longer has. Any other key has no document yet, so need not
        #: be looked for. None: anything may be stored.
        self.evicted: set[DocKey] | None = None

    def may_be_stored(self, key: DocKey) -> bool:
        """Whether ``key`` may have a stored document that ``docs`` does not hold."""
        return key not in self.docs and (self.evicted is None or key in self.evicted)

    def keep(self, key: DocKey, data: bytes) -> None:
        """Remember ``data`` as ``key``'s document (the most recent)."""
        self.docs[key] = data
        self.size += len(data)

    def trim(self, limit: int) -> None:
        """Forget the least recent documents beyond ``limit`` bytes."""
        while self.size > limit:
            oldest = next(iter(self.docs))
            self.size -= len(self.docs.pop(oldest))
            if self.evicted is not None:
                self.evicted.add(oldest)

    def forget(self) -> None:
        """Trust nothing held: claim again before the next batch."""
        self.docs = {}
        self.size = 0
        self.renew_at = 0.0


class ProjectorRunner:
    """Runs a set of projectors over one ledger."""

    def __init__(
        self,
        ledger: Ledger,
        projectors: Sequence[Projector[Any]],
        *,
        owner: str | None = None,
        batch_size: int = 1000,
        rebuild_batch_size: int = 20_000,
        lease_seconds: float = LEASE_SECONDS,
        cached_bytes: int = 32 << 20,
    ) -> None:
        self.ledger = ledger
        self.projectors = list(projectors)
        self.owner = owner or runner_id()
        self.batch_size = batch_size
        self.rebuild_batch_size = rebuild_batch_size
        self.lease_seconds = lease_seconds
        self.cached_bytes = cached_bytes
        self.storage: ReadModelStorage = storage_for(ledger.store)
        self._holds: dict[str, _Hold] = {}
        #: Projectors set aside, by name: their read model is of a later version (a
        #: later release's), which this runner neither applies to nor rebuilds back.
        self.outdated: dict[str, int] = {}

    # -- one step ----------------------------------------------------------------
    def step(self) -> int:
        """Apply at most one batch to every projector this runner can hold; events applied."""
        holds: list[_Hold] = []
        stale: list[Projector[Any]] = []
        for projector in self.projectors:
            if projector.name in self.outdated:
                continue
            hold = self._holds.get(projector.name)
            if hold is None or time.monotonic() >= hold.renew_at:
                hold = self._claim(projector, hold)
                if hold is None:
                    self._holds.pop(projector.name, None)
                    # Another runner holds it, or it is of a later version. One of an
                    # earlier version is rebuilt even so: its holder may be an earlier
                    # release's runner, which keeps the lease for as long as it lives.
                    row = self.storage.projector(projector.name)
                    if row is not None and row.version != projector.version:
                        self._mismatched(projector, row.version, stale)
                    continue
                self._holds[projector.name] = hold
            if hold.row.version != projector.version:
                del self._holds[projector.name]
                self._mismatched(projector, hold.row.version, stale)
            else:
                holds.append(hold)
        if stale:
            try:
                self.rebuild_all(stale)
            except RebuildInProgress as exc:  # another runner swaps the new version in
                log.info("%s", exc)
            except ProjectorOutdated as exc:  # a later release swapped in meanwhile: the
                log.info("%s", exc)  # next claim sets it aside
        _, applied, failed = self._advance(holds, self.batch_size)
        for hold in failed:
            self._holds.pop(hold.row.name, None)
        return applied

    def _mismatched(
        self, projector: Projector[Any], stored: int, stale: list[Projector[Any]]
    ) -> None:
        """``projector``'s read model is at version ``stored``, not its own: rebuilt
        forward (added to ``stale``) if older; set aside, its lease given up, if newer."""
        if stored < projector.version:
            stale.append(projector)
            return
        self.outdated[projector.name] = stored
        log.error("%s", outdated(projector.name, projector.version, stored))
        self.storage.release(projector.name, self.owner)  # the later release takes it now

    def catch_up(self) -> int:
        """Step until no projector this runner holds has anything left; events applied.

        Everything committed before the call is included: the runner first waits (a
        few seconds at most) for transactions still running on the server to end, as
        the log shows events only below the oldest of them (``EventStore.settle``)."""
        self.ledger.store.settle()
        total = 0
        while True:
            applied = self.step()
            total += applied
            if applied == 0:
                return total

    def _claim(self, projector: Projector[Any], previous: _Hold | None) -> _Hold | None:
        """Claim (or renew) ``projector``'s row; None while another runner holds it."""
        asked = time.monotonic()
        row = self.storage.claim(projector.name, projector.version, self.owner, self.lease_seconds)
        if row is None:
            return None
        hold = _Hold(projector, row, asked + self.lease_seconds / 3)
        if previous is not None and (previous.row.generation, previous.row.cursor) == (
            row.generation,
            row.cursor,
        ):
            hold.docs, hold.size = previous.docs, previous.size  # nobody wrote since ours
        return hold

    def _advance(self, holds: Sequence[_Hold], limit: int) -> tuple[int, int, list[_Hold]]:
        """Fold the next ``limit`` events after each hold's cursor and commit them all.

        Reads the log once per distinct cursor. Returns the events read, the events
        applied (summed over projectors) and the holds whose commit was fenced out.
        """
        by_cursor: dict[LogCursor, list[_Hold]] = defaultdict(list)
        for hold in holds:
            by_cursor[hold.row.cursor].append(hold)
        with _collector_paused():
            batches: list[_Batch] = []
            read = 0
            for cursor, group in by_cursor.items():
                records = self.ledger.store.read_log(cursor, limit)
                if records:
                    read += len(records)
                    batches += _batches(group, records)
            if not batches:
                return 0, 0, []
            try:
                writes = self._fold(batches)
                asked = time.monotonic()
                committed = self.storage.commit_many(self.owner, writes, self.lease_seconds)
            except BaseException:
                for hold, *_ in batches:
                    hold.forget()  # it holds this batch's documents, maybe not stored
                raise
        applied, failed = 0, []
        for (hold, records, *_), write, ok in zip(batches, writes, committed, strict=True):
            if ok:
                hold.row = msgspec.structs.replace(hold.row, cursor=write.new)
                hold.renew_at = asked + self.lease_seconds / 3
                applied += len(records)
            else:
                hold.forget()
                failed.append(hold)
        return read, applied, failed

    def _fold(
        self, batches: Sequence[_Batch], before_load: Callable[[], None] | None = None
    ) -> list[Write]:
        """Each batch folded into its documents (loaded in one round trip if not held).

        The documents written stay in their hold, encoded (bytes are not tracked by the
        garbage collector; decoded states are, and walking many of them on every
        collection costs more than decoding again). ``before_load`` runs first if
        documents must be loaded.
        """
        loads = [
            Load(hold.row.name, hold.row.generation, [k for k in by_key if hold.may_be_stored(k)])
            for hold, _, by_key, _ in batches
        ]
        if any(load.keys for load in loads):
            if before_load is not None:
                before_load()
            stored = self.storage.load_many(loads)
        else:
            stored = [{} for _ in loads]
        writes = []
        tx_ids: dict[int, dict[int, int]] = {}  # id(records) -> position -> tx_id
        for (hold, records, by_key, undecoded), found in zip(batches, stored, strict=True):
            projector, held = hold.projector, hold.docs
            tx_of = tx_ids.get(id(records))
            if tx_of is None:
                tx_of = tx_ids[id(records)] = {r.position: r.tx_id for r in records}
            docs: dict[DocKey, bytes] = {}
            pages: dict[PageKey, bytes] = {}
            skipped = undecoded
            for key, events in by_key.items():
                data = held.pop(key, None)
                if data is not None:
                    hold.size -= len(data)
                elif (data := found.get(key)) is not None and hold.evicted is not None:
                    hold.evicted.discard(key)
                fetch = partial(self._fetch_pages, hold.row, key, before_load)
                folded, unfolded = projector.fold_stored(data, events, fetch=fetch, key=key)
                skipped += unfolded
                if folded is not None:
                    # Up to its own last event: the same bytes whatever the batches were.
                    at = events[-1].position
                    dumped = projector.dump(folded, (tx_of[at], at))
                    docs[key] = data = dumped.head
                    pages.update({(*key, n): items for n, items in dumped.pages.items()})
                    hold.keep(key, data)
            hold.trim(self.cached_bytes)  # not before: the loads above counted on them
            row = hold.row
            writes.append(
                Write(
                    row.name, row.generation, row.cursor, records[-1].cursor, docs, skipped, pages
                )
            )
        return writes

    def _fetch_pages(
        self,
        row: ProjectorRow,
        key: DocKey,
        before_load: Callable[[], None] | None,
        numbers: Sequence[int],
    ) -> dict[int, bytes]:
        """Stored pages of a document being folded (rare: a tool's result long after
        its call; see ``Projector``)."""
        if before_load is not None:
            before_load()
        return self.storage.load_pages(row.name, row.generation, key, numbers)

    # -- rebuilds ----------------------------------------------------------------
    def rebuild(self, projector: Projector[Any], progress: Progress | None = None) -> int:
        """Build ``projector`` from the start beside the live copy, then swap it in whole.

        Readers keep reading the live copy until the swap, which is one transaction.
        Returns the number of log events read.
        """
        return self.rebuild_all([projector], progress)

    def rebuild_all(
        self, projectors: Sequence[Projector[Any]] | None = None, progress: Progress | None = None
    ) -> int:
        """Rebuild ``projectors`` (default: all of this runner's) in ONE pass over the log.

        Each gets a fresh generation beside its live one, built in batches of
        ``rebuild_batch_size`` events (nobody reads a build, so big batches only cost
        memory; fewer of them mean fewer rewrites of the documents in flight) and
        swapped in whole when the log is exhausted; every batch is one commit of all the
        builds. The next page of the log is read, and the last batch committed, in the
        background while this thread folds. ``progress`` gets 0 once every build is
        this runner's, then the events of each committed batch. Returns the number of
        log events read. ``RebuildInProgress`` (nothing changed) if another live runner
        is rebuilding one of them, or took a build over. ``ProjectorOutdated`` if one of
        them is of an earlier version than its stored read model: before anything is
        built or, if a later release swapped its own in meanwhile, for that one only (its
        build deleted, the others swapped in).
        """
        chosen = list(self.projectors if projectors is None else projectors)
        for projector in chosen:
            live = self.storage.projector(projector.name)
            if live is not None and live.version > projector.version:
                raise outdated(projector.name, projector.version, live.version)
        builds = self._begin_builds(chosen)
        try:
            committed = self._build(builds, progress)
        except BaseException:  # an error, Ctrl-C: the next rebuild need not wait
            self._give_up(builds)
            raise
        refused: RebuildInProgress | ProjectorOutdated | None = None
        for n, (projector, hold) in enumerate(zip(chosen, builds, strict=True)):
            built = hold.row
            try:
                self.storage.swap(
                    projector.name,
                    projector.version,
                    built.generation,
                    built.cursor,
                    built.name,
                    self.owner,
                )
            except (RebuildInProgress, ProjectorOutdated) as exc:  # that one only: the
                refused = refused or exc  # others are swapped in all the same
                continue
            except BaseException:  # the builds not swapped yet: the next rebuild need
                self._give_up(builds[n + 1 :])  # not wait for their leases
                raise
            self._holds.pop(projector.name, None)  # its generation changed: claim again
        if refused is not None:
            raise refused
        return committed

    def _build(self, builds: Sequence[_Hold], progress: Progress | None) -> int:
        """The pass of ``rebuild_all`` over the log into ``builds``; events committed."""
        # The collector stays off for the whole pass, not only while a batch folds: the
        # reader thread reads the next page meanwhile, and the collections its rows set
        # off walked the pages and documents in memory (10-60 ms of a 50,000-event pass).
        with (
            _Heartbeat(self, builds),
            _collector_paused(),
            _Committer(self, progress) as committer,
        ):
            if progress is not None:
                progress(0)
            for records in self._pages(builds[0].row.cursor, self.rebuild_batch_size):
                # Loads must see every batch committed: wait for the one in flight.
                writes = self._fold(_batches(builds, records), committer.settle)
                for hold, write in zip(builds, writes, strict=True):
                    # Fenced on the cursor of the batch before, which commits first.
                    hold.row = msgspec.structs.replace(hold.row, cursor=write.new)
                committer.commit(writes, len(records))
        return committer.committed

    def _give_up(self, builds: Sequence[_Hold]) -> None:
        """Release the leases of ``builds`` (a rebuild that stopped short): the next
        rebuild takes them over at once, not when they run out. If the store is gone,
        they run out."""
        for hold in builds:
            try:
                self.storage.release(hold.row.name, self.owner)
            except StoreUnavailable as exc:
                log.warning("could not release the lease on %s: %s", hold.row.name, exc)

    def _begin_builds(self, chosen: Sequence[Projector[Any]]) -> list[_Hold]:
        """Claim a fresh build row for each of ``chosen`` (``begin_build``: a killed
        build's leftovers are deleted); ``RebuildInProgress``, holding none of them, if
        another live runner is building one."""
        builds: list[_Hold] = []
        for projector in chosen:
            name = projector.name + BUILD_SUFFIX
            asked = time.monotonic()
            row = self.storage.begin_build(name, projector.version, self.owner, self.lease_seconds)
            if row is None:
                self._give_up(builds)
                held = self.storage.projector(name)
                if held is not None and held.version > projector.version:
                    raise outdated(projector.name, projector.version, held.version)
                raise RebuildInProgress(
                    f"read model {projector.name!r} is being rebuilt by another runner "
                    f"(it holds the lease on {name!r}); wait for it to finish, or, if it "
                    f"was killed, for its lease to run out ({LEASE_SECONDS:g} s after it "
                    f"stopped, by default), then: ledger projections rebuild {projector.name}"
                )
            builder = Projector(name, projector.version, projector.reducer)
            hold = _Hold(builder, row, asked + self.lease_seconds / 3)
            hold.evicted = set()  # a new generation: nothing is stored but what we write
            builds.append(hold)
        return builds

    def _pages(self, cursor: LogCursor, limit: int) -> Iterator[list[Record]]:
        """The log after ``cursor`` in pages of ``limit``, the next one read ahead."""
        read_log = self.ledger.store.read_log
        with ThreadPoolExecutor(1, thread_name_prefix="ledger-rebuild-read") as reader:
            ahead = reader.submit(read_log, cursor, limit)
            while records := ahead.result():
                ahead = reader.submit(read_log, records[-1].cursor, limit)
                yield records

    # -- live --------------------------------------------------------------------
    def run(self, stop: threading.Event, *, poll_seconds: float = 0.5) -> None:
        """Follow the log until ``stop`` is set; wake on appends (Postgres) or poll.

        Outlives the store going away (a server restart or failover, a dropped
        connection, a SQLite file locked past its timeout): each ``StoreUnavailable``
        is logged, then the runner waits (doubling from 0.1 s to 10 s, with jitter;
        ``stop`` cuts a wait short), claims its projectors again and carries on from
        the cursors the database holds. A batch whose commit was cut off is thus
        neither lost nor applied twice: if it committed, the claim finds the cursor
        past it. Any other error ends the run, as before.
        """
        waiter: _Waiter | None = None
        retry = Backoff(log)
        try:
            while not stop.is_set():
                try:
                    if waiter is None:
                        waiter = _waiter_for(self.ledger, poll_seconds)
                    if self.step() == 0:
                        waiter.wait(stop)
                except StoreUnavailable as exc:
                    if waiter is not None:
                        waiter.close()
                    waiter = None
                    for hold in self._holds.values():
                        hold.renew_at = 0.0  # claim again: keeps its documents only if
                        # nobody committed in between (see _claim)
                    stop.wait(retry.after(exc))
                    continue
                retry.succeeded()
        finally:
            if waiter is not None:
                waiter.close()
            self._holds.clear()
            self._release_all()

    def _release_all(self) -> None:
        """Give up every lease (on the way out). Connections the pool kept across an
        outage fail once each, so a few tries; if the store is gone, the leases expire."""
        pending = list(self.projectors)
        for attempt in range(1, 4):
            try:
                while pending:
                    self.storage.release(pending[0].name, self.owner)
                    pending.pop(0)
                return
            except StoreUnavailable as exc:
                if attempt == 3:
                    log.warning(
                        "could not release the leases (%s); they expire in %gs",
                        exc,
                        self.lease_seconds,
                    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the duration of one batch (or of a
    whole rebuild).

    A batch allocates many objects that all live until it ends (records, events and
    their payload dicts, states): with the collector on, allocation counts trigger
    collections that walk them over and over and promote them to the old generation,
    whose full collections walk everything (a rebuild ran 15-20% slower, its decoding
    twice as slow). Batches make no reference cycles; refcounting frees them.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Batch(NamedTuple):
    hold: _Hold
    records: list[Record]
    by_key: dict[DocKey, list[Event]]
    undecoded: int  # records of the batch that did not decode (skipped by every hold)


def _batches(holds: Sequence[_Hold], records: list[Record]) -> list[_Batch]:
    """``records`` decoded once, and grouped by document for each of ``holds``."""
    events, undecoded = decode_for_fold(records)
    return [_Batch(hold, records, _by_key(hold.projector, events), undecoded) for hold in holds]


class _Committer:
    """A rebuild's commits, made by a background thread in log order, one in flight."""

    def __init__(self, runner: ProjectorRunner, progress: Progress | None) -> None:
        self._runner = runner
        self._progress = progress
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-rebuild-commit")
        self._pending: tuple[Future[list[bool]], Sequence[Write], int] | None = None
        self.committed = 0  # events of the batches committed

    def commit(self, writes: Sequence[Write], events: int) -> None:
        """Start committing ``writes`` (a batch of ``events``) once the last one is in."""
        self.settle()
        runner = self._runner
        future = self._pool.submit(
            runner.storage.commit_many, runner.owner, writes, runner.lease_seconds
        )
        self._pending = (future, writes, events)

    def settle(self) -> None:
        """Wait for the commit in flight; ``RebuildInProgress`` if a build lost its lease."""
        if self._pending is None:
            return
        future, writes, events = self._pending
        self._pending = None
        lost = [w.name for w, ok in zip(writes, future.result(), strict=True) if not ok]
        if lost:
            raise lost_build(lost[0])
        self.committed += events
        if self._progress is not None:
            self._progress(events)

    def __enter__(self) -> _Committer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.settle()
        finally:
            self._pool.shutdown(wait=True)


class _Heartbeat:
    """Renews a rebuild's leases every third of ``lease_seconds`` from a thread of its
    own while the rebuild runs, so a long pass (a big batch to fold, a slow commit) keeps
    its build rows: a second rebuild fails fast, and only a killed one's are taken over."""

    def __init__(self, runner: ProjectorRunner, builds: Sequence[_Hold]) -> None:
        self._runner = runner
        self._builds = builds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ledger-rebuild-lease")

    def _beat(self) -> None:
        runner = self._runner
        while not self._stop.wait(runner.lease_seconds / 3):
            for hold in self._builds:
                row = hold.row
                try:
                    kept = runner.storage.renew(
                        row.name, runner.owner, row.generation, runner.lease_seconds
                    )
                except StoreUnavailable as exc:  # the next commit says whether it lasted
                    log.warning("could not renew the lease on %s: %s", row.name, exc)
                    continue
                if not kept:  # the next commit, fenced, fails and says so
                    log.warning("lost the lease on %s to another runner", row.name)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


_USER_ID = attrgetter("user_id")


def _by_key(projector: Projector[Any], events: Sequence[Event]) -> dict[DocKey, list[Event]]:
    """``events`` grouped by the document of ``projector`` each belongs to, in log order."""
    by_key: dict[DocKey, list[Event]] = defaultdict(list)
    field = getattr(projector.reducer, "key_field", None)
    if field is not None:
        # Grouped by the key alone (read in C, a str: cheaper to hash than a tuple),
        # then split by user if a key turns out to be shared by several users.
        by_field: dict[str, list[Event]] = defaultdict(list)
        for key, event in zip(map(attrgetter(field), events), events, strict=True):
            by_field[key].append(event)
        for key, group in by_field.items():
            user_id = group[0].user_id
            if field == "user_id" or list(map(_USER_ID, group)).count(user_id) == len(group):
                by_key[(user_id, key)] = group
            else:
                for event in group:
                    by_key[(event.user_id, key)].append(event)
        return by_key
    key_of = projector.reducer.key
    for event in events:
        key = key_of(event)
        if key is not None:
            by_key[(event.user_id, key)].append(event)
    return by_key


class _Waiter(Protocol):
    """What the live loop blocks on between empty steps."""

    def wait(self, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


class _Poller:
    """Sleeps between empty steps (SQLite, memory): no server to push to us."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.seconds)

    def close(self) -> None:
        pass


def _waiter_for(ledger: Ledger, poll_seconds: float) -> _Waiter:
    if ledger.store.backend == "postgres":
        from projections.listen import Listener

        # Writers notify at most once per notify_interval, the last append of a burst
        # by a trailing notice: the timeout only covers a notice lost with a dropped
        # connection.
        interval = getattr(ledger.store, "notify_interval", poll_seconds)
        return Listener(ledger, min(poll_seconds, 2.5 * interval))
    return _Poller(poll_seconds)
