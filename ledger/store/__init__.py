"""Store backends behind one interface (see ``ledger.store.base``)."""

from __future__ import annotations

from ledger.errors import InvalidSetting
from ledger.store.base import EventStore, RecordConflict
from ledger.store.memory import MemoryStore


def open_store(url: str) -> EventStore:
    """Open the store a URL names: ``memory://``, ``sqlite:///path``, ``postgresql://...``."""
    if url.startswith("memory:"):
        return MemoryStore()
    if url.startswith("sqlite:"):
        from ledger.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql:", "postgres:")):
        from ledger.store.postgres import PostgresStore

        return PostgresStore.from_url(url)
    raise InvalidSetting(
        f"unsupported ledger URL {url!r}: use memory://, sqlite:///path/to/ledger.db "
        "or postgresql://user@host/dbname"
    )


__all__ = ["EventStore", "MemoryStore", "RecordConflict", "open_store"]
