"""The read-model storage contract, shared by the memory, SQLite and Postgres backends.

A read model is a set of documents ``(projection, generation, user_id, key) -> bytes``
(one encoded reducer state each; for a paged read model, its head, with the pages of
items moved out of it beside it: ``projections.projector``) and one projector row: its
version, the generation readers see, its position in the global log as a
``(tx_id, position)`` cursor, and the lease of the runner that owns it.

Exactly once: ``commit_many`` writes each projector's documents and moves its cursor in
ONE transaction, and only for a projector whose row still has the expected generation,
cursor and owner (a fenced update): a runner killed at any instant leaves either both
or neither, and a runner that lost its lease, or whose generation was swapped by a
rebuild, changes nothing.

``SQLStorage`` is the SQL backends' shared body: each backend gives it one table of
named statements (``Statements``) and implements the two batch methods its database
does best (``load_many``, ``commit_many``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from itertools import groupby
from operator import itemgetter
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import msgspec

from ledger.errors import ProjectorOutdated, RebuildInProgress
from ledger.records import LogCursor, RunHead
from ledger.store.base import EventStore

DocKey = tuple[str, str]  # (user_id, key)
PageKey = tuple[str, str, int]  # (user_id, key, page number)


class Stored(NamedTuple):
    """A stored document as readers get it: its head and its pages in order (all of
    them, or the last few), read in one snapshot: ``Projector.load(*stored)`` gives the
    whole state, or the state from page ``first`` on."""

    head: bytes
    pages: tuple[bytes, ...] = ()
    first: int = 0  # the page number of pages[0]


class ProjectorRow(msgspec.Struct, frozen=True):
    """A projector's persisted state."""

    name: str
    version: int
    generation: int
    cursor: LogCursor
    owner: str | None
    lease_until: datetime | None
    updated_at: datetime | None
    #: Stored events this read model skipped, since it was (re)built: they did not
    #: decode, or its reducer raised on them (``projections.projector``).
    skipped: int = 0

    def held(self, now: datetime) -> bool:
        """Whether a runner holds this row's lease at ``now`` (none, or one run out: no)."""
        return self.owner is not None and self.lease_until is not None and self.lease_until > now


class Write(NamedTuple):
    """One projector's part of a commit: its documents and its cursor move (fenced)."""

    name: str
    generation: int
    expected: LogCursor
    new: LogCursor
    docs: Mapping[DocKey, bytes]
    skipped: int = 0  # events of the batch the read model skipped (added to the row's)
    pages: Mapping[PageKey, bytes] = MappingProxyType({})  # written with the documents


class Load(NamedTuple):
    """The stored documents among ``keys`` of projector row ``name``'s ``generation``."""

    name: str
    generation: int
    keys: Sequence[DocKey]


