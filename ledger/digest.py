"""Log digests: a short string an auditor keeps outside the database (like QLDB's).

A digest covers the global log up to a horizon: the number of events and a root hash
chained over their stored hashes in log order. Later, ``check`` proves that every event
the digest covered is unchanged, even against someone able to rewrite a whole run's
hash chain consistently (which the per-run check alone cannot see): such a rewrite
changes the stored hashes, so the root no longer matches; and ``check`` recomputes
each covered hash from the stored bytes, so a payload changed under its old hash fails
it too, whatever the per-run check was narrowed to. Events appended after the
digest lie beyond its horizon (the log never puts a new event behind a cursor already
read, invariant 6) and do not affect it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import msgspec

from ledger.chain import recompute
from ledger.errors import InvalidEvent
from ledger.records import START, LogCursor, Record
from ledger.store.base import EventStore

_PREFIX = "ledger-digest-v1"
#: The root in either case of hex: a digest pasted through a tool that upper-cases it
#: is the same digest (``bytes.fromhex`` reads both).
_FORMAT = re.compile(rf"^{_PREFIX}:([0-9]+):([0-9]+):([0-9]+):([0-9a-fA-F]{{64}})$")
_BATCH = 5000


class Digest(msgspec.Struct, frozen=True):
    """``events`` events of the log up to ``horizon``, chained into ``root``."""

    horizon: LogCursor
    events: int
    root: bytes

    def __str__(self) -> str:
        h = self.horizon
        return f"{_PREFIX}:{h.tx_id}:{h.position}:{self.events}:{self.root.hex()}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Read a digest string; InvalidEvent saying what a digest looks like otherwise."""
        found = _FORMAT.match(text.strip())
        if found is None:
            raise InvalidEvent(
                f"not a ledger digest: {text[:80]!r} (expected "
                f"'{_PREFIX}:<tx_id>:<position>:<events>:<64 hex digits>', "
                "as printed by 'ledger verify --digest')"
            )
        tx_id, position, events, root = found.groups()
        return cls(LogCursor(int(tx_id), int(position)), int(events), bytes.fromhex(root))


def take(store: EventStore, progress: Callable[[int], None] | None = None) -> Digest:
    """The digest of everything committed before the call (see ``EventStore.settle``)."""
    store.settle()
    return _chain(store, None, progress)[0]


def check(store: EventStore, digest: Digest, progress: Callable[[int], None] | None = None) -> bool:
    """True if the log up to the digest's horizon is exactly what the digest covered.

    Every covered event's hash is recomputed from its stored bytes (envelope, payload
    and ``prev_hash``), not read from its hash column on trust: a payload changed under
    its old hash, a hash column changed alone, or both changed together, each fails."""
    return mismatch(store, digest, progress) is None


def mismatch(
    store: EventStore, digest: Digest, progress: Callable[[int], None] | None = None
) -> str | None:
    """None if ``check`` passes, else one sentence saying what is off: the first covered
    event whose stored bytes do not give its stored hash (by run, user and version), a
    log that holds fewer or more events up to the horizon than the digest covered (one
    that ends before the horizon: a digest of another ledger), or a different root."""
    covered, altered, last = _chain(store, digest.horizon, progress, proving=True)
    if altered is not None:
        return (
            f"run {altered.run_id} (user {altered.user_id}) at version {altered.version}: "
            "its stored bytes do not give its stored hash (changed after the digest was taken)"
        )
    if covered == digest:
        return None
    other = "or the digest was taken of another ledger"
    if covered.events < digest.events and (last is None or last < digest.horizon):
        return (
            f"the log ends before the digest's horizon ({_place(digest.horizon)}): it holds "
            f"{covered.events} events, the digest covers {digest.events}; covered "
            f"events were deleted, {other}"
        )
    if covered.events != digest.events:
        return (
            f"the log holds {covered.events} events up to the digest's horizon, the digest "
            f"covers {digest.events}: events were deleted or inserted, {other}"
        )
    return (
        f"the {digest.events} events up to the digest's horizon do not chain to its root: "
        f"their hashes were rewritten (a run's chain recomputed), {other}"
    )


def _place(cursor: LogCursor) -> str:
    return f"tx_id {cursor.tx_id}, position {cursor.position}"


def _chain(
    store: EventStore,
    upto: LogCursor | None,
    progress: Callable[[int], None] | None,
    *,
    proving: bool = False,
) -> tuple[Digest, Record | None, LogCursor | None]:
    """The digest of the log (up to ``upto``); when ``proving``, the first event whose
    stored hash is not the one its stored bytes give (None if every one is); and the
    last cursor the log has at all (None if it is empty), read or not."""
    root = hashlib.sha256(_PREFIX.encode())
    cursor, count, altered, last = START, 0, None, None
    while True:
        read = store.read_log(cursor, _BATCH)
        if read:
            last = read[-1].cursor
        batch = read if upto is None else [r for r in read if r.cursor <= upto]
        for record in batch:
            root.update(record.hash)
            if proving and altered is None and not _hash_is_its_bytes(record):
                altered = record
        if not batch:
            break
        count += len(batch)
        cursor = batch[-1].cursor
        if progress is not None:
            progress(len(batch))
        if upto is not None and cursor >= upto:
            break
    return Digest(cursor if upto is None else upto, count, root.digest()), altered, last


def _hash_is_its_bytes(record: Record) -> bool:
    """Whether ``record``'s hash column is the hash of its stored envelope, payload and
    ``prev_hash``. With the root over the hash columns, this binds the digest to the
    bytes: changing them without changing the hash would need a sha256 preimage."""
    try:
        return recompute(record, record.prev_hash) == record.hash
    except (TypeError, ValueError):  # a row too malformed to hash was altered
        return False
