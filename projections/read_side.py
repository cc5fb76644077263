"""The read side behind ``Tenant.conversation()``, ``runs()``, ``run_metadata()``,
``memories()`` (registered with the ledger as the ``ledger.read_side`` entry point).

Every read is scoped to the tenant and includes everything committed before it started
(``projections.reading.current``), whether or not a projector is running. Sealed
content comes back opened with the user's key (or as erased); read models that hold
none are not walked for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

import msgspec

from ledger.connection import Ledger
from ledger.errors import NotFound
from ledger.personal import Keyring, reveal
from ledger.records import RunHead
from ledger.store import EventStore
from ledger.tenant import Tenant
from projections.catalog import CONVERSATION, MEMORY, RUN_METADATA, default_projectors
from projections.models import ConversationState, Memory, RunMetadata
from projections.projector import Projector
from projections.reading import Current, current
from projections.reducers import RunFold, millis
from projections.storage import storage_for
from projections.storage.base import Stored

M = TypeVar("M")


class _RunOrder(Protocol):
    """What ``_RUN_ORDERS`` read of a run: a folded ``RunFold`` or a peeked ``_SortKeys``."""

    started_at: datetime
    updated_at: datetime
    cost_usd: float | None
    input_tokens: int
    output_tokens: int


class _SortKeys(msgspec.Struct, gc=False):
    """The fields of a stored run's state the orders read (``RunFold``'s names and
    defaults), decoded alone from every document a sorted, limited listing looks at:
    only the runs it keeps are decoded whole (see docs/read-side.md)."""

    started_at: datetime
    updated_at: datetime
    cost_usd: float | None = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


#: ``ledger.read_side.RUN_ORDERS`` on a run: (sort key, largest first). A cost the price
#: table does not know sorts below every known one.
_RUN_ORDERS: dict[str, tuple[Callable[[_RunOrder], float], bool]] = {
    "created": (lambda s: s.started_at.timestamp(), False),
    "cost": (lambda s: -1.0 if s.cost_usd is None else s.cost_usd, True),
    "tokens": (lambda s: float(s.input_tokens + s.output_tokens), True),
    "wall_time": (lambda s: millis(s.started_at, s.updated_at), True),
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

        def read(head: RunHead) -> Current:
            data = stored.get((head.user_id, head.run_id))
            return current(
                self.ledger, projector, head.user_id, head.run_id, [head], data, store=store
            )

        # Per run, what it sorts by, and its read if it had to be folded now. With a
        # limit, a stored document that includes all of its run is only peeked at.
        found: list[tuple[_RunOrder, RunHead, Current | None]] = []
        for head in store.list_runs(user_id, session_id):
            if limit is not None:
                if order_by is None and len(found) == limit:
                    break  # the first ``limit`` runs: the rest are not looked at
                keys = _peeked(projector, head, stored.get((head.user_id, head.run_id)))
                if keys is not None:
                    found.append((keys, head, None))
                    continue
            got = read(head)
            if got.doc is not None:
                found.append((got.doc.state, head, got))
        if order_by is not None:  # only what is kept becomes a model
            key, largest_first = _RUN_ORDERS[order_by]
            found.sort(key=lambda item: key(item[0]), reverse=largest_first)
        kept = []
        keyring = keyring.for_read()  # each key looked up once for the whole listing
        for _, head, folded in found[:limit]:
            got = folded or read(head)  # a peeked run: read whole now
            assert got.doc is not None  # (its stored document was peeked at)
            model = RunMetadata.from_state(got.doc.state)
            kept.append(_opened(model, got, head.user_id, keyring))
        return kept

    def memories(self, tenant: Tenant, namespace: str | None) -> list[Memory]:
        """The tenant's current memories, optionally of one namespace."""
        runs = self.ledger.store.list_runs(tenant.user_id)
        user_id = tenant.user_id
        read = current(self.ledger, self.projectors[MEMORY], user_id, user_id, runs)
        if read.doc is None:
            return []
        items = sorted(read.doc.state.current.values(), key=lambda m: (m.namespace, m.key))
        keyring = self.ledger.keyring.for_read()  # each key looked up once for them all
        return [
            _opened(Memory.from_item(m), read, user_id, keyring)
            for m in items
            if namespace in (None, m.namespace)
        ]


def _peeked(projector: Projector[RunFold], head: RunHead, data: Stored | None) -> _SortKeys | None:
    """What ``head``'s run sorts by, from its stored document (``data``) alone, if that
    includes all of the run; None if not (none stored, or the run went on since: the
    run is folded on read, ``projections.reading.current``)."""
    if data is None:
        return None
    doc = projector.peek(data.head, _SortKeys, key=(head.user_id, head.run_id))
    return doc.state if doc.folded(head) is None else None
