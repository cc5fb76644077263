"""The per-run hash chain (DESIGN.md invariant 5).

``hash = sha256(prev_hash || len(envelope) || envelope || len(payload) || payload)``
where ``envelope`` is the canonical JSON array of the fields the writer chose
(tenant, session, run, version, type, schema, occurred_at, key id). The payload is
hashed as the exact bytes the store holds (ciphertext once encryption is on), never a
re-encoding, so a verifier needs nothing but the stored row. ``position``,
``tx_id`` and ``recorded_at`` are assigned by the store and are not chained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from ledger.records import GENESIS, NewEvent, Record

__all__ = ["GENESIS", "Unsealed", "canonical_time", "link", "recompute", "seal"]

_encode = msgspec.json.Encoder().encode


def _msgspec_writes_canonically(moment: datetime) -> bool:
    """Whether msgspec writes ``moment`` (in C, as RFC 3339) exactly in the canonical
    form: it does for a UTC time with microseconds; it drops a zero fraction, which the
    canonical form keeps, and writes other offsets as they are."""
    return moment.tzinfo is UTC and moment.microsecond != 0


def canonical_time(moment: datetime) -> str:
    """The one text form of a timestamp used in the chain: UTC, microseconds, 'Z'."""
    if _msgspec_writes_canonically(moment):
        return _encode(moment)[1:-1].decode()
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    # isoformat (in C) ends "+00:00" once the offset is zero; strftime or an f-string
    # of the fields costs more than the rest of sealing an event.
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def envelope_bytes(
    user_id: str,
    session_id: str,
    run_id: str,
    version: int,
    type_: str,
    schema: int,
    occurred_at: datetime,
    key_id: str | None,
) -> bytes:
    """The canonical envelope that the chain covers."""
    # Where msgspec writes the canonical form itself, the datetime goes in as it is: a
    # tenth of the cost of building the string first, on every event sealed or verified.
    when: datetime | str = occurred_at
    if not _msgspec_writes_canonically(occurred_at):
        when = canonical_time(occurred_at)
    return _encode([user_id, session_id, run_id, version, type_, schema, when, key_id])


def link(prev_hash: bytes, envelope: bytes, payload: bytes) -> bytes:
    """The hash of one event given its predecessor's."""
    h = hashlib.sha256(prev_hash)
    h.update(len(envelope).to_bytes(8, "big"))
    h.update(envelope)
    h.update(len(payload).to_bytes(8, "big"))
    h.update(payload)
    return h.digest()


class Unsealed(msgspec.Struct, frozen=True):
    """An event's envelope fields and encoded payload, before it is linked into the chain."""

    type: str
    schema: int
    occurred_at: datetime
    payload: bytes
    key_id: str | None = None


def seal(
    user_id: str,
    session_id: str,
    run_id: str,
    head_version: int,
    head_hash: bytes,
    events: Sequence[Unsealed],
    *,
    first_version: int | None = None,
) -> tuple[NewEvent, ...]:
    """Number and chain ``events`` after the run's head; the result is ready to append."""
    sealed: list[NewEvent] = []
    prev = head_hash
    version = head_version + 1 if first_version is None else first_version
    for event in events:
        env = envelope_bytes(
            user_id,
            session_id,
            run_id,
            version,
            event.type,
            event.schema,
            event.occurred_at,
            event.key_id,
        )
        digest = link(prev, env, event.payload)
        sealed.append(
            NewEvent(
                version=version,
                type=event.type,
                schema=event.schema,
                occurred_at=event.occurred_at,
                payload=event.payload,
                prev_hash=prev,
                hash=digest,
                key_id=event.key_id,
            )
        )
        prev = digest
        version += 1
    return tuple(sealed)


def recompute(record: Record, prev_hash: bytes) -> bytes:
    """The hash ``record`` should carry if it follows ``prev_hash``."""
    env = envelope_bytes(
        record.user_id,
        record.session_id,
        record.run_id,
        record.version,
        record.type,
        record.schema,
        record.occurred_at,
        record.key_id,
    )
    return link(prev_hash, env, record.payload)
