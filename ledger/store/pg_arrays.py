"""Postgres binary wire format for the arrays an append sends, written out directly.

Why not psycopg's own list dumper: it inspects every list to choose an element type
and dumper (and re-chooses for each statement, as every statement gets a fresh
transformer), which made parameter encoding the largest client cost of an append
(~40% of the store's CPU a turn in a profile). The columns of an append have fixed
types, so the store wraps each in one of the list types below (``event_columns``), and
the dumpers registered for them (``register``) write the array in one pass; the API's
append (``pg_append``) takes them already encoded (``binary_event_columns``).

The format (``array_recv`` in Postgres): ndim, has-nulls flag, element type oid, then
(length, lower bound) per dimension, then each element as a 4-byte length (-1 for
NULL) followed by its bytes.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg.adapt import AdaptersMap, Buffer, Dumper
from psycopg.pq import Format

if TYPE_CHECKING:
    from ledger.records import NewEvent

_HEADER = struct.Struct(">iiIii")
_LENGTH = struct.Struct(">i")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_NULL = _LENGTH.pack(-1)
_pack_length = _LENGTH.pack


class Int8s(list[int]):
    """A ``bigint[]`` parameter."""


class Int2s(list[int]):
    """A ``smallint[]`` parameter."""


class Texts(list[str | None]):
    """A ``text[]`` parameter (elements may be None)."""


class Byteas(list[bytes]):
    """A ``bytea[]`` parameter."""


class Timestamps(list[datetime]):
    """A ``timestamptz[]`` parameter (timezone-aware datetimes)."""


def _array(element_oid: int, items: list[bytes] | list[bytes | None]) -> bytes:
    has_null = None in items
    parts = [_HEADER.pack(1, has_null, element_oid, len(items), 1)]
    for item in items:
        if item is None:
            parts.append(_NULL)
        else:
            parts.append(_pack_length(len(item)))
            parts.append(item)
    return b"".join(parts)


@functools.cache
def _layout(fmt: str, count: int) -> tuple[struct.Struct, int]:
    return struct.Struct(">iiIii" + ("i" + fmt) * count), struct.calcsize(">" + fmt)


def _fixed(fmt: str, element_oid: int, values: list[int]) -> bytes:
    """An array of fixed-width numbers: one struct.pack for the whole array."""
    layout, size = _layout(fmt, len(values))
    flat: list[int] = [1, 0, element_oid, len(values), 1]
    for value in values:
        flat.append(size)
        flat.append(value)
    return layout.pack(*flat)


def _microseconds(moment: datetime) -> int:
    delta = moment - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def bigints(values: list[int]) -> bytes:
    """A ``bigint[]`` in the binary format."""
    return _fixed("q", 20, values)


def smallints(values: list[int]) -> bytes:
    """A ``smallint[]`` in the binary format."""
    return _fixed("h", 21, values)


def texts(values: list[str | None]) -> bytes:
    """A ``text[]`` in the binary format (None is NULL)."""
    return _array(25, [None if s is None else s.encode() for s in values])


def byteas(values: list[bytes]) -> bytes:
    """A ``bytea[]`` in the binary format."""
    return _array(17, values)


def timestamps(values: list[datetime]) -> bytes:
    """A ``timestamptz[]`` in the binary format (timezone-aware datetimes)."""
    return _fixed("q", 1184, [_microseconds(t) for t in values])


def _columns(events: Sequence[NewEvent]) -> tuple[list[Any], ...]:
    """An append's per-event columns, in ``ledger_append``'s order
    (``postgres_sql.APPEND_PARAMS``)."""
    return (
        [e.version for e in events],
        [e.type for e in events],
        [e.schema for e in events],
        [e.occurred_at for e in events],
        [e.payload for e in events],
        [e.key_id for e in events],
        [e.prev_hash for e in events],
        [e.hash for e in events],
    )


def event_columns(events: Sequence[NewEvent]) -> list[list[Any]]:
    """An append's per-event columns as parameters for psycopg, each array wrapped in
    its type (which ``register``'s dumpers write)."""
    version, type_, schema, occurred, payload, key_id, prev_hash, hash_ = _columns(events)
    return [
        Int8s(version),
        Texts(type_),
        Int2s(schema),
        Timestamps(occurred),
        Byteas(payload),
        Texts(key_id),
        Byteas(prev_hash),
        Byteas(hash_),
    ]


def binary_event_columns(events: Sequence[NewEvent]) -> list[bytes]:
    """The same columns already in the binary format (for ``pg_append``)."""
    version, type_, schema, occurred, payload, key_id, prev_hash, hash_ = _columns(events)
    return [
        bigints(version),
        texts(type_),
        smallints(schema),
        timestamps(occurred),
        byteas(payload),
        texts(key_id),
        byteas(prev_hash),
        byteas(hash_),
    ]


class _ArrayDumper(Dumper):
    format = Format.BINARY


class _Int8sDumper(_ArrayDumper):
    oid = 1016

    def dump(self, obj: Any) -> Buffer:
        return bigints(obj)


class _Int2sDumper(_ArrayDumper):
    oid = 1005

    def dump(self, obj: Any) -> Buffer:
        return smallints(obj)


class _TextsDumper(_ArrayDumper):
    oid = 1009

    def dump(self, obj: Any) -> Buffer:
        return texts(obj)


class _ByteasDumper(_ArrayDumper):
    oid = 1001

    def dump(self, obj: Any) -> Buffer:
        return byteas(obj)


class _TimestampsDumper(_ArrayDumper):
    oid = 1185

    def dump(self, obj: Any) -> Buffer:
        return timestamps(obj)


def register(adapters: AdaptersMap) -> None:
    """Make ``adapters`` dump the list types of this module as binary arrays."""
    for cls, dumper in (
        (Int8s, _Int8sDumper),
        (Int2s, _Int2sDumper),
        (Texts, _TextsDumper),
        (Byteas, _ByteasDumper),
        (Timestamps, _TimestampsDumper),
    ):
        adapters.register_dumper(cls, dumper)
