"""Erasure by crypto-shredding (DESIGN.md invariant 7): ``ledger forget --user U``.

Nothing in the event log changes. The user's keys are destroyed, so every sealed
token of theirs -- in events, read models, backups taken from now on and exports made
afterwards -- can no longer be opened and reads as ``[erased]``; chains still verify
because they cover the ciphertext. The erasure is then recorded as a ``user_erased``
event in a run of its own (session ``ledger-erasure``), so the audit trail says who
was forgotten, when, and which keys went.

A user the ledger holds nothing of is ``NotFound``, and nothing is recorded.

Content written with encryption off is stored in the clear: no key covers it, so no
erasure can reach it. ``forget`` counts the user's events that hold such content
(``Erasure.plain_events``) and never reports them erased: with no key to destroy at
all it is ``NotErasable`` and does nothing; otherwise it destroys the keys, records
that, and says how many events it could not erase (``ledger forget`` exits 1).

Order: keys first, then the record. If the process dies between the two, the content
is already gone and running ``forget`` again records the erasure (destroying nothing
more): the record names every destroyed key of the user, so those of the interrupted
run too. On Postgres the store's ``destroy_keys`` returns only once every transaction
running when the keys went has ended, so an append that checked a key just before is
logged (and acknowledged) before the record, never after it. Backups taken *before*
the erasure still hold the key material; see docs/compliance.md for what that means
and how to close it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ledger.errors import NotErasable, NotFound
from ledger.ids import check_id
from ledger.personal import holds_plain_content

if TYPE_CHECKING:
    from ledger.connection import Ledger
    from ledger.store.base import EventStore

#: The session the erasure records of a user go to.
ERASURE_SESSION = "ledger-erasure"


class Erasure(msgspec.Struct, frozen=True):
    """What ``forget`` did: the keys destroyed and the run that records it, and how many
    of the user's events hold personal content in the clear, which it could not erase."""

    user_id: str
    destroyed_keys: list[str]
    run_id: str
    plain_events: int = 0


def plain_events(store: EventStore, user_id: str) -> int:
    """How many of ``user_id``'s events hold personal content stored in the clear."""
    return sum(
        holds_plain_content(record.type, record.payload, record.key_id)
        for head in store.list_runs(user_id)
        for record in store.read_run(user_id, head.run_id)
    )


def forget(ledger: Ledger, user_id: str, reason: str | None = None) -> Erasure:
    """Destroy ``user_id``'s keys and record the erasure (see the module docstring)."""
    user_id = check_id("user_id", user_id)
    store = ledger.store
    if not store.key_ids(user_id) and not store.list_runs(user_id):
        # Recording an erasure would write the id of someone the ledger never held (a
        # typo, or a person known only elsewhere) into a log nothing can remove it from.
        raise NotFound(
            f"user {user_id!r} not found: the ledger holds nothing of theirs, so there is "
            "nothing to forget (and nothing was recorded)"
        )
    plain = plain_events(store, user_id)
    if plain and not store.key_ids(user_id):
        raise NotErasable(
            f"user {user_id!r}: nothing can be erased: {plain} of their events hold personal "
            "content stored in the clear (written with encryption off, or aggregate state "
            "stored through the eventsourcing recorder), which no key covers; "
            "nothing was destroyed or recorded. Remove it with the ledger's data (e.g. the "
            "SQLite file), and connect with encryption on (LEDGER_ENCRYPT=1) so new content "
            "can be forgotten"
        )
    destroyed = store.destroy_keys(user_id)
    ledger.keyring.forget(user_id)
    # The record names every destroyed key of the user, not only those destroyed now: a
    # forget killed before recording is completed by the next, whose keys are all gone.
    live = store.live_key(user_id)  # (one made meanwhile, if the user came back)
    gone = [k for k in store.key_ids(user_id) if live is None or k != live[0]]
    run = ledger.tenant(user_id).start_run(session_id=ERASURE_SESSION, agent="ledger forget")
    with run.turn():
        run._emit("user_erased", {"key_ids": gone, "reason": reason}, None)
        run.complete()
    return Erasure(user_id, destroyed, run.run_id, plain)
