"""The read side behind ``Tenant.conversation()``, ``runs()``, ``run_metadata()``,
``memories()`` (registered with the ledger as the ``ledger.read_side`` entry point).

Every read is scoped to the tenant and includes everything committed before it started
(``projections.reading.current``), whether or not a projector is running. Sealed
content comes back opened with the user's key (or as erased); read models that hold
none are not walked for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ledger.connection import Ledger
from ledger.errors import NotFound
from ledger.personal import Keyring, reveal
from ledger.store import EventStore
from ledger.tenant import Tenant
from projections.catalog import CONVERSATION, MEMORY, RUN_METADATA, default_projectors
from projections.models import ConversationState, Memory, RunMetadata
from projections.reading import Current, current
from projections.reducers import RunFold
from projections.storage import storage_for

M = TypeVar("M")


#: ``ledger.read_side.RUN_ORDERS`` on a folded run: (sort key, largest first). A cost
#: the price table does not know sorts below every known one.
_RUN_ORDERS: dict[str, tuple[Callable[[RunFold], float], bool]] = {
    "created": (lambda s: s.started_at.timestamp(), False),
    "cost": (lambda s: -1.0 if s.cost_usd is None else s.cost_usd, True),
    "tokens": (lambda s: float(s.total_tokens), True),
    "wall_time": (lambda s: float(s.wall_time_ms), True),
}


def _opened(model: M, read: Current, user_id: str, keyring: Keyring) -> M:
    """``model`` (made from ``read``) with its sealed content opened, if it may hold any."""
    return reveal(model, user_id, keyring) if read.sealed else model


class ReadSide:
    """Reads of the three read models for one ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.projectors = {p.name: p for p in default_projectors()}
        self.storage = storage_for(ledger.store)

    def conversation(
        self, tenant: Tenant, session_id: str, last: int | None = None
    ) -> ConversationState:
        """The session's conversation (only its ``last`` messages, if given, read from
        the stored pages that hold them); NotFound if the tenant has no run in it."""
        store, user_id = self.ledger.store, tenant.user_id
        projector = self.projectors[CONVERSATION]
        # The head holds at least a page of the newest messages once any are paged out.
        pages = None if last is None else -(-last // projector.page_items)
        runs, data = storage_for(store).get_with_runs(
            store, CONVERSATION, user_id, session_id, session_id, pages
        )
        if not runs:
            raise NotFound(f"session {session_id!r} not found for user {user_id!r}")
        read = current(self.ledger, projector, user_id, session_id, runs, data)
        if read.doc is None:
            raise NotFound(f"session {session_id!r} has no events yet")
        model = ConversationState.from_state(read.doc.state, last)
        return _opened(model, read, user_id, self.ledger.keyring)

    def run_metadata(self, tenant: Tenant, run_id: str) -> RunMetadata:
        """One run's metadata; NotFound for a missing run or another tenant's."""
        head = self.ledger.store.run_head(tenant.user_id, run_id)
        if head is None:
            raise NotFound(f"run {run_id!r} not found for user {tenant.user_id!r}")
        read = current(self.ledger, self.projectors[RUN_METADATA], tenant.user_id, run_id, [head])
        if read.doc is None:
            raise NotFound(f"run {run_id!r} has no events yet")
        model = RunMetadata.from_state(read.doc.state)
        return _opened(model, read, tenant.user_id, self.ledger.keyring)

    def runs(
        self,
        tenant: Tenant,
        session_id: str | None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[RunMetadata]:
        """Metadata of the tenant's runs (oldest first), one stored-document scan."""
        ledger = self.ledger
        return self._runs(ledger.store, ledger.keyring, tenant.user_id, session_id, order_by, limit)

    def runs_across(
        self,
        store: EventStore,
        keyring: Keyring,
        user_id: str | None,
        session_id: str | None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[RunMetadata]:
        """Metadata of every tenant's runs (or ``user_id``'s), read through ``store``
        and opened with ``keyring``: the auditor's view, whose role the database lets
        read across tenants."""
        return self._runs(store, keyring, user_id, session_id, order_by, limit)

    def _runs(
        self,
        store: EventStore,
        keyring: Keyring,
        user_id: str | None,
        session_id: str | None,
        order_by: str | None,
        limit: int | None,
    ) -> list[RunMetadata]:
        stored = {
            (user, key): data for user, key, data in storage_for(store).scan(RUN_METADATA, user_id)
        }
        projector = self.projectors[RUN_METADATA]
        found: list[tuple[RunFold, Current, str]] = []
        for head in store.list_runs(user_id, session_id):
            read = current(
                self.ledger,
                projector,
                head.user_id,
                head.run_id,
                [head],
                stored.get((head.user_id, head.run_id)),
                store=store,
            )
            if read.doc is not None:
                found.append((read.doc.state, read, head.user_id))
        if order_by is not None:  # on the folded states: only what is kept becomes a model
            key, largest_first = _RUN_ORDERS[order_by]
            found.sort(key=lambda item: key(item[0]), reverse=largest_first)
        return [
            _opened(RunMetadata.from_state(state), read, user, keyring)
            for state, read, user in found[:limit]
        ]

    def memories(self, tenant: Tenant, namespace: str | None) -> list[Memory]:
        """The tenant's current memories, optionally of one namespace."""
        runs = self.ledger.store.list_runs(tenant.user_id)
        user_id = tenant.user_id
        read = current(self.ledger, self.projectors[MEMORY], user_id, user_id, runs)
        if read.doc is None:
            return []
        items = sorted(read.doc.state.current.values(), key=lambda m: (m.namespace, m.key))
        return [
            _opened(Memory.from_item(m), read, user_id, self.ledger.keyring)
            for m in items
            if namespace in (None, m.namespace)
        ]
