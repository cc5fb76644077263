"""The event catalog (DESIGN.md "Events"): one msgspec Struct per payload type.

Each payload type has a wire name and a schema version. Stored payloads are JSON
bytes of the Struct; reading a payload written under an older schema runs it
through the registered upcasters (dict -> dict, one schema step at a time) before
it is converted to today's Struct, so events written today still read after a field
is added or renamed. Input is validated here, once, at the boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, NamedTuple

import msgspec

from ledger.errors import InvalidEvent
from ledger.records import ENDING_TYPES

JSON = Any


class Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every payload Struct; ``SCHEMA`` is the version written today."""

    SCHEMA: ClassVar[int] = 1


class RunStarted(Payload, frozen=True):
    agent: str | None = None
    model: str | None = None
    parent_run_id: str | None = None
    parent_version: int | None = None
    metadata: dict[str, JSON] | None = None


class MessageReceived(Payload, frozen=True):
    content: str
    role: Literal["user", "system"] = "user"
    attachments: list[JSON] | None = None


class ToolCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    id: str
    name: str
    arguments: JSON = None


class Usage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    reasoning_tokens: int | None = None


class ModelResponded(Payload, frozen=True):
    model: str | None = None
    content: str = ""
    tool_calls: list[ToolCall] = []
    usage: Usage | None = None
    latency_ms: float | None = None
    finish_reason: str | None = None
    request_id: str | None = None


class ToolCalled(Payload, frozen=True):
    call_id: str
    name: str
    input: JSON = None


class ToolReturned(Payload, frozen=True):
    call_id: str
    name: str
    output: JSON = None
    error: str | None = None
    duration_ms: float | None = None


class RetryAttempted(Payload, frozen=True):
    what: Literal["model", "tool"]
    attempt: int
    error: str | None = None
    delay_ms: float | None = None


class StepCompleted(Payload, frozen=True):
    step: str
    index: int


class MemoryWritten(Payload, frozen=True):
    namespace: str
    key: str
    value: JSON
    source_run: str | None = None


class MemoryForgotten(Payload, frozen=True):
    namespace: str
    key: str
    source_run: str | None = None


class RunCompleted(Payload, frozen=True):
    output: JSON = None


class RunFailed(Payload, frozen=True):
    error: str


class UserErased(Payload, frozen=True):
    """``ledger forget``: the user's keys were destroyed; their content is gone."""

    key_ids: list[str] = []
    reason: str | None = None


#: Write-time rules beyond the types: values no agent can have meant, which would make
#: the read models lie (a negative duration in "the slowest turn", tool calls that pair
#: with each other on an empty id). Checked by ``Catalog.validate`` (every append, API
#: and JSONL), not when reading, so a rule added later never stops a stored event from
#: being read. Each returns ``"field: why"`` for the first value it refuses.


def _blank(payload: Any, *fields: str) -> str | None:
    for field in fields:
        value = getattr(payload, field)
        if not value or value.isspace():
            return f"{field}: must not be empty"
    return None


def _negative(payload: Any, *fields: str) -> str | None:
    for field in fields:
        if (value := getattr(payload, field)) is not None and value < 0:
            return f"{field}: must not be negative (got {value!r})"
    return None


def _model_responded(p: ModelResponded) -> str | None:
    # The rules' common case (nothing wrong) is a few comparisons: every append passes here.
    if p.latency_ms is not None and p.latency_ms < 0:
        return _negative(p, "latency_ms")
    u = p.usage
    if u is not None and (
        u.input_tokens < 0
        or u.output_tokens < 0
        or (u.cache_read_input_tokens or 0) < 0
        or (u.reasoning_tokens or 0) < 0
    ):
        return f"usage.{_negative(u, *Usage.__struct_fields__)}"
    for n, call in enumerate(p.tool_calls):
        if not _named(call.id, call.name):
            return f"tool_calls[{n}].{_blank(call, 'id', 'name')}"
    return None


def _named(identifier: str, name: str) -> bool:
    """Both given, and not just whitespace (the fast test of the hot path)."""
    return bool(identifier and name) and not (identifier.isspace() or name.isspace())


