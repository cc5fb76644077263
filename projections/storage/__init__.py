"""Where read models live: beside the event log, in the same database (or process)."""

from __future__ import annotations

from ledger.store import EventStore
from projections.storage.base import DocKey, ProjectorRow, ReadModelStorage


def storage_for(store: EventStore) -> ReadModelStorage:
    """The read-model storage that shares ``store``'s database (and transactions).

    Made once per store: creating it prepares the tables, which must not happen on
    every read.
    """
    existing = getattr(store, "_read_model_storage", None)
    if isinstance(existing, ReadModelStorage):
        return existing
    made = _make(store)
    store._read_model_storage = made  # type: ignore[attr-defined]
    return made


def _make(store: EventStore) -> ReadModelStorage:
    if store.backend == "memory":
        from projections.storage.memory import MemoryStorage

        return MemoryStorage.attached_to(store)
    if store.backend == "sqlite":
        from projections.storage.sqlite import SQLiteStorage

        return SQLiteStorage(store)  # type: ignore[arg-type]
    from projections.storage.postgres import PostgresStorage

    return PostgresStorage(store)  # type: ignore[arg-type]


__all__ = ["DocKey", "ProjectorRow", "ReadModelStorage", "storage_for"]
