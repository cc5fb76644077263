"""The read-model storage contract, shared by the memory, SQLite and Postgres backends.

A read model is a set of documents ``(projection, generation, user_id, key) -> bytes``
(one encoded reducer state each) and one projector row: its version, the generation
readers see, its position in the global log as a ``(tx_id, position)`` cursor, and the
lease of the runner that owns it.

Exactly once: ``commit`` writes the documents and moves the cursor in ONE transaction,
and only if the projector row still has the expected generation, cursor and owner (a
fenced update): a runner killed at any instant leaves either both or neither, and a
runner that lost its lease, or whose generation was swapped by a rebuild, changes
nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime

import msgspec

from ledger.records import LogCursor

DocKey = tuple[str, str]  # (user_id, key)


class ProjectorRow(msgspec.Struct, frozen=True):
    """A projector's persisted state."""

    name: str
    version: int
    generation: int
    cursor: LogCursor
    owner: str | None
    lease_until: datetime | None
    updated_at: datetime | None


class ReadModelStorage(ABC):
    """Documents and projector rows, committed together."""

    @abstractmethod
    def projector(self, name: str) -> ProjectorRow | None:
        """The projector's row, or None if it never ran."""

    @abstractmethod
    def projectors(self) -> list[ProjectorRow]:
        """Every projector row (live ones and rebuilds in progress), by name."""

    @abstractmethod
    def claim(self, name: str, version: int, owner: str, ttl: float) -> ProjectorRow | None:
        """Take (or renew) the lease on ``name`` if it is free, expired or ours.

        Creates the row (generation 1, at the start of the log) on first use. Returns
        the row as claimed, or None while another live runner holds it.
        """

    @abstractmethod
    def release(self, name: str, owner: str) -> None:
        """Give the lease up (clean shutdown), if ``owner`` still holds it."""

    @abstractmethod
    def load(self, name: str, generation: int, keys: list[DocKey]) -> dict[DocKey, bytes]:
        """The stored documents among ``keys`` in ``generation``."""

    @abstractmethod
    def commit(
        self,
        name: str,
        generation: int,
        owner: str,
        expected: LogCursor,
        new: LogCursor,
        docs: Mapping[DocKey, bytes],
        ttl: float,
    ) -> bool:
        """Write ``docs`` and move the cursor ``expected -> new`` atomically (fenced).

        False (and nothing written) if the row no longer has that generation, cursor
        and owner.
        """

    @abstractmethod
    def get(self, name: str, user_id: str, key: str) -> bytes | None:
        """One document of the generation readers see."""

    @abstractmethod
    def scan(self, name: str, user_id: str | None) -> list[tuple[str, str, bytes]]:
        """Every document of the generation readers see, of one tenant or all."""

    @abstractmethod
    def swap(self, name: str, version: int, generation: int, cursor: LogCursor, build: str) -> None:
        """Make ``generation`` (built by projector row ``build``) the one readers see.

        One transaction: the live row takes the new version, generation and cursor (its
        lease is kept), the build row and every other generation's documents go.
        """

    @abstractmethod
    def drop(self, name: str) -> None:
        """Forget a projector row and its documents (an abandoned rebuild)."""


#: Separates a projector's name from the suffix of a rebuild's own row.
BUILD_SUFFIX = "~rebuild"


def projection_of(row_name: str) -> str:
    """The read model a projector row writes (a rebuild writes its live projector's)."""
    return row_name.removesuffix(BUILD_SUFFIX)