def _tool_returned(p: ToolReturned) -> str | None:
    if _named(p.call_id, p.name) and (p.duration_ms is None or p.duration_ms >= 0):
        return None
    return _blank(p, "call_id", "name") or _negative(p, "duration_ms")


def _step_completed(p: StepCompleted) -> str | None:
    return _blank(p, "step") or _negative(p, "index")


def _tool_called(p: ToolCalled) -> str | None:
    return None if _named(p.call_id, p.name) else _blank(p, "call_id", "name")


def _retry_attempted(p: RetryAttempted) -> str | None:
    return _negative(p, "attempt", "delay_ms")


def _memory(p: MemoryWritten | MemoryForgotten) -> str | None:
    return _blank(p, "namespace", "key")


_RULES: dict[type[Payload], Callable[[Any], str | None]] = {
    ModelResponded: _model_responded,
    ToolCalled: _tool_called,
    ToolReturned: _tool_returned,
    RetryAttempted: _retry_attempted,
    StepCompleted: _step_completed,
    MemoryWritten: _memory,
    MemoryForgotten: _memory,
}


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class _Decoders(dict[str, Callable[[bytes], Any]]):
    """A catalog's decoders by name, each made when first asked for."""

    def __init__(self, catalog: Catalog) -> None:
        super().__init__()
        self._catalog = catalog

    def __missing__(self, name: str) -> Callable[[bytes], Any]:
        decode = msgspec.json.Decoder(self._catalog.payload_type(name)).decode
        self[name] = decode
        return decode


