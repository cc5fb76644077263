"""``connect()`` and the ``Ledger`` it returns: the entry point of the embedded API."""

from __future__ import annotations

from ledger.auditor import Auditor
from ledger.erasure import Erasure, forget
from ledger.personal import Keyring
from ledger.read_side import ReadSide, Replayer, load_read_side, load_replayer
from ledger.settings import Settings
from ledger.store import EventStore, open_store
from ledger.tenant import Tenant


class Ledger:
    """A connection to one event store; hands out tenant-scoped handles."""

    def __init__(self, store: EventStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        #: Per-user keys: seals personal content on append (when ``encrypting``) and
        #: opens it on read, whatever the setting was when it was written.
        self.keyring = Keyring(store)
        self.encrypting = settings.encrypts(store.backend)
        self._auditor_reads: tuple[EventStore, Keyring] | None = None
        self._read_side: ReadSide | None = None
        self._replayer: Replayer | None = None

    def __repr__(self) -> str:
        return f"Ledger(backend={self.store.backend!r})"

    @property
    def backend(self) -> str:
        """ "memory", "sqlite" or "postgres"."""
        return self.store.backend

    def tenant(self, user_id: str) -> Tenant:
        """A handle that sees only ``user_id``'s runs, events and read models."""
        return Tenant(self, user_id)

    def reads_for(self, user_id: str | None) -> tuple[EventStore, Keyring]:
        """The store and keyring reads about ``user_id`` go through: the tenant's own, or,
        for None (across tenants), the auditor's, which reads every tenant, keys
        included, and writes nothing."""
        if user_id is not None:
            return self.store, self.keyring
        if self._auditor_reads is None:
            auditor_store = self.store.for_auditor()
            self._auditor_reads = (auditor_store, self.keyring.through(auditor_store))
        return self._auditor_reads

    @property
    def read_side(self) -> ReadSide:
        """The read models (conversation, run metadata, memory), loaded on first use."""
        if self._read_side is None:
            self._read_side = load_read_side(self)
        return self._read_side

    @property
    def replayer(self) -> Replayer:
        """The replay engine (point-in-time state, forks), loaded on first use."""
        if self._replayer is None:
            self._replayer = load_replayer(self)
        return self._replayer

    def auditor(self) -> Auditor:
        """The one handle that reads across tenants (verify, export, admin listings)."""
        return Auditor(self)

    def forget(self, user_id: str, reason: str | None = None) -> Erasure:
        """Erase ``user_id``'s personal content by destroying their keys (crypto-shredding),
        and record the erasure as an event. Metadata (tokens, timings, costs) remains."""
        return forget(self, user_id, reason)

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    url: str | None = None,
    *,
    max_event_bytes: int | None = None,
    encrypt: bool | None = None,
) -> Ledger:
    """Open (and create or migrate, if needed) the ledger at ``url``.

    ``url``: ``postgresql://...``, ``sqlite:///path/to/ledger.db`` or ``memory://``;
    None means ``$LEDGER_URL``, then ``sqlite:///ledger.db``. ``encrypt``: seal personal
    content with per-user keys (default: on for Postgres, off for SQLite and memory).
    """
    settings = Settings.resolve(url, max_event_bytes, encrypt)
    return Ledger(open_store(settings.url), settings)
