"""Personal content, encrypted with a key per user (DESIGN.md invariant 7).

What is personal: message content and attachments, the arguments of the tool calls a
model asks for, tool inputs and outputs, memory values, the values of a run's metadata,
its final output, and every error string (of a tool, a retry, a run: they echo what
they failed on, "no account for alice@example.com") -- ``PERSONAL`` below. Everything
else -- types, ids, models, token counts, latencies, costs, tool names, metadata keys,
whether there was an error -- stays in the clear, so accounting survives an erasure (a
sealed error still counts as one; its text reads as ``ERASED``).

Each personal value is replaced, inside the payload JSON, by a *sealed token*: a string
``MARKER + "v2/" + key_id + "/" + base64(nonce || AES-GCM ciphertext of the value's
JSON)``, bound to the user and key by the associated data. (Tokens written before
2026-11-25 are ``v1``, base64url without padding; both open.) The token is a JSON
string, so the payload still decodes with its catalog Struct, upcasters still see
every field, and the reducers fold tokens as opaque values: the projector runners
never hold a key and the read models hold only ciphertext. Readers ``reveal`` tokens
with the user's key on the way out; once the key is destroyed (``ledger forget``) they
read as ``ERASED``.

The hash chain covers the stored bytes (the tokens) and the key id, never plaintext,
so an erasure leaves every chain verifiable.
"""

from __future__ import annotations

import base64
import binascii
import copy
import operator
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgspec
import msgspec.inspect
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel

from ledger.chain import Unsealed
from ledger.errors import InvalidEvent
from ledger.events import CATALOG, Event, Payload, encode_payload
from ledger.forksafe import fresh_lock, shares_lock
from ledger.storable import (
    MARKED,
    MARKER,
    UNENCODABLE,
    check_depth,
    check_exact,
    check_exact_value,
    refuse_marked,
    unencodable_path,
)

if TYPE_CHECKING:
    from ledger.store.base import EventStore


#: The version tokens are written in: standard base64 with padding, which
#: ``binascii`` writes in one pass (base64url, ``v1``, took a second pass to translate,
#: a third of the cost of encoding a token).
_WRITTEN = "v2"

#: What a reader sees in place of content whose key was destroyed.
ERASED = "[erased]"

#: What a reader sees in place of a token that does not open with its user's key.
UNREADABLE = "[unreadable]"

#: Personal fields per event type: ``field``, ``field[]`` (each element of a list),
#: ``field[].sub`` (``sub`` of each element) or ``field{}`` (each value of an object; its
#: keys stay in the clear).
PERSONAL: Mapping[str, tuple[str, ...]] = {
    "run_started": ("metadata{}",),
    "message_received": ("content", "attachments[]"),
    "model_responded": ("content", "tool_calls[].arguments"),
    "tool_called": ("input",),
    "tool_returned": ("output", "error"),
    "retry_attempted": ("error",),
    "memory_written": ("value",),
    "run_completed": ("output",),
    "run_failed": ("error",),
}

_NONCE = 12
_encode = msgspec.json.Encoder().encode


def _aad(user_id: str, key_id: str) -> bytes:
    return f"ledger/v1\x00{user_id}\x00{key_id}".encode()


class _Nonces:
    """Random 96-bit AES-GCM nonces, drawn from the OS a block at a time.

    ``os.urandom`` per nonce is a system call per sealed value (~0.5 us, a fifth of
    sealing one). Here a block of 256 is drawn at once and handed out one by one: the
    same randomness, never a nonce twice. ``deque.popleft`` is atomic, so threads never
    share one; a forked child drops what it inherited (its parent hands those out).
    """

    _BLOCK = 256

    def __init__(self) -> None:
        self._ready: deque[bytes] = deque()
        if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork either
            os.register_at_fork(after_in_child=self._ready.clear)

    def take(self) -> bytes:
        """A fresh nonce."""
        try:
            return self._ready.popleft()
        except IndexError:
            block = os.urandom(_NONCE * self._BLOCK)
            self._ready.extend([block[i : i + _NONCE] for i in range(_NONCE, len(block), _NONCE)])
            return block[:_NONCE]


_nonces = _Nonces()


class WritingKey(NamedTuple):
    """A user's live key with what sealing under it needs, worked out once per key."""

    key_id: str
    cipher: AESGCM
    aad: bytes  # binds each token to its user and key
    prefix: str  # MARKER + version + "/" + key_id + "/": how each token starts


def new_key_id() -> str:
    """A fresh key id (random; it names a key, never a person)."""
    return "k_" + os.urandom(12).hex()


