"""Read models in process memory, beside a ``MemoryStore`` (tests and ``memory://``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from ledger.records import START, LogCursor
from ledger.store import EventStore
from projections.storage.base import (
    BUILD_SUFFIX,
    DocKey,
    Load,
    ProjectorRow,
    ReadModelStorage,
    Stored,
    Write,
    lost_build,
    outdated,
    projection_of,
)


class MemoryStorage(ReadModelStorage):
    """Dicts guarded by one lock; one instance per event store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, ProjectorRow] = {}
        self._docs: dict[tuple[str, int], dict[DocKey, bytes]] = {}
        self._pages: dict[tuple[str, int], dict[DocKey, dict[int, bytes]]] = {}
        self._generations: dict[str, int] = {}  # the last handed out, per read model

    @classmethod
    def attached_to(cls, store: EventStore) -> MemoryStorage:
        """The storage that lives as long as ``store`` (created on first use)."""
        existing = getattr(store, "_read_models", None)
        if existing is None:
            existing = cls()
            store._read_models = existing  # type: ignore[attr-defined]
        assert isinstance(existing, MemoryStorage)
        return existing

    def projector(self, name: str) -> ProjectorRow | None:
        with self._lock:
            return self._rows.get(name)

    def projectors(self) -> list[ProjectorRow]:
        with self._lock:
            return [self._rows[n] for n in sorted(self._rows)]

    def claim(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        now = datetime.now(UTC)
        with self._lock:
            row = self._rows.get(name)
            if row is None:
                row = self._new_row(name, version)
            elif _held_by_another(row, owner, now) or row.version > version:
                return None
            row = msgspec.structs.replace(
                row, owner=owner, lease_until=now + timedelta(seconds=ttl)
            )
            self._rows[name] = row
            return row

    def _new_row(self, name: str, version: int) -> ProjectorRow:
        """A row at the start of the log, with a generation never handed out before."""
        live = projection_of(name)
        used = [r.generation for n in (live, live + BUILD_SUFFIX) if (r := self._rows.get(n))]
        generation = max([self._generations.get(live, 0), *used]) + 1
        self._generations[live] = generation
        return ProjectorRow(name, version, generation, START, None, None, None)

    def begin_build(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        with self._lock:
            row = self._rows.get(name)
            now = datetime.now(UTC)
            if row is not None and (_held_by_another(row, owner, now) or row.version > version):
                return None
            if row is not None:  # a killed build's, or one given up: start over
                self._discard(row)
            row = msgspec.structs.replace(
                self._new_row(name, version), owner=owner, lease_until=now + timedelta(seconds=ttl)
            )
            self._rows[name] = row
            return row

    def renew(self, name: str, owner: str, generation: int, ttl: float) -> bool:
        with self._lock:
            return self._renewed(name, owner, generation, ttl)

    def _renewed(self, name: str, owner: str, generation: int, ttl: float) -> bool:
        row = self._rows.get(name)
        if row is None or (row.owner, row.generation) != (owner, generation):
            return False
        until = datetime.now(UTC) + timedelta(seconds=ttl)
        self._rows[name] = msgspec.structs.replace(row, lease_until=until)
        return True

    def release(self, name: str, owner: str) -> None:
        with self._lock:
            row = self._rows.get(name)
            if row is not None and row.owner == owner:
                self._rows[name] = msgspec.structs.replace(row, owner=None, lease_until=None)

    def load_many(self, loads: Sequence[Load]) -> list[dict[DocKey, bytes]]:
        with self._lock:
            found = []
            for load in loads:
                docs = self._docs.get((projection_of(load.name), load.generation), {})
                found.append({k: docs[k] for k in load.keys if k in docs})
            return found

    def commit_many(self, owner: str, writes: Sequence[Write], ttl: float) -> list[bool]:
        now = datetime.now(UTC)
        moved = []
        with self._lock:
            for write in writes:
                row = self._rows.get(write.name)
                if row is None or (row.generation, row.cursor, row.owner) != (
                    write.generation,
                    write.expected,
                    owner,
                ):
                    moved.append(False)
                    continue
                key = (projection_of(write.name), write.generation)
                self._docs.setdefault(key, {}).update(write.docs)
                pages = self._pages.setdefault(key, {})
                for (user_id, doc, number), items in write.pages.items():
                    pages.setdefault((user_id, doc), {})[number] = items
                self._rows[write.name] = msgspec.structs.replace(
                    row,
                    cursor=write.new,
                    lease_until=now + timedelta(seconds=ttl),
                    updated_at=now,
                    skipped=row.skipped + write.skipped,
                )
                moved.append(True)
        return moved

    def load_pages(
        self, name: str, generation: int, doc: DocKey, numbers: Sequence[int]
    ) -> dict[int, bytes]:
        with self._lock:
            pages = self._pages.get((projection_of(name), generation), {}).get(doc, {})
            return {n: pages[n] for n in numbers if n in pages}

    def get(
        self, name: str, user_id: str, key: str, last_pages: int | None = None
    ) -> Stored | None:
        with self._lock:
            row = self._rows.get(name)
            if row is None:
                return None
            return self._stored(name, row.generation, user_id, key, last_pages)

    def scan(self, name: str, user_id: str | None) -> list[tuple[str, str, Stored]]:
        with self._lock:
            row = self._rows.get(name)
            if row is None:
                return []
            docs = self._docs.get((name, row.generation), {})
            return [
                (u, k, stored)
                for u, k in sorted(docs)
                if user_id in (None, u)  # before the pages are gathered
                and (stored := self._stored(name, row.generation, u, k)) is not None
            ]

    def _stored(
        self, name: str, generation: int, user_id: str, key: str, last_pages: int | None = None
    ) -> Stored | None:
        head = self._docs.get((name, generation), {}).get((user_id, key))
        if head is None:
            return None
        pages = self._pages.get((name, generation), {}).get((user_id, key), {})
        numbers = sorted(pages)
        if last_pages is not None:
            numbers = numbers[len(numbers) - min(last_pages, len(numbers)) :]
        return Stored(head, tuple(pages[n] for n in numbers), numbers[0] if numbers else 0)

    def swap(
        self,
        name: str,
        version: int,
        generation: int,
        cursor: LogCursor,
        build: str,
        owner: str | None = None,
    ) -> None:
        now = datetime.now(UTC)
        with self._lock:
            if owner is not None and not self._renewed(build, owner, generation, 0):
                raise lost_build(build)
            live = self._rows.get(name) or ProjectorRow(
                name, version, generation, cursor, None, None, None
            )
            if live.version > version:  # a later release's is live: this build is of no use
                if (built := self._rows.get(build)) is not None:
                    self._discard(built)
                raise outdated(name, version, live.version)
            built = self._rows.pop(build, None)
            self._rows[name] = msgspec.structs.replace(
                live,
                version=version,
                generation=generation,
                cursor=cursor,
                updated_at=now,
                skipped=0 if built is None else built.skipped,
            )
            for table in (self._docs, self._pages):
                for key in [k for k in table if k[0] == name and k[1] < generation]:
                    del table[key]

    def drop(self, name: str) -> None:
        with self._lock:
            row = self._rows.get(name)
            if row is not None:
                self._discard(row)

    def _discard(self, row: ProjectorRow) -> None:
        """Forget ``row``, its documents and pages (the lock held)."""
        del self._rows[row.name]
        self._docs.pop((projection_of(row.name), row.generation), None)
        self._pages.pop((projection_of(row.name), row.generation), None)


def _held_by_another(row: ProjectorRow, owner: str, now: datetime) -> bool:
    """Whether a live runner other than ``owner`` holds ``row``'s lease."""
    return row.owner != owner and row.held(now)
