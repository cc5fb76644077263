"""The JSONL append format of CONTRACT.md: validate every line, then write all or nothing.

Any language can produce it; one event a line::

    {"user_id": "usr_xyz", "session_id": "sess_abc123", "run_id": "run_1",
     "type": "message_received", "occurred_at": "2025-03-15T10:22:31Z",
     "data": {"role": "user", "content": "..."}}
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ledger.chain import GENESIS, seal
from ledger.errors import ConcurrencyError, InvalidEvent, NotFound, RunEnded
from ledger.events import (
    CATALOG,
    ENDS_A_RUN,
    RECORDED_BY_THE_LEDGER,
    RunStarted,
    encode_payload,
)
from ledger.forks import check_fork_point
from ledger.ids import check_id
from ledger.personal import Draft, Keyring, protect
from ledger.records import RunAppend
from ledger.settle import append_settled
from ledger.storable import check_plain, check_size, stored_time, unencodable_path
from ledger.store.base import EventStore


class JsonlEvent(BaseModel):
    """One input line, as the contract defines it."""

    model_config = ConfigDict(extra="forbid", strict=False)

    user_id: str
    session_id: str
    run_id: str
    type: str
    occurred_at: AwareDatetime
    data: dict[str, Any]
    expected_version: Annotated[int, Field(ge=0, strict=True)] | None = None


#: What a UTF-8 file may start with (editors on Windows write it); JSON ignores it.
_BOM = b"\xef\xbb\xbf"


def jsonl_lines(data: bytes) -> list[str]:
    """The lines of JSONL ``data``, numbered from 1 as they appear (blank ones too).

    Split at ``\\n`` only: a JSON string may hold U+2028, U+2029 or U+0085 unescaped
    (JavaScript's ``JSON.stringify`` writes them so), where ``str.splitlines`` would cut
    the line in two. A leading byte order mark is dropped; InvalidEvent names the line
    and column of bytes that are not UTF-8."""
    lines = []
    for number, raw in enumerate(data.removeprefix(_BOM).split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidEvent(
                f"line {number}: not valid UTF-8 (byte {raw[exc.start]:#04x} at column "
                f"{exc.start + 1}); write the input as UTF-8"
            ) from None
    return lines


class AppendSummary(msgspec.Struct):
    """What one ``append_jsonl`` stored."""

    events: int
    runs: dict[str, int]  # run_id -> version after the append


class _RunPlan:
    def __init__(self, line: int, event: JsonlEvent) -> None:
        self.line = line
        self.user_id = event.user_id
        self.session_id = event.session_id
        self.run_id = event.run_id
        self.expected_version = event.expected_version
        self.starts_run = event.type == "run_started"
        self.events: list[Draft] = []
        self.lines: list[int] = []  # the input line of each event
        self.ended_on: int | None = None  # the line of the event that ends the run


class _Ambiguous(ValueError):
    """What ``_parse_json`` refuses beyond malformed JSON."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Ambiguous(
                    f"key {name!r} appears twice in one object; parsers disagree on which "
                    "one counts, so give it once"
                )
            seen.add(name)
    return found


def _constant(name: str) -> Any:
    raise _Ambiguous(f"{name} is not JSON; write null or a string")


def _parse_json(number: int, text: str) -> Any:
    """``text`` as JSON, refusing what parsers disagree on: a key given twice in one
    object (first wins in some, last in others: a line naming two users must not be
    read as either) and the non-standard NaN and Infinity literals. (The standard
    library's parser, for its hook on each object's pairs; msgspec has none.)"""
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except _Ambiguous as exc:
        raise InvalidEvent(f"line {number}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent(
            f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})"
        ) from None
    except ValueError:  # (the only other) a number of more digits than Python converts
        raise InvalidEvent(
            f"line {number}: a number of more than {sys.get_int_max_str_digits():,} digits; "
            "write it as a string"
        ) from None
    except RecursionError:
        raise InvalidEvent(f"line {number}: nested too deeply to read as JSON") from None


def _parse_line(number: int, text: str) -> tuple[JsonlEvent, Draft]:
    raw = _parse_json(number, text)
    if not isinstance(raw, dict):
        raise InvalidEvent(f"line {number}: expected a JSON object, got {type(raw).__name__}")
    try:
        event = JsonlEvent.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        raise InvalidEvent(f"line {number}: {where}: {first['msg']}") from None
    if event.type in RECORDED_BY_THE_LEDGER:
        raise InvalidEvent(
            f"line {number}: type: {event.type} is recorded by the ledger itself (ledger "
            "forget), never appended"
        )
    try:
        for field in ("user_id", "session_id", "run_id"):
            check_id(field, getattr(event, field))
        payload = CATALOG.validate(event.type, event.data)
        try:
            encoded = encode_payload(payload)
        except UnicodeEncodeError:  # a lone surrogate escape, "\ud800"
            raise InvalidEvent(
                f"{unencodable_path(payload, event.type)}: not valid Unicode (a lone "
                "surrogate escape such as \\ud800); escape whole characters only"
            ) from None
        check_plain(event.type, payload, encoded)
        occurred = stored_time(event.type, event.occurred_at)
    except InvalidEvent as exc:
        raise InvalidEvent(f"line {number}: {exc}") from None
    return event, Draft(event.type, occurred, payload)