class _Opened:
    """The plaintext JSON of tokens opened lately, by ``(user_id, token)``, least
    recently used first out, bounded in bytes (tokens and plaintexts counted).

    An agent reads the same conversation on every call, and opening a token (base64,
    AES-GCM) is ~2.5 us of the ~4 us a token costs a read. Entries are served only
    after the token's key was found live by the same read (``Keyring.reading_key``):
    so an erasure shows exactly as soon as it does without the cache. The user is part
    of the key (a token copied into another user's data must never open from here),
    and ``Keyring.forget`` drops the user's entries.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = fresh_lock(self)
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0

    def get(self, user_id: str, token: str) -> bytes | None:
        with self._lock:
            plain = self._entries.get((user_id, token))
            if plain is not None:
                self._entries.move_to_end((user_id, token))
            return plain

    def put(self, user_id: str, token: str, plain: bytes) -> None:
        size = len(token) + len(plain)
        if size > self._limit // 16:  # one big value must not wipe the rest
            return
        with self._lock:
            if (user_id, token) in self._entries:
                return
            self._entries[(user_id, token)] = plain
            self._size += size
            while self._size > self._limit:
                (_, old_token), old_plain = self._entries.popitem(last=False)
                self._size -= len(old_token) + len(old_plain)

    def drop(self, user_id: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == user_id]:
                self._size -= len(key[1]) + len(self._entries.pop(key))


class Keyring:
    """The keys of every user, fetched from the store and cached in this process.

    A live key is cached for writing for ``ttl`` seconds: an append made with a key
    another process destroyed meanwhile is refused by the store (``KeyErased``) and
    retried by the run with a fresh key, so a stale cache never writes content nobody
    can read. Reading never trusts a cache for a key being live: each read (``for_read``)
    asks the store once per key it opens with, so an erasure made by any process shows
    at the next read started after it. A destroyed key is remembered for good.
    """

    def __init__(
        self, store: EventStore, *, ttl: float = 30.0, opened_bytes: int = 16 << 20
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._lock = fresh_lock(self)
        self._writing: dict[str, tuple[WritingKey, float]] = {}
        self._destroyed: set[tuple[str, str]] = set()
        #: In a view made by ``for_read``: the keys this read found, by (user, key id).
        self._checked: dict[tuple[str, str], AESGCM | None] | None = None
        #: Plaintexts of tokens opened lately (``opened_bytes``; 0: none kept).
        self.opened = _Opened(opened_bytes)

    def _view(
        self, store: EventStore, checked: dict[tuple[str, str], AESGCM | None] | None
    ) -> Keyring:
        view = copy.copy(self)
        view._store, view._checked = store, checked
        shares_lock(view)
        return view

    def through(self, store: EventStore) -> Keyring:
        """This keyring fetching keys through ``store`` (e.g. the auditor's view),
        sharing one cache, so an erasure forgotten here is forgotten there too."""
        return self._view(store, self._checked)

    def for_read(self) -> Keyring:
        """This keyring for one read (itself if it already is one): each key the read
        opens with is looked up in the store once, on first use, never in an older
        read's cache, so a key destroyed elsewhere reads as destroyed."""
        return self if self._checked is not None else self._view(self._store, {})

    def writing_key(self, user_id: str) -> WritingKey:
        """The user's live key (created on first use) and its id."""
        now = time.monotonic()
        with self._lock:
            cached = self._writing.get(user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = self._store.live_key(user_id)
        if found is None:
            found = self._store.add_key(user_id, new_key_id(), AESGCM.generate_key(256))
        key_id, key = found
        cipher = AESGCM(key)
        writing = WritingKey(key_id, cipher, _aad(user_id, key_id), f"{MARKER}{_WRITTEN}/{key_id}/")
        with self._lock:
            self._writing = {u: w for u, w in self._writing.items() if w[1] > now}  # expired out
            self._writing[user_id] = (writing, now + self._ttl)
        return writing

    def reading_key(self, user_id: str, key_id: str) -> AESGCM | None:
        """The key ``key_id`` of ``user_id``, or None once it is destroyed (or unknown):
        looked up in the store once per read (``for_read``; outside one, every call)."""
        found = (user_id, key_id)
        with self._lock:
            if found in self._destroyed:
                return None
        checked = self._checked
        if checked is not None and found in checked:
            return checked[found]
        key = self._store.read_key(user_id, key_id)
        cipher = None if key is None else AESGCM(key)
        if cipher is None:  # a key never comes back (and an unknown id never appears)
            with self._lock:
                self._destroyed.add(found)
        if checked is not None:
            checked[found] = cipher
        return cipher

    def forget(self, user_id: str) -> None:
        """Drop what this process caches of ``user_id``'s keys and plaintexts (after an
        erasure, or once an append found its cached key destroyed)."""
        with self._lock:
            entry = self._writing.pop(user_id, None)
            if entry is not None:
                self._destroyed.add((user_id, entry[0].key_id))
        self.opened.drop(user_id)


# -- sealing -----------------------------------------------------------------------------


class Draft(NamedTuple):
    """An event validated against the catalog but not yet encoded or chained: the plain
    payload Struct is kept so the event can be sealed again under a fresh key."""

    type: str
    occurred_at: datetime
    payload: Payload


class _Path(NamedTuple):
    """One path of ``PERSONAL``, compiled."""

    path: str  # as written in ``PERSONAL`` (named in errors)
    field: str  # the payload field
    each: str  # "": the field's value; "[]": each element; "{}": each value of an object
    attr: str  # with "[]": the attribute of each element sealed ("": the element)


def _compiled(path: str) -> _Path:
    for each in ("[]", "{}"):
        field, found, attr = path.partition(each)
        if found:
            return _Path(path, field, each, attr.lstrip("."))
    return _Path(path, path, "", "")


_PATHS: Mapping[str, tuple[_Path, ...]] = {
    type_: tuple(_compiled(path) for path in paths) for type_, paths in PERSONAL.items()
}

#: What is applied to each personal value: ``fn(type, path, value) -> value``.
ValueFn = Callable[[str, str, Any], Any]


def _each_personal(type_: str, payload: Payload, fn: ValueFn) -> Payload:
    """``payload`` with ``fn`` applied to each of its personal values (``PERSONAL``); the
    very same object when ``fn`` changed nothing. Works on the validated Struct: no
    decoding, no copying of what is not personal."""
    changes: dict[str, Any] | None = None
    for path, field, each, attr in _PATHS.get(type_, ()):
        value = getattr(payload, field)
        if not each:
            if value is None or value == "":  # absent or empty: nothing to seal or check
                continue
            new = fn(type_, path, value)
        elif not value:
            continue
        elif each == "{}":
            values = {key: fn(type_, path, item) for key, item in value.items()}
            new = value if all(map(operator.is_, values.values(), value.values())) else values
        else:
            if attr:
                items = [_each_attr(item, attr, type_, path, fn) for item in value]
            else:
                items = [fn(type_, path, item) for item in value]
            new = value if all(map(operator.is_, items, value)) else items
        if new is not value:
            if changes is None:
                changes = {}
            changes[field] = new
    return payload if changes is None else msgspec.structs.replace(payload, **changes)


def _each_attr(item: Any, name: str, type_: str, path: str, fn: ValueFn) -> Any:
    old = getattr(item, name)
    new = fn(type_, path, old)
    return item if new is old else msgspec.structs.replace(item, **{name: new})


def _open_paths(kind: Any, path: str) -> Iterator[str]:
    """Where a value of the msgspec type ``kind`` may hold any JSON (so nest at will),
    in ``PERSONAL``'s notation."""
    if isinstance(kind, msgspec.inspect.AnyType):
        yield path
    elif isinstance(kind, msgspec.inspect.UnionType):
        for member in kind.types:
            yield from _open_paths(member, path)
    elif isinstance(kind, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        yield from _open_paths(kind.item_type, f"{path}[]")
    elif isinstance(kind, msgspec.inspect.DictType):
        yield from _open_paths(kind.value_type, f"{path}{{}}")
    elif isinstance(kind, msgspec.inspect.StructType):
        for field in kind.fields:
            yield from _open_paths(field.type, f"{path}.{field.name}" if path else field.name)


#: Event types whose every open field is personal: sealed, their payload has no depth to
#: check beyond what ``Sealer`` checked as it sealed each value.
_ALL_OPEN_SEALED = frozenset(
    name
    for name in CATALOG.names
    if set(_open_paths(msgspec.inspect.type_info(CATALOG.payload_type(name)), ""))
    <= set(PERSONAL.get(name, ()))
)


class Sealer:
    """Seals values under ``user_id``'s live key, fetched only once there is content (and
    then kept: one sealer per append, so one key); refuses values that already look
    like tokens."""

    def __init__(self, user_id: str, keyring: Keyring) -> None:
        self._user_id = user_id
        self._keyring = keyring
        self._key: WritingKey | None = None
        self.sealed = 0  # tokens made so far

    @property
    def key_id(self) -> str | None:
        """The id of the key sealed under (None until something was sealed)."""
        return None if self._key is None else self._key.key_id

    def __call__(self, type_: str, path: str, value: Any) -> Any:
        # On every append of every personal field: kept to the few calls it needs.
        if value is None or value == "":
            return value
        # A value is sealed whole: strings inside it are never opened on their own (a
        # reader decodes what it opened, it does not walk it), so only the value itself
        # must not look like a token.
        if isinstance(value, str) and value.startswith(MARKER):
            refuse_marked(type_, value, path)
        plain = _encode(value)
        if not isinstance(value, str):  # (a string is no depth at all, and exact)
            check_depth(type_, plain, value, path)
            check_exact_value(type_, path, value, plain)
        key = self._key
        if key is None:
            key = self._key = self._keyring.writing_key(self._user_id)
        nonce = _nonces.take()
        sealed = nonce + key.cipher.encrypt(nonce, plain, key.aad)
        self.sealed += 1
        return key.prefix + binascii.b2a_base64(sealed, newline=False).decode()


def protect(user_id: str, drafts: Sequence[Draft], keyring: Keyring | None) -> list[Unsealed]:
    """``drafts`` encoded for the store, their personal fields sealed under ``user_id``'s
    live key when a ``keyring`` is given; InvalidEvent if one already looks like a token.

    Events with no personal content (none of its fields, or all empty) carry no key id:
    a user gets a key only once there is something to protect."""
    sealer = None if keyring is None else Sealer(user_id, keyring)
    return [protect_one(draft, sealer) for draft in drafts]


def protect_one(draft: Draft, sealer: Sealer | None) -> Unsealed:
    """One draft encoded for the store, sealed by ``sealer`` (None: stored plain).
    InvalidEvent if a string of it, anywhere, looks like a token, or if a value cannot
    be stored as JSON. A run seals a turn's events one by one, as they are recorded,
    with one sealer."""
    try:
        return _protect_one(draft, sealer)
    except RecursionError:
        raise InvalidEvent(
            f"{draft.type}: nested too deeply to store as JSON; flatten it, or store it "
            "elsewhere and record a reference"
        ) from None
    except UNENCODABLE as exc:
        where = unencodable_path(draft.payload, draft.type)
        raise InvalidEvent(
            f"{where}: cannot be stored as JSON ({exc}); pass JSON values only (str, int, "
            "float, bool, None, lists, dicts), with strings of valid Unicode (no lone "
            "surrogates)"
        ) from None


def _protect_one(draft: Draft, sealer: Sealer | None) -> Unsealed:
    payload, key_id, tokens = draft.payload, None, 0
    if sealer is not None and draft.type in _PATHS:
        before = sealer.sealed
        sealed = _each_personal(draft.type, payload, sealer)
        if sealed is not payload:
            payload, key_id, tokens = sealed, sealer.key_id, sealer.sealed - before
    encoded = encode_payload(payload)
    check_exact(draft.type, payload, encoded)
    # Each token made here is one such string; anything more came from the input (its
    # stored fields: what was sealed is hidden, and was checked as it was sealed).
    if encoded.count(MARKED) > tokens:
        refuse_marked(draft.type, draft.payload)
    if sealer is None or draft.type not in _ALL_OPEN_SEALED:  # else: checked as sealed
        check_depth(draft.type, encoded, payload)
    return Unsealed(draft.type, payload.SCHEMA, draft.occurred_at, encoded, key_id)


def holds_plain_content(type_: str, payload: bytes, key_id: str | None = None) -> bool:
    """True if the stored ``payload`` of a ``type_`` event has a personal value that is
    not a sealed token: written with encryption off (or, for errors and metadata
    values, before they were sealed), so destroying a key cannot erase it.

    A type outside the catalog is an eventsourcing aggregate's (``ledger.recorder``):
    its state is stored byte for byte as the application gave it, nothing of it sealed
    (``key_id`` None), and what it holds is the application's to know: it counts
    unless it is empty."""
    if type_ not in CATALOG:
        return key_id is None and bool(payload)
    paths = _PATHS.get(type_)
    if not paths:
        return False
    data = msgspec.json.decode(payload)
    for _, field, each, attr in paths:
        value = data.get(field) if isinstance(data, dict) else None
        if not value:
            continue
        if each == "{}":
            values = list(value.values()) if isinstance(value, dict) else []
        elif each == "[]":
            items = value if isinstance(value, list) else []
            values = (
                [i.get(attr) if isinstance(i, dict) else None for i in items] if attr else items
            )
        else:
            values = [value]
        if any(_plain(v) for v in values):
            return True
    return False


def _plain(value: Any) -> bool:
    if value is None or value == "":
        return False
    return not (isinstance(value, str) and value.startswith(MARKER))


# -- revealing ---------------------------------------------------------------------------

T = TypeVar("T")


def _token_bytes(version: str, blob: str) -> bytes:
    """The nonce and ciphertext a token's text carries; ValueError if it is not one."""
    if version == "v2":
        return binascii.a2b_base64(blob, strict_mode=True)
    if version == "v1":
        return base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
    raise ValueError(f"unknown token version {version!r}")


#: Leaves that never hold a token: ``reveal`` passes them without a call.
_PLAIN_LEAVES = frozenset({int, float, bool, type(None), datetime})


class _Opener:
    """One ``reveal`` call: opens the tokens of one user, each key fetched once."""

    __slots__ = ("_ciphers", "_keyring", "_user_id")

    def __init__(self, user_id: str, keyring: Keyring) -> None:
        self._user_id = user_id
        self._keyring = keyring.for_read()
        #: key id -> (its cipher, or None once destroyed; the associated data)
        self._ciphers: dict[str, tuple[AESGCM | None, bytes]] = {}

    def open(self, token: str) -> Any:
        """The value ``token`` seals, ``ERASED`` or ``UNREADABLE``."""
        version, _, rest = token[len(MARKER) :].partition("/")
        key_id, _, blob = rest.partition("/")
        try:
            cipher, aad = self._ciphers[key_id]
        except KeyError:
            cipher = self._keyring.reading_key(self._user_id, key_id)
            aad = _aad(self._user_id, key_id)
            self._ciphers[key_id] = (cipher, aad)
        if cipher is None:
            return ERASED
        opened = self._keyring.opened
        plain = opened.get(self._user_id, token)
        if plain is None:
            try:
                raw = _token_bytes(version, blob)
                plain = cipher.decrypt(raw[:_NONCE], raw[_NONCE:], aad)
            except (ValueError, InvalidTag):
                # Not a token this user's key sealed (altered, or moved from another
                # user's data): never open it, never crash a reader on it. `ledger
                # verify` locates it.
                return UNREADABLE
            opened.put(self._user_id, token, plain)
        return msgspec.json.decode(plain)

    def walk(self, value: Any) -> Any:
        """``value`` with its tokens opened; the very same object if it holds none.

        Called for every value of every read (a 400-message conversation has ~3,000):
        the type of each child is looked at in ``_opened``, and only containers and
        tokens cost a call."""
        kind = type(value)
        if kind is str:
            return self.open(value) if value.startswith(MARKER) else value
        if kind in _PLAIN_LEAVES:
            return value
        if kind is dict or (kind is not list and isinstance(value, dict)):
            changes = self._opened(value.items())
            return value if changes is None else {**value, **changes}
        if isinstance(value, list):
            changes = self._opened(enumerate(value))
            if changes is None:
                return value
            items = list(value)
            for i, new in changes.items():
                items[i] = new
            return items
        if isinstance(value, BaseModel):  # its fields, as stored
            changes = self._opened(value.__dict__.items())
            return value if changes is None else value.model_copy(update=changes)
        if isinstance(value, str):  # a str subclass (an enum's value, say)
            return self.open(value) if value.startswith(MARKER) else value
        return value

    def _opened(self, children: Iterable[tuple[Any, Any]]) -> dict[Any, Any] | None:
        """Of ``(key, value)`` children, the new value of each that held a token (None:
        none did). Strings and plain leaves are looked at here, without a call."""
        changes: dict[Any, Any] | None = None
        plain = _PLAIN_LEAVES
        for key, old in children:
            kind = type(old)
            if kind is str:
                if not old.startswith(MARKER):
                    continue
                new = self.open(old)
            elif kind in plain:
                continue
            else:
                new = self.walk(old)
                if new is old:
                    continue
            if changes is None:
                changes = {}
            changes[key] = new
        return changes


def reveal(value: T, user_id: str, keyring: Keyring) -> T:
    """``value`` with every sealed token of ``user_id`` opened, or replaced by ``ERASED``
    where the key is gone. Works on JSON-shaped data and pydantic models, copy on write:
    what holds no token comes back as the very same object (nothing is copied)."""
    opened: T = _Opener(user_id, keyring).walk(value)
    return opened


def reveal_event(event: Event, keyring: Keyring) -> Event:
    """``event`` with its personal data opened (or marked erased)."""
    data = reveal(event.data, event.user_id, keyring)
    return event if data is event.data else msgspec.structs.replace(event, data=data)
