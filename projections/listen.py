"""Waking live readers on Postgres: LISTEN to the ledger's append notifications."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from ledger.connection import Ledger
from ledger.errors import StoreUnavailable
from ledger.store.postgres import PostgresStore
from ledger.store.postgres_schema import NOTIFY_CHANNEL


class Listener:
    """Blocks until an append is committed in this ledger's schema, or a timeout.

    The timeout is a safety net (a notification lost with a dropped connection), not
    the mechanism: after any wake the runner reads the log from its cursor anyway.
    A connection that cannot be made or is lost raises ``StoreUnavailable``, like the
    store's own; the runner then waits and makes a new listener.
    """

    def __init__(self, ledger: Ledger, timeout: float) -> None:
        store = ledger.store
        assert isinstance(store, PostgresStore)
        self.schema = store.schema
        self.timeout = timeout
        with _lost_as_unavailable():
            self._conn: psycopg.Connection[Any] = psycopg.connect(store.conninfo, autocommit=True)
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, stop: threading.Event) -> None:
        """Return after the next append in this schema, ``timeout``, or ``stop``."""
        with _lost_as_unavailable():
            for notice in self._conn.notifies(timeout=self.timeout, stop_after=1):
                if notice.payload == self.schema or stop.is_set():
                    return

    def close(self) -> None:
        self._conn.close()


@contextmanager
def _lost_as_unavailable() -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"the LISTEN connection to Postgres failed: {exc}") from exc
