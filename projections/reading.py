"""Reading a read model consistently: the stored document plus what it has not seen yet.

After ``run.turn()`` returns, the same process's ``t.conversation(session_id)`` must
include that turn. Rather than wait for a projector (which may not be running at all on
a laptop), a read folds the run events the stored document does not include yet (it
records, per run, the last version it holds) with the same reducer the projector uses.
The result is exactly what the projector will store once it passes those events.

A read also says whether what it read may hold sealed tokens (``Current.sealed``), so
that read models with nothing sealed in them (encryption off, or a user who never
recorded personal content) are not walked for tokens on the way out: ~40% of reading
a long plain conversation.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from operator import attrgetter
from typing import Any, Final, NamedTuple

from ledger.connection import Ledger
from ledger.records import Record, RunHead
from ledger.storable import MARKED
from ledger.store import EventStore
from projections.projector import Document, Projector, decode_for_fold
from projections.storage import storage_for
from projections.storage.base import Stored


class _Unread(Enum):
    UNREAD = "unread"


#: ``current``'s ``data`` when the caller has not read the stored document.
UNREAD: Final = _Unread.UNREAD


class Current(NamedTuple):
    """A read model document as of now, and whether it may hold sealed tokens."""

    doc: Document[Any] | None
    #: False only if neither the stored bytes nor any event folded on them hold a token
    #: (tokens are stored as JSON strings that start with NUL; a sealed event has a key).
    sealed: bool


def current(
    ledger: Ledger,
    projector: Projector[Any],
    user_id: str,
    key: str,
    runs: Iterable[RunHead],
    data: Stored | _Unread | None = UNREAD,
    *,
    store: EventStore | None = None,
) -> Current:
    """The document ``key`` of ``user_id`` including every committed event of ``runs``.

    ``data`` is the stored document when the caller already read it (None: none is
    stored), so it is not read again: with all its pages, or only its last few (then
    the state returned holds the items from the first page read on, and the whole
    document is read again if an event to fold changes an item before them);
    ``store`` is the view to read through (default: the ledger's own, scoped to
    ``user_id``).
    """
    store = store or ledger.store
    if data is UNREAD:
        data = storage_for(store).get(projector.name, user_id, key)
    runs = list(runs)  # gone through again if the whole document is read
    while True:
        doc = None if data is None else projector.load(*data, key=(user_id, key))
        unseen = _unseen(store, user_id, runs, doc)
        if not unseen:  # caught up (the common case): nothing to decode or fold
            return Current(doc, _sealed(data))
        # Log order, as the projector folds.
        unseen.sort(key=attrgetter("tx_id", "position"))
        key_of = projector.reducer.key
        decoded, _ = decode_for_fold(unseen, quiet=True)
        events = [e for e in decoded if key_of(e) == key]
        if doc is not None and projector.paged and projector.reducer.touched(doc.state, events):
            # An item before the pages read changes (a tool's result long after its
            # call): the whole document, in a snapshot of its own, and what it lacks.
            # (Read again, the document has no offset: this happens once.)
            data = storage_for(store).get(projector.name, user_id, key)
            continue
        head, pages, first = (None, None, 0) if data is None else data
        folded, _ = projector.fold_stored(
            head, events, loaded=doc, quiet=True, pages=pages, first=first, key=(user_id, key)
        )
        return Current(folded, _sealed(data) or any(r.key_id for r in unseen))


def _unseen(
    store: EventStore, user_id: str, runs: Iterable[RunHead], doc: Document[Any] | None
) -> list[Record]:
    """The events of ``runs`` that ``doc`` does not include."""
    unseen: list[Record] = []
    for run in runs:
        seen = 0 if doc is None else doc.folded(run)
        if seen is None:
            continue
        missing = store.read_run(user_id, run.run_id, after_version=seen)
        if not seen and doc is not None and doc.cursor is not None:
            # A run the document does not name: none of it, or (a row stored after
            # the run's end) what came after the document's place in the log.
            after = doc.cursor
            missing = [r for r in missing if r.cursor > after]
        unseen.extend(missing)
    return unseen


def _sealed(data: Stored | None) -> bool:
    """Whether the stored document may hold a sealed token."""
    return data is not None and (MARKED in data.head or any(MARKED in p for p in data.pages))