def plan_appends(
    store: EventStore,
    lines: Iterable[str],
    max_event_bytes: int,
    keyring: Keyring | None = None,
) -> list[RunAppend]:
    """Validate every line and turn the input into chained appends (nothing is written).

    With a ``keyring``, personal content is sealed with each user's key."""
    plans: dict[str, _RunPlan] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        event, draft = _parse_line(number, text)
        plan = plans.get(event.run_id)
        if plan is None:
            plan = plans[event.run_id] = _RunPlan(number, event)
        elif (event.user_id, event.session_id) != (plan.user_id, plan.session_id):
            raise InvalidEvent(
                f"line {number}: run {event.run_id!r} was given user_id {plan.user_id!r} and "
                f"session_id {plan.session_id!r} on line {plan.line}; a run cannot change them"
            )
        elif event.expected_version is not None:
            raise InvalidEvent(
                f"line {number}: expected_version is only allowed on the first line of a run"
            )
        elif event.type == "run_started":
            raise InvalidEvent(
                f"line {number}: run_started for run {event.run_id!r}, which line "
                f"{plan.line} began; a run starts once, with its first event"
            )
        elif plan.ended_on is not None:
            raise RunEnded(
                f"line {number}: run {event.run_id!r} ended on line {plan.ended_on} "
                f"({plan.events[-1].type}); a run records nothing after it ends, so give "
                "these events a new run_id"
            )
        plan.events.append(draft)
        plan.lines.append(number)
        if event.type in ENDS_A_RUN:
            plan.ended_on = number
    if not plans:
        raise InvalidEvent("no events in the input")
    return [_seal_plan(store, plan, keyring, max_event_bytes) for plan in plans.values()]


def _seal_plan(
    store: EventStore, plan: _RunPlan, keyring: Keyring | None, max_event_bytes: int
) -> RunAppend:
    head = store.run_head(plan.user_id, plan.run_id)
    where = f"line {plan.line}"
    if head is None:
        if store.run_head(None, plan.run_id) is not None:
            raise InvalidEvent(
                f"{where}: run_id {plan.run_id!r} is not available to user {plan.user_id!r}; "
                "run ids are unique across tenants, choose another"
            )
        if plan.expected_version not in (None, 0):
            raise NotFound(
                f"{where}: run {plan.run_id!r} not found "
                f"(expected_version {plan.expected_version} given)"
            )
        version, head_hash = 0, GENESIS
    else:
        if plan.session_id != head.session_id:
            raise InvalidEvent(
                f"{where}: run {plan.run_id!r} belongs to session "
                f"{head.session_id!r}, not {plan.session_id!r}"
            )
        if plan.starts_run:
            raise InvalidEvent(
                f"{where}: run_started for run {plan.run_id!r}, which already exists (at "
                f"version {head.version}); a run starts once: leave the line out to "
                "append to it, or give the new run an id of its own"
            )
        if plan.expected_version is not None and plan.expected_version != head.version:
            raise ConcurrencyError(
                f"{where}: run {plan.run_id!r} is at version "
                f"{head.version}, not expected_version {plan.expected_version}"
            )
        if head.type in ENDS_A_RUN:
            raise RunEnded(
                f"{where}: run {plan.run_id!r} has ended ({head.type} at version "
                f"{head.version}); a run records nothing after it ends, so give these "
                "events a new run_id"
            )
        version, head_hash = head.version, head.hash
    started = plan.events[0].payload
    if isinstance(started, RunStarted):  # naming a parent, it is a fork: of a stored run
        try:
            check_fork_point(store, plan.user_id, started.parent_run_id, started.parent_version)
        except (NotFound, InvalidEvent) as exc:
            raise type(exc)(f"{where}: {exc}") from None
    events = protect(plan.user_id, plan.events, keyring)
    for number, event in zip(plan.lines, events, strict=True):
        try:  # the size stored, as the API checks it (sealed tokens are larger)
            check_size(event.type, event.payload, max_event_bytes)
        except InvalidEvent as exc:
            raise InvalidEvent(f"line {number}: {exc}") from None
    sealed = seal(plan.user_id, plan.session_id, plan.run_id, version, head_hash, events)
    return RunAppend(
        user_id=plan.user_id,
        session_id=plan.session_id,
        run_id=plan.run_id,
        expected_version=version,
        expected_hash=head_hash,
        events=sealed,
    )


def append_jsonl(
    store: EventStore,
    lines: Iterable[str],
    max_event_bytes: int,
    keyring: Keyring | None = None,
) -> AppendSummary:
    """Validate all of ``lines``, then append them in one transaction (all or nothing;
    if the connection is lost on the way, settled from the chain: ``ledger.settle``)."""
    appends = plan_appends(store, lines, max_event_bytes, keyring)
    append_settled(store, appends)
    return AppendSummary(
        events=sum(len(a.events) for a in appends),
        runs={a.run_id: a.events[-1].version if a.events else a.expected_version for a in appends},
    )
