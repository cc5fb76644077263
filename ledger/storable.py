"""What input may be stored: every stored event must read back exactly as written.

Readers (``personal.reveal``) open every stored string that starts with ``MARKER`` as a
sealed token, at any depth of any field; msgspec's decoder and ``reveal`` recurse into
nested values. So an event is refused (``InvalidEvent``, naming the field) if a string
of it starts like a token, if it nests deeper than every reader can walk, or if a value
of it cannot be written as JSON at all. Checked on the encoded payload as it is sealed
or stored (``personal.protect_one``), and on JSONL input line by line (``check_plain``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from ledger.errors import InvalidEvent
from ledger.events import Payload

#: What every sealed token starts with, whatever its version (the NUL keeps it apart
#: from anything a person types); the format's version and the key id follow.
MARKER = "\x00ledger-sealed/"

_encode = msgspec.json.Encoder().encode

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
    depth, looks like a sealed token, or if it nests too deeply (``protect`` checks both
    too)."""
    if MARKED in encoded:
        refuse_marked(type_, payload)
    check_depth(type_, encoded, payload)


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
        except (TypeError, UnicodeEncodeError):
            return unencodable_path(child, where)
    return path  # a key of it, then
