"""Read models in process memory, beside a ``MemoryStore`` (tests and ``memory://``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from ledger.records import START, LogCursor
from ledger.store import EventStore
from projections.storage.base import (
    DocKey,
    Load,
    ProjectorRow,
    ReadModelStorage,
    Stored,
    Write,
    projection_of,
)


class MemoryStorage(ReadModelStorage):
    """Dicts guarded by one lock; one instance per event store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, ProjectorRow] = {}
        self._docs: dict[tuple[str, int], dict[DocKey, bytes]] = {}
        self._pages: dict[tuple[str, int], dict[DocKey, dict[int, bytes]]] = {}

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
                row = ProjectorRow(
                    name, version, _first_generation(self._rows, name), START, None, None, None
                )
            elif row.owner not in (None, owner) and row.lease_until and row.lease_until > now:
                return None
            row = msgspec.structs.replace(
                row, owner=owner, lease_until=now + timedelta(seconds=ttl)
            )
            self._rows[name] = row
            return row

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

    def swap(self, name: str, version: int, generation: int, cursor: LogCursor, build: str) -> None:
        now = datetime.now(UTC)
        with self._lock:
            live = self._rows.get(name) or ProjectorRow(
                name, version, generation, cursor, None, None, None
            )
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
            row = self._rows.pop(name, None)
            if row is not None:
                self._docs.pop((projection_of(name), row.generation), None)
                self._pages.pop((projection_of(name), row.generation), None)


def _first_generation(rows: Mapping[str, ProjectorRow], name: str) -> int:
    """A new row's generation: 1 for a live projector; above the live one for a build."""
    live = rows.get(projection_of(name))
    return 1 if live is None or live.name == name else live.generation + 1