class ReadModelStorage(ABC):
    """Documents and projector rows, committed together."""

    @abstractmethod
    def projector(self, name: str) -> ProjectorRow | None:
        """The projector's row, or None if it never ran."""

    @abstractmethod
    def projectors(self) -> list[ProjectorRow]:
        """Every projector row (live ones and rebuilds in progress), by name."""

    @abstractmethod
    def claim(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        """Take (or renew) the lease on ``name`` if it is free, expired or ours.

        Creates the row (generation 1, at the start of the log) on first use. Returns
        the row as claimed, or None while another live runner holds it, or if its
        stored version is above ``version`` (a later release's: an earlier one never
        takes it).
        """

    @abstractmethod
    def release(self, name: str, owner: str) -> None:
        """Give the lease up (clean shutdown), if ``owner`` still holds it."""

    @abstractmethod
    def begin_build(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        """Claim build row ``name`` (``NAME~rebuild``) for a build from the start.

        None while another live runner holds it, or if a later release's build (above
        ``version``) has it. Otherwise the row as claimed, afresh:
        a generation never handed out before, at the start of the log, with what an
        earlier build of it left (a killed one's half-written documents and pages)
        deleted, all in one transaction.
        """

    @abstractmethod
    def renew(self, name: str, owner: str, generation: int, ttl: float) -> bool:
        """Extend ``owner``'s lease on ``name`` (a build's heartbeat); False if the row
        is gone, has another owner, or another generation (it was taken over)."""

    @abstractmethod
    def load_many(self, loads: Sequence[Load]) -> list[dict[DocKey, bytes]]:
        """The stored documents of each of ``loads`` (one round trip where possible)."""

    def load(self, name: str, generation: int, keys: list[DocKey]) -> dict[DocKey, bytes]:
        """The stored documents among ``keys`` in ``generation``."""
        return self.load_many([Load(name, generation, keys)])[0] if keys else {}

    @abstractmethod
    def load_pages(
        self, name: str, generation: int, doc: DocKey, numbers: Sequence[int]
    ) -> dict[int, bytes]:
        """The stored pages among ``numbers`` of document ``doc`` in ``generation``."""

    @abstractmethod
    def commit_many(self, owner: str, writes: Sequence[Write], ttl: float) -> list[bool]:
        """Apply ``writes`` in ONE transaction; per write, whether it was applied.

        A write is applied (documents and pages written, cursor moved ``expected ->
        new``, lease renewed) only if its row still has that generation, cursor and
        ``owner``; otherwise nothing of it is written. The others are not affected.
        """

    def commit(
        self,
        name: str,
        generation: int,
        owner: str,
        expected: LogCursor,
        new: LogCursor,
        docs: Mapping[DocKey, bytes],
        ttl: float,
    ) -> bool:
        """Write ``docs`` and move the cursor ``expected -> new`` atomically (fenced).

        False (and nothing written) if the row no longer has that generation, cursor
        and owner.
        """
        return self.commit_many(owner, [Write(name, generation, expected, new, docs)], ttl)[0]

    @abstractmethod
    def get(
        self, name: str, user_id: str, key: str, last_pages: int | None = None
    ) -> Stored | None:
        """One document of the generation readers see, with its pages (only its last
        ``last_pages`` of them, if given)."""

    def get_with_runs(
        self,
        store: EventStore,
        name: str,
        user_id: str,
        session_id: str,
        key: str,
        last_pages: int | None = None,
    ) -> tuple[list[RunHead], Stored | None]:
        """``store.list_runs(user_id, session_id)`` and ``get(name, user_id, key,
        last_pages)``; Postgres reads both in one round trip."""
        return store.list_runs(user_id, session_id), self.get(name, user_id, key, last_pages)

    @abstractmethod
    def scan(self, name: str, user_id: str | None) -> list[tuple[str, str, Stored]]:
        """Every document of the generation readers see (with its pages), of one tenant
        or all, by user and key."""

    @abstractmethod
    def swap(
        self,
        name: str,
        version: int,
        generation: int,
        cursor: LogCursor,
        build: str,
        owner: str | None = None,
    ) -> None:
        """Make ``generation`` (built by projector row ``build``) the one readers see.

        One transaction: the live row takes the new version, generation and cursor (its
        lease is kept) and the build row goes. The older generations' documents and
        pages, which no reader can see any more, are deleted after it. With ``owner``,
        fenced: ``RebuildInProgress`` (and nothing changed) if the build row is no
        longer ``owner``'s at ``generation``. Never down: if the live row's version is
        above ``version`` (a later release swapped its build in meanwhile),
        ``ProjectorOutdated``, the live row untouched and this build deleted.
        """

    @abstractmethod
    def drop(self, name: str) -> None:
        """Forget a projector row, its documents and pages (an abandoned rebuild)."""


def stored_of(rows: Sequence[tuple[int, bytes]]) -> Stored | None:
    """The document read as ``(page, data)`` rows: its head (page -1), then its pages in
    order; None if it has no head."""
    if not rows or rows[0][0] >= 0:
        return None
    pages = tuple(bytes(data) for _, data in rows[1:])
    return Stored(bytes(rows[0][1]), pages, rows[1][0] if pages else 0)


#: Separates a projector's name from the suffix of a rebuild's own row.
BUILD_SUFFIX = "~rebuild"


def projection_of(row_name: str) -> str:
    """The read model a projector row writes (a rebuild writes its live projector's)."""
    return row_name.removesuffix(BUILD_SUFFIX)


def lost_build(build: str) -> RebuildInProgress:
    """The error of a build whose row another runner took over (its lease ran out)."""
    name = projection_of(build)
    return RebuildInProgress(
        f"the rebuild of read model {name!r} was taken over by another runner (this one's "
        f"lease on {build!r} ran out); nothing was swapped in: ledger projections rebuild "
        f"{name} once it is done, if needed"
    )


def outdated(name: str, version: int, stored: int) -> ProjectorOutdated:
    """The error of a projector older than its stored read model (an earlier release's)."""
    return ProjectorOutdated(
        f"projector {name!r} is at version {version} but its read model is at version "
        f"{stored}, built by a later release: this runner is of an earlier release: upgrade "
        f"or stop it (it leaves read model {name!r} alone)"
    )


# -- the SQL backends' shared body ---------------------------------------------------------


class Statements(NamedTuple):
    """A SQL backend's named statements (named parameters, as in the comments).

    Each returns or changes what its name says; ``claim`` returns the claimed row.
    """

    select_row: str  # name
    select_rows: str
    next_generation: str  # projection, build -> a generation never handed out before
    create_row: str  # name, version, generation
    claim: str  # name, version (the highest it may take), owner + the backend's lease clock
    renew: str  # name, owner, generation + the backend's lease clock
    release: str  # name, owner
    select_doc: str  # name, user_id, key, pages (a limit) -> (page, doc): head (-1), pages
    scan_docs: str  # name, user_id (NULL: all tenants) -> (user_id, key, page, doc)
    select_pages: str  # name, generation, user_id, key, pages (the backend's list form)
    swap_live: str  # name, version, generation, tx_id, position, build (its skipped);
    # returns the live row's name, none if its version is above ``version`` (not swapped)
    delete_row: str  # name
    delete_older_generations: str  # name, generation
    delete_generation: str  # projection, generation
    delete_older_pages: str  # name, generation
    delete_generation_pages: str  # projection, generation


class _Store(Protocol):
    def transaction(self) -> AbstractContextManager[Any]: ...

    def connection(self) -> AbstractContextManager[Any]: ...

    def read_as(
        self, user_id: str | None, statement: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]: ...


class SQLStorage(ReadModelStorage):
    """The statements both SQL backends run the same way, through ``statements``."""

    statements: Statements

    def __init__(self, store: _Store) -> None:
        self._store = store

    # -- backend hooks ---------------------------------------------------------------
    @abstractmethod
    def _row(self, values: Sequence[Any]) -> ProjectorRow:
        """A projector row from the columns of ``select_row``."""

    @abstractmethod
    def _lease(self, ttl: float) -> dict[str, Any]:
        """The lease-clock parameters of ``claim`` (server clock, or times to store)."""

    def _run(self, conn: Any, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        """Execute one statement on ``conn``; the backend may prepare it."""
        return conn.execute(statement, params or {})

    def _swap_time(self) -> dict[str, Any]:
        """Extra parameters of ``swap_live`` (the stored time, where not the server's)."""
        return {}

    @abstractmethod
    def _numbers(self, numbers: Sequence[int]) -> Any:
        """Page numbers as ``select_pages`` takes them."""

    @abstractmethod
    def _limit(self, count: int | None) -> Any:
        """A count of pages as ``select_doc`` takes it (None: all of them)."""

    # -- the contract ------------------------------------------------------------------
    def projector(self, name: str) -> ProjectorRow | None:
        with self._store.connection() as conn:
            found = self._run(conn, self.statements.select_row, {"name": name}).fetchone()
        return None if found is None else self._row(found)

    def projectors(self) -> list[ProjectorRow]:
        with self._store.connection() as conn:
            return [self._row(r) for r in self._run(conn, self.statements.select_rows).fetchall()]

    def claim(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        with self._store.transaction() as conn:
            return self._claimed(conn, name, version, owner, ttl)[0]

    def _claimed(
        self, conn: Any, name: str, version: int, owner: str, ttl: float
    ) -> tuple[ProjectorRow | None, bool]:
        """``claim`` inside ``conn``'s transaction; and whether it created the row."""
        params = {"name": name, "version": version, "owner": owner, **self._lease(ttl)}
        row = self._run(conn, self.statements.claim, params).fetchone()
        if row is not None or self._run(conn, self.statements.select_row, params).fetchone():
            return (None if row is None else self._row(row)), False
        self._create(conn, name, version, self._next_generation(conn, name))
        row = self._run(conn, self.statements.claim, params).fetchone()  # None: a race lost
        return (None if row is None else self._row(row)), row is not None

    def _next_generation(self, conn: Any, name: str) -> int:
        """A generation for a new row ``name``, never handed out before (a counter per
        read model: never one a killed build left documents under)."""
        live = projection_of(name)
        counted = {"projection": live, "build": live + BUILD_SUFFIX}
        return int(self._run(conn, self.statements.next_generation, counted).fetchone()[0])

    def _create(self, conn: Any, name: str, version: int, generation: int) -> None:
        """Insert row ``name`` at the start of the log, in ``generation``."""
        params = {"name": name, "version": version, "generation": generation}
        self._run(conn, self.statements.create_row, params)

    def begin_build(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        with self._store.transaction() as conn:
            row, created = self._claimed(conn, name, version, owner, ttl)
            if row is None or created:
                return row
            # A killed build's, or one given up: start over. The next generation first,
            # while the row still counts (a counter made since is seeded from the rows).
            generation = self._next_generation(conn, name)
            self._delete_build(conn, row)
            self._create(conn, name, version, generation)
            return self._claimed(conn, name, version, owner, ttl)[0]

    def _delete_build(self, conn: Any, row: ProjectorRow) -> None:
        """Delete build row ``row``, its documents and pages, in ``conn``'s transaction."""
        params = {"projection": projection_of(row.name), "generation": row.generation}
        self._run(conn, self.statements.delete_generation, params)
        self._run(conn, self.statements.delete_generation_pages, params)
        self._run(conn, self.statements.delete_row, {"name": row.name})

    def renew(self, name: str, owner: str, generation: int, ttl: float) -> bool:
        with self._store.transaction() as conn:
            return self._renewed(conn, name, owner, generation, ttl)

    def _renewed(self, conn: Any, name: str, owner: str, generation: int, ttl: float) -> bool:
        params = {"name": name, "owner": owner, "generation": generation, **self._lease(ttl)}
        return self._run(conn, self.statements.renew, params).fetchone() is not None

    def release(self, name: str, owner: str) -> None:
        with self._store.transaction() as conn:
            self._run(conn, self.statements.release, {"name": name, "owner": owner})

    def get(
        self, name: str, user_id: str, key: str, last_pages: int | None = None
    ) -> Stored | None:
        params = {"name": name, "user_id": user_id, "key": key, "pages": self._limit(last_pages)}
        # On Postgres as the tenant, under row-level security.
        return stored_of(self._store.read_as(user_id, self.statements.select_doc, params))

    def scan(self, name: str, user_id: str | None) -> list[tuple[str, str, Stored]]:
        params = {"name": name, "user_id": user_id}
        rows = self._store.read_as(user_id, self.statements.scan_docs, params)  # all pages
        found = []
        for (user, key), group in groupby(rows, key=itemgetter(0, 1)):  # heads first
            stored = stored_of([(page, data) for _, _, page, data in group])
            if stored is not None:
                found.append((user, key, stored))
        return found

    def load_pages(
        self, name: str, generation: int, doc: DocKey, numbers: Sequence[int]
    ) -> dict[int, bytes]:
        params = {
            "name": projection_of(name),
            "generation": generation,
            "user_id": doc[0],
            "key": doc[1],
            "pages": self._numbers(numbers),
        }
        with self._store.connection() as conn:
            rows = self._run(conn, self.statements.select_pages, params).fetchall()
        return {n: bytes(data) for n, data in rows}

    def swap(
        self,
        name: str,
        version: int,
        generation: int,
        cursor: LogCursor,
        build: str,
        owner: str | None = None,
    ) -> None:
        params = {
            "name": name,
            "version": version,
            "generation": generation,
            "tx_id": cursor.tx_id,
            "position": cursor.position,
            "build": build,
            **self._swap_time(),
        }
        with self._store.transaction() as conn:
            if owner is not None and not self._renewed(conn, build, owner, generation, 0):
                raise lost_build(build)
            swapped = self._run(conn, self.statements.swap_live, params).fetchone()
            if swapped is not None:
                self._run(conn, self.statements.delete_row, {"name": build})
            else:  # a later release's version is live: this build is of no use
                live = self._run(conn, self.statements.select_row, {"name": name}).fetchone()
                built = self._run(conn, self.statements.select_row, {"name": build}).fetchone()
                if built is not None:
                    self._delete_build(conn, self._row(built))
        if swapped is None:
            raise outdated(name, version, self._row(live).version)
        # Invisible since the swap (readers join on the live generation): deleted in a
        # transaction of its own, so the swap itself stays short.
        with self._store.transaction() as conn:
            older = {"name": name, "generation": generation}
            self._run(conn, self.statements.delete_older_generations, older)
            self._run(conn, self.statements.delete_older_pages, older)

    def drop(self, name: str) -> None:
        with self._store.transaction() as conn:
            found = self._run(conn, self.statements.select_row, {"name": name}).fetchone()
            if found is not None:
                self._delete_build(conn, self._row(found))
