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
    Write,
    projection_of,
)


class MemoryStorage(ReadModelStorage):
    """Dicts guarded by one lock; one instance per event store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, ProjectorRow] = {}
        self._docs: dict[tuple[str, int], dict[DocKey, bytes]] = {}

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
                self._rows[write.name] = msgspec.structs.replace(
                    row,
                    cursor=write.new,
                    lease_until=now + timedelta(seconds=ttl),
                    updated_at=now,
                    skipped=row.skipped + write.skipped,
                )
                moved.append(True)
        return moved

    def get(self, name: str, user_id: str, key: str) -> bytes | None:
        with self._lock:
            row = self._rows.get(name)
            if row is None:
                return None
            return self._docs.get((name, row.generation), {}).get((user_id, key))

    def scan(self, name: str, user_id: str | None) -> list[tuple[str, str, bytes]]:
        with self._lock:
            row = self._rows.get(name)
            if row is None:
                return []
            docs = self._docs.get((name, row.generation), {})
            return [
                (u, k, d) for (u, k), d in sorted(docs.items()) if user_id is None or u == user_id
            ]

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
            for key in [k for k in self._docs if k[0] == name and k[1] < generation]:
                del self._docs[key]

    def drop(self, name: str) -> None:
        with self._lock:
            row = self._rows.pop(name, None)
            if row is not None:
                self._docs.pop((projection_of(name), row.generation), None)


def _first_generation(rows: Mapping[str, ProjectorRow], name: str) -> int:
    """A new row's generation: 1 for a live projector; above the live one for a build."""
    live = rows.get(projection_of(name))
    return 1 if live is None or live.name == name else live.generation + 1
