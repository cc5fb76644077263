"""What input may be stored: every stored event must read back exactly as written.

Readers (``personal.reveal``) open every stored string that starts with ``MARKER`` as a
sealed token, at any depth of any field; msgspec's decoder and ``reveal`` recurse into
nested values. So an event is refused (``InvalidEvent``, naming the field) if a string
of it starts like a token, if it nests deeper than every reader can walk, or if a value
of it cannot be written as JSON at all, or not exactly (``check_exact``: NaN, bytes, a
datetime...). Checked as a payload is sealed or stored (``personal.protect_one``), and
on JSONL input line by line (``check_plain``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from ledger.errors import InvalidEvent
from ledger.events import CATALOG, Payload

#: What every sealed token starts with, whatever its version (the NUL keeps it apart
#: from anything a person types); the format's version and the key id follow.
MARKER = "\x00ledger-sealed/"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

#: How a string that starts with NUL begins in the JSON the ledger writes (msgspec
#: writes NUL as ``\u0000``); every token does, as ``MARKER`` starts with NUL. Readers
#: open every string that starts with ``MARKER``, at any depth of any stored field, as a
#: token (``reveal``), so stored input must hold none: counting these bytes in an
#: encoded payload is the cheap test (~0.2 us for 500 bytes; the whole marker as the
#: needle costs 5x that on some text), ``_first_marked`` the exact one.
MARKED = b'"' + msgspec.json.encode("\x00")[1:-1]


def _first_marked(value: Any, path: str) -> str | None:
    """The path of the first string in ``value`` (any depth) that starts with
    ``MARKER``, or None."""
    if isinstance(value, str):
        return path if value.startswith(MARKER) else None
    if isinstance(value, dict):
        children: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list | tuple):
        children = ((f"[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for key, child in children:
        step = key if isinstance(key, str) and key.startswith("[") else f".{key}"
        found = _first_marked(child, f"{path}{step}")
        if found is not None:
            return found
    return None


def refuse_marked(type_: str, value: Any, path: str = "") -> None:
    """InvalidEvent naming where ``value`` holds a string that starts like a token (a
    reader would take it for one); nothing if it holds none (the bytes test can match
    inside a string, after an escaped quote)."""
    found = _first_marked(msgspec.to_builtins(value), path)
    if found is not None:
        raise InvalidEvent(
            f"{type_}{found if found.startswith(('.', '[')) else '.' + found}: "
            "must not start with the ledger's seal marker"
        )


#: How deeply a stored value may nest (lists and objects). Readers must be able to
#: walk whatever is stored: msgspec's decoder and ``reveal`` recurse, and a few hundred
#: levels down they fail, which would leave an event that no read (and no projector)
#: can get past. Real tool input and output nest a few levels.
MAX_DEPTH = 128


def check_depth(type_: str, encoded: bytes, value: Any, path: str = "") -> None:
    """InvalidEvent if ``value`` (``encoded`` is its JSON), a field's value or (with no
    ``path``) a whole payload, nests more than MAX_DEPTH deep below the field.

    Each level takes two bytes and opens one bracket, so short values and values with
    few brackets are let through on a byte count (the hot path); only the others are
    walked."""
    limit = MAX_DEPTH if path else MAX_DEPTH + 1  # a payload is one object more
    if len(encoded) <= 2 * limit or encoded.count(b"[") + encoded.count(b"{") <= limit:
        return
    if _depth(msgspec.to_builtins(value)) > limit:
        raise InvalidEvent(
            f"{type_}{'.' + path if path else ''}: nests more than {MAX_DEPTH} levels deep; "
            "flatten it, or store it elsewhere and record a reference"
        )


def _depth(value: Any) -> int:
    """How many lists and objects deep ``value`` nests (iteratively: it may be deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH + 1:  # deeper than that is enough to know
            stack.extend((child, level + 1) for child in children)
    return deepest


def check_plain(type_: str, payload: Payload, encoded: bytes) -> None:
    """InvalidEvent if a string of input (``encoded`` is its JSON), in any field at any
    depth, looks like a sealed token, if it nests too deeply, or if a value would not
    read back as given (``protect`` checks all three too, without the input's line)."""
    if MARKED in encoded:
        refuse_marked(type_, payload)
    check_depth(type_, encoded, payload)
    check_exact(type_, payload, encoded)


def stored_time(type_: str, occurred_at: object) -> datetime:
    """``occurred_at`` in UTC, as it is stored; InvalidEvent naming the field if it is not
    a timezone-aware datetime, or if it has no UTC equivalent a datetime can hold (year 1
    at +14:00 is still in year 0 in UTC; 9999-12-31 at -14:00, already in 10000)."""
    if not isinstance(occurred_at, datetime):
        raise InvalidEvent(
            f"{type_}.occurred_at: must be a timezone-aware datetime, got "
            f"{type(occurred_at).__name__}"
        )
    if occurred_at.utcoffset() is None:
        raise InvalidEvent(f"{type_}.occurred_at: must be timezone-aware")
    try:
        return occurred_at.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent(
            f"{type_}.occurred_at: {occurred_at.isoformat()} falls outside the years "
            "0001..9999 in UTC; give a time within them"
        ) from None


def check_size(type_: str, stored: bytes, limit: int) -> None:
    """InvalidEvent if ``stored``, a payload as it is stored (sealed, when encrypting:
    tokens are larger than what they hide), is over ``limit`` bytes. The one size check
    of the API and of ``ledger append``."""
    if len(stored) > limit:
        raise InvalidEvent(
            f"{type_}: payload is {len(stored):,} bytes as stored, over the limit of "
            f"{limit:,} (raise it with $LEDGER_MAX_EVENT_BYTES or "
            "connect(max_event_bytes=...), or store large content elsewhere and record a "
            "reference)"
        )


#: What msgspec raises for a value it cannot write as JSON: an object of no JSON type, a
#: lone surrogate, an integer of more digits than Python converts (4,300 by default).
UNENCODABLE = (TypeError, UnicodeEncodeError, ValueError)


def unencodable_path(value: Any, path: str) -> str:
    """The path of the (deepest) part of ``value`` that does not encode to JSON."""
    if isinstance(value, msgspec.Struct):
        children: Iterable[tuple[str, Any]] = (
            (f"{path}.{name}", getattr(value, name)) for name in value.__struct_fields__
        )
    elif isinstance(value, dict):
        children = ((f"{path}.{key}", child) for key, child in value.items())
    elif isinstance(value, list | tuple):
        children = ((f"{path}[{i}]", child) for i, child in enumerate(value))
    else:
        return path
    for where, child in children:
        try:
            _encode(child)
        except UNENCODABLE:
            return unencodable_path(child, where)
    return path  # a key of it, then


# -- exactly as written -------------------------------------------------------------------


def check_exact(type_: str, payload: Payload, encoded: bytes) -> None:
    """InvalidEvent, naming the field, if ``payload`` (``encoded`` is its JSON) would
    read back as something other than what was written.

    msgspec writes NaN and Infinity as ``null``, bytes as base64 text, a datetime, UUID
    or Decimal as a string, a set as a list, a dataclass as an object: all read back
    changed, with nothing to say so. What is stored is what the standard library's
    ``json`` writes with ``allow_nan=False`` (so tuples read back as lists and number
    keys as strings, as everyone expects of JSON); everything else is refused.

    The test is the reader's: decode ``encoded`` with the payload's Struct and compare
    (one pass in C, ~0.2-0.7 us an event, ~3 us a turn); only a difference is walked
    to find out why."""
    if CATALOG.decoders[type_](encoded) != payload:
        _refuse_inexact(payload, type_)


def check_exact_value(type_: str, path: str, value: Any, encoded: bytes) -> None:
    """``check_exact`` for one value of a payload, at ``path`` (``encoded`` is its
    JSON): for values sealed on their own, whose JSON the payload's hides."""
    if value.__class__ is not str and _decode(encoded) != value:
        _refuse_inexact(value, f"{type_}.{path}")


def _refuse_inexact(value: Any, path: str) -> None:
    where = _first_inexact(value, path)
    if where is not None:
        path, leaf = where
        raise InvalidEvent(f"{path}: {_why(leaf)}")


#: How to record what JSON cannot hold, by type name (the rest: as a dict or a list).
_CONVERT = {
    "bytes": "as text, e.g. base64",
    "bytearray": "as text, e.g. base64",
    "datetime": "as an ISO 8601 string",
    "date": "as an ISO 8601 string",
    "time": "as an ISO 8601 string",
    "timedelta": "as a number of seconds",
    "UUID": "as a string",
    "Decimal": "as a string or a number",
    "set": "as a list",
    "frozenset": "as a list",
}


def _why(leaf: Any) -> str:
    if isinstance(leaf, float):
        return (
            f"{leaf} is not a JSON number (it would read back as null); record null or a "
            "finite number"
        )
    kind = type(leaf).__name__
    how = _CONVERT.get(kind, "as a dict, a list or a string")
    return f"{kind} is not a JSON value (it would read back changed); record it {how}"


def _first_inexact(value: Any, path: str) -> tuple[str, Any] | None:
    """(path, the value) of the first part of ``value`` that the standard
    ``json`` module refuses (``allow_nan=False``), depth first; None if there is none."""
    if isinstance(value, msgspec.Struct):
        children: Iterable[tuple[str, Any]] = (
            (f"{path}.{name}", getattr(value, name)) for name in value.__struct_fields__
        )
    elif isinstance(value, dict):  # (keys msgspec takes, json takes: checked before)
        children = ((f"{path}.{key}", child) for key, child in value.items())
    elif isinstance(value, list | tuple):
        children = ((f"{path}[{i}]", child) for i, child in enumerate(value))
    else:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return path, value
        return None
    for where, child in children:
        found = _first_inexact(child, where)
        if found is not None:
            return found
    return None
