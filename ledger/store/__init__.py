"""Store backends behind one interface (see ``ledger.store.base``)."""

from ledger.store.base import EventStore, RecordConflict
from ledger.store.memory import MemoryStore

__all__ = ["EventStore", "MemoryStore", "RecordConflict"]