class Catalog:
    """Wire names -> payload Structs, with the upcasters between schema versions."""

    def __init__(self, types: Mapping[str, type[Payload]] | None = None) -> None:
        self._types: dict[str, type[Payload]] = dict(types or {})
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        #: Per name, the decoder of payloads written under today's schema (made on first
        #: use; a plain dict lookup after that, for the checks on every append).
        self.decoders = _Decoders(self)

    def register(self, name: str, payload_type: type[Payload]) -> None:
        """Add (or replace, for a new schema version) the Struct behind ``name``."""
        self._types[name] = payload_type
        self.decoders.pop(name, None)

    def upcaster(self, name: str, from_schema: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register ``fn`` turning a ``name`` payload of ``from_schema`` into +1."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(name, from_schema)] = fn
            return fn

        return decorate

    @property
    def names(self) -> tuple[str, ...]:
        """Every wire name in the catalog."""
        return tuple(self._types)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is a wire name of the catalog."""
        return name in self._types

    def payload_type(self, name: str) -> type[Payload]:
        """The Struct for ``name``; InvalidEvent naming the known types if there is none."""
        try:
            return self._types[name]
        except KeyError:
            known = ", ".join(sorted(self._types))
            raise InvalidEvent(f"unknown event type {name!r} (known: {known})") from None

    def validate(self, name: str, data: Mapping[str, Any]) -> Payload:
        """Check ``data`` against the Struct of ``name``: InvalidEvent names the bad field."""
        payload_type = self.payload_type(name)
        if not isinstance(data, Mapping):
            raise InvalidEvent(f"{name}: data must be a JSON object, got {type(data).__name__}")
        try:
            payload = msgspec.convert(data, payload_type, str_keys=True)
        except msgspec.ValidationError as exc:
            raise InvalidEvent(f"{name}: {exc}") from None
        rule = _RULES.get(payload_type)
        if rule is not None and (problem := rule(payload)) is not None:
            raise InvalidEvent(f"{name}.{problem}")
        return payload

    def decode_data(self, name: str, schema: int, payload: bytes) -> dict[str, Any]:
        """Stored ``payload`` bytes as ``Event.data`` (every field present, JSON-ready).

        Payloads of today's schema were validated against their Struct when written,
        so they are decoded straight to a dict (in C) and completed with the type's
        defaults; a payload that is not a JSON object still fails loudly. Older schemas
        go through the Struct and its upcasters."""
        payload_type = self.payload_type(name)
        if schema != payload_type.SCHEMA:
            return to_data(self.decode(name, schema, payload))
        return _completed(_decode_object(payload), payload_type)

    def decode(self, name: str, schema: int, payload: bytes) -> Payload:
        """Read stored ``payload`` bytes written under ``schema`` as today's Struct."""
        payload_type = self.payload_type(name)
        if schema == payload_type.SCHEMA:
            decoded: Payload = self.decoders[name](payload)
            return decoded
        data: dict[str, Any] = msgspec.json.decode(payload)
        for step in range(schema, payload_type.SCHEMA):
            try:
                data = self._upcasters[(name, step)](data)
            except KeyError:
                raise InvalidEvent(
                    f"{name}: no upcaster from schema {step} to {step + 1}"
                ) from None
        return msgspec.convert(data, payload_type, str_keys=True)


CATALOG = Catalog(
    {
        "run_started": RunStarted,
        "message_received": MessageReceived,
        "model_responded": ModelResponded,
        "tool_called": ToolCalled,
        "tool_returned": ToolReturned,
        "retry_attempted": RetryAttempted,
        "step_completed": StepCompleted,
        "memory_written": MemoryWritten,
        "memory_forgotten": MemoryForgotten,
        "run_completed": RunCompleted,
        "run_failed": RunFailed,
        "user_erased": UserErased,
    }
)

#: Types only the ledger records (``ledger forget``): agents and JSONL input may not, so
#: the audit trail's record of an erasure is never one an agent wrote.
RECORDED_BY_THE_LEDGER = frozenset({"user_erased"})

#: Types that end a run: once one is stored, the run takes no more events (``RunEnded``);
#: an agent that goes on starts a new run in the same session.
ENDS_A_RUN = ENDING_TYPES

_encoder = msgspec.json.Encoder()
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


def encode_payload(payload: Payload) -> bytes:
    """The exact bytes stored (and hashed) for ``payload``."""
    return _encoder.encode(payload)


_to_builtins = msgspec.to_builtins


class _Template(NamedTuple):
    """Every field of a payload type with its default as JSON-ready Python (None where
    the field is required: a payload always carries those), and the fields whose
    default is a list or dict (handed out as fresh copies)."""

    defaults: dict[str, Any]
    mutable: tuple[str, ...]


_templates: dict[type[Payload], _Template] = {}


def _template(payload_type: type[Payload]) -> _Template:
    template = _templates.get(payload_type)
    if template is None:
        defaults: dict[str, Any] = {}
        for field in msgspec.structs.fields(payload_type):
            if field.default is not msgspec.NODEFAULT:
                defaults[field.name] = _to_builtins(field.default)
            elif field.default_factory is not msgspec.NODEFAULT:
                defaults[field.name] = _to_builtins(field.default_factory())
            else:
                defaults[field.name] = None
        mutable = tuple(k for k, v in defaults.items() if isinstance(v, list | dict))
        template = _templates[payload_type] = _Template(defaults, mutable)
    return template


def to_data(payload: Payload) -> dict[str, Any]:
    """A payload as plain JSON-ready Python (what ``Event.data`` holds), every field present.

    This runs for every event a reader decodes, so it is one ``msgspec.to_builtins``
    (which leaves out fields at their defaults) completed from a per-type template of
    defaults, in field order; list and dict defaults are fresh copies."""
    return _completed(_to_builtins(payload), type(payload))


def _completed(data: dict[str, Any], payload_type: type[Payload]) -> dict[str, Any]:
    """``data`` with every field of ``payload_type`` present, in field order (defaults
    filled in; list and dict defaults as fresh copies)."""
    defaults, mutable = _template(payload_type)
    if len(data) == len(defaults):
        return data
    full = defaults.copy()
    full.update(data)
    for name in mutable:
        if name not in data:
            full[name] = full[name].copy()
    return full


class Event(msgspec.Struct, frozen=True):
    """One stored event as users see it: envelope plus decoded ``data``."""

    user_id: str
    session_id: str
    run_id: str
    version: int
    position: int
    type: str
    schema: int
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    hash: str
    prev_hash: str
