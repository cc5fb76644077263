"""Reading a read model consistently: the stored document plus what it has not seen yet.

After ``run.turn()`` returns, the same process's ``t.conversation(session_id)`` must
include that turn. Rather than wait for a projector (which may not be running at all on
a laptop), a read folds the run events the stored document does not include yet (it
records, per run, the last version it holds) with the same reducer the projector uses.
The result is exactly what the projector will store once it passes those events.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any, Final

from ledger.connection import Ledger
from ledger.events import CATALOG
from ledger.records import RunHead
from ledger.store import EventStore
from ledger.tenant import to_event
from projections.projector import Document, Projector
from projections.storage import storage_for


class _Unread(Enum):
    UNREAD = "unread"


#: ``current``'s ``data`` when the caller has not read the stored document.
UNREAD: Final = _Unread.UNREAD


def current(
    ledger: Ledger,
    projector: Projector[Any],
    user_id: str,
    key: str,
    runs: Iterable[RunHead],
    data: bytes | _Unread | None = UNREAD,
    *,
    store: EventStore | None = None,
) -> Document[Any] | None:
    """The document ``key`` of ``user_id`` including every committed event of ``runs``.

    ``data`` is the stored document when the caller already read it (None: none is
    stored), so it is not read again; ``store`` is the view to read through (default:
    the ledger's own, scoped to ``user_id``).
    """
    store = store or ledger.store
    if data is UNREAD:
        data = storage_for(store).get(projector.name, user_id, key)
    doc = None if data is None else projector.load(data)
    unseen = []
    for run in runs:
        seen = 0 if doc is None else doc.applied.get(run.run_id, 0)
        if run.version > seen:
            unseen.extend(store.read_run(user_id, run.run_id, after_version=seen))
    unseen.sort(key=lambda record: record.position)  # log order, as the projector folds
    events = (to_event(r) for r in unseen if r.type in CATALOG.names)
    return projector.fold(doc, (e for e in events if projector.reducer.key(e) == key))
