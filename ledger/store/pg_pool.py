"""The store's connection pool: psycopg_pool's, handing out the warmest connection.

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
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool


class LifoPool(ConnectionPool[psycopg.Connection[Any]]):
    """A ``ConnectionPool`` that hands out the most recently returned idle connection."""

    def _get_ready_connection(self, timeout: float | None) -> psycopg.Connection[Any] | None:
        # Idle connections are appended on return and taken from the left: move the
        # newest to the left first (under the pool's lock, like the rest of this hook).
        self._pool.rotate(1)
        return super()._get_ready_connection(timeout)
