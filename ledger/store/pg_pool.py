"""The store's connection pool: psycopg_pool's, handing out the warmest connection, and
checking one that sat idle before handing it out.

psycopg_pool's ``ConnectionPool`` serves idle connections first in, first out: a
process whose threads ever held two connections at once (an append and a background
notice, say) then alternates between them for good, and every statement wakes the
server backend that has been asleep the longest. On this workload that costs ~90 us of
wall time an append (one writer, 2 cores: 551 us against 452 us last in, first out,
same run), a fifth of a turn. SQLAlchemy offers the same choice as ``pool_use_lifo``;
psycopg_pool does not, so this subclass adds it. The connections left idle at the
other end are the ones the pool's own ``max_idle`` shrinking closes first.

Everything else (growing, reconnecting, checks, stats, waiting clients) is the
library's. The override is of one private hook, ``_get_ready_connection``, which the
pool calls under its lock to take an idle connection; ``tests/test_postgres_store``
pins the behaviour, and pyproject.toml caps psycopg-pool below the next minor
release until it is checked there.

A server restart, a failover or an idle timeout on the way leaves the pool holding
dead connections, and the next statement on each would fail (``StoreUnavailable``):
after a restart an agent's next turn would fail although the server is back. So, as
HikariCP does (its ``aliveBypassWindowMs``), a connection is checked with an empty query
(psycopg_pool's own ``check_connection``) before it is handed out if it sat idle for
more than ``idle_check`` seconds (1 s), or since a check failed or a connection was
found broken in use; a dead one is replaced. A connection in steady use is not
checked: an agent pays one round trip on a turn that follows a pause, not on every
statement.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

#: Where a pooled connection keeps the time it was last given back.
_RETURNED_AT = "_ledger_returned_at"


class LifoPool(ConnectionPool[psycopg.Connection[Any]]):
    """A ``ConnectionPool`` that hands out the most recently returned idle connection,
    checked first if it sat idle for more than ``idle_check`` seconds."""

    def __init__(self, conninfo: str, *, idle_check: float = 1.0, **kwargs: Any) -> None:
        self.idle_check = idle_check
        self._failed_check_at = 0.0
        super().__init__(conninfo, check=self._check_if_idle, **kwargs)

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        now = monotonic()
        if conn.broken:  # lost in use: the others may be dead too, check them first
            self._failed_check_at = now
        setattr(conn, _RETURNED_AT, now)
        super().putconn(conn)

    def _check_if_idle(self, conn: psycopg.Connection[Any]) -> None:
        returned = getattr(conn, _RETURNED_AT, 0.0)
        if monotonic() - returned <= self.idle_check and returned > self._failed_check_at:
            return
        try:
            self.check_connection(conn)
        except Exception:
            self._failed_check_at = monotonic()  # the others idle as long may be dead too
            raise

    def _get_ready_connection(self, timeout: float | None) -> psycopg.Connection[Any] | None:
        # Idle connections are appended on return and taken from the left: move the
        # newest to the left first (under the pool's lock, like the rest of this hook).
        self._pool.rotate(1)
        return super()._get_ready_connection(timeout)
