"""A projector: a named, versioned reducer whose states are stored as documents.

A stored event that cannot be folded does not stop the read side. The API validates
what it stores, but a login of the application role can INSERT any row for its own
tenant, and one such row would otherwise stall every projector, for every tenant, at
its position. Such an event (its payload does not decode, or the reducer raises on it)
is skipped, logged as an error naming the run and version, and counted as folded, in
the same way wherever read models are computed (live, rebuilds, read-your-writes), so
a read model still equals the fold of its log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast

import msgspec

from ledger.errors import InvalidEvent, ReadModelCorrupt
from ledger.events import CATALOG, ENDS_A_RUN, Event
from ledger.records import LogCursor, Record, RunHead
from ledger.tenant import to_event
from projections.reducers import Paged
from projections.storage.base import DocKey, projection_of

log = logging.getLogger(__name__)

S = TypeVar("S")
P = TypeVar("P")


class Reducer(Protocol[S]):
    """A pure fold of events into one state per key (see ``projections.reducers``)."""

    def key(self, event: Event) -> str | None:
        """The document an event belongs to, or None if this read model ignores it."""

    @property
    def key_field(self) -> str | None:
        """The ``Event`` attribute ``key`` always returns, if it is one (None otherwise):
        lets the runner group a batch by document without calling ``key`` per event."""

    def initial(self, event: Event) -> S:
        """The empty state of the document ``event`` opens."""

    def step(self, state: S, event: Event) -> None:
        """Fold ``event`` into ``state`` in place."""

    def encode(self, state: S) -> bytes:
        """The state as stored bytes."""

    def decode(self, data: bytes) -> S:
        """The state back from stored bytes."""

    # Paging (``projections.reducers.Paged``), for reducers with a ``paged_field``.
    @property
    def paged_field(self) -> str | None:
        """The state's list field whose oldest items are paged out (None: stored whole)."""

    def items(self, state: S) -> list[Any]:
        """The items ``state`` holds itself."""

    def with_items(self, state: S, items: list[Any], offset: int) -> S:
        """``state`` holding ``items`` from ``offset`` on, no pages handed back."""

    def touched(self, state: S, events: Iterable[Event]) -> set[int]:
        """Items before the offset that folding ``events`` would change."""

    def encode_page(self, items: list[Any]) -> bytes:
        """A page as stored bytes."""

    def decode_page(self, data: bytes) -> list[Any]:
        """A page back from stored bytes."""


#: Gives stored pages by number (those not stored are missing from what it returns).
FetchPages = Callable[[Sequence[int]], Mapping[int, bytes]]


class Dumped(NamedTuple):
    """A document encoded for storage: its head, and the pages (by number) to write."""

    head: bytes
    pages: dict[int, bytes]


class _Envelope(msgspec.Struct):
    """What a document holds: the state, per run the last version folded into it, and
    the place in the log it was folded up to.

    ``applied`` makes applying idempotent per run (an event at or below it is skipped)
    and lets readers fold the events a projector has not reached yet (read your writes).
    A run that ended leaves ``applied`` once its end is folded, so a session (or a
    user) of thousands of runs does not carry an entry for each: ``cursor``, the place
    in the log of the last event of its key folded into it, says what the document
    holds of the runs it no longer names (every event of its key up to there).
    Documents from before ``cursor`` existed have none, and name every run.
    """

    applied: dict[str, int]
    state: msgspec.Raw
    cursor: LogCursor | None = None


class _Written(msgspec.Struct):
    """An ``_Envelope`` as written (the same JSON): the cursor a plain pair, which a
    batch builds for every document it writes."""

    applied: dict[str, int]
    state: msgspec.Raw
    cursor: tuple[int, int]


class _Peeked(msgspec.Struct, Generic[P]):
    """An ``_Envelope`` whose state is decoded as ``P``: a Struct declaring a few of the
    state's fields (msgspec skips the others' bytes without building anything)."""

    applied: dict[str, int]
    state: P
    cursor: LogCursor | None = None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Envelope).decode


_peek_decoders: dict[type[Any], msgspec.json.Decoder[_Peeked[Any]]] = {}


def _peek_decoder(shape: type[Any]) -> msgspec.json.Decoder[_Peeked[Any]]:
    found = _peek_decoders.get(shape)
    if found is None:
        found = _peek_decoders[shape] = msgspec.json.Decoder(_Peeked[shape])  # type: ignore[valid-type]
    return found


@dataclass
class Document(Generic[S]):
    """A decoded document: its state, the per-run versions it includes (runs that ended
    are left out once folded), and the place in the log it was stored at (None: not
    stored, or stored before documents said)."""

    state: S
    applied: dict[str, int]
    cursor: LogCursor | None = None

    def folded(self, run: RunHead) -> int | None:
        """The version of ``run`` this document includes: None if it includes all of
        the run's events (its head is at or before the document's place in the log,
        and the run is not named: it ended and was folded), else the version after
        which its events are missing (0: all of them, or those after ``cursor``)."""
        seen = self.applied.get(run.run_id)
        if seen is not None:
            return seen if run.version > seen else None
        if self.cursor is not None and (run.cursor is None or run.cursor <= self.cursor):
            return None
        return 0


@dataclass(frozen=True)
class Projector(Generic[S]):
    """A read model: ``name`` in storage, ``version`` bumps force a rebuild.

    A document is stored as a head (the envelope below) and, for reducers whose states
    page items out (``projections.reducers.Paged``: a conversation's messages, a run's
    turns, a user's memory history), pages of ``page_items`` items each: page ``n``
    holds the items ``n * page_items`` up to the next page. Each dump moves the full
    pages of the oldest items but one page out of the head (so a head holds fewer than
    two pages of items), and those pages are not written again unless a later fold
    changes one of their items. A batch thus reads and writes what is new in it, not a
    long session's whole history. Readers get the
    head and every page in one snapshot and fold from the whole state (``load``).
    """

    name: str
    version: int
    reducer: Reducer[S]
    page_items: int = 64

    @property
    def paged(self) -> bool:
        """Whether this read model's documents keep their older items in pages."""
        return self.reducer.paged_field is not None

    def load(
        self,
        data: bytes,
        pages: Sequence[bytes] | None = None,
        first: int = 0,
        *,
        key: DocKey | None = None,
    ) -> Document[S]:
        """Decode a stored document: its head alone (how the projector folds onto it),
        or with ``pages``, its pages in order from page ``first`` on, joined to the head
        (readers; all of them from 0 give the whole state). ``ReadModelCorrupt``,
        naming ``key`` (the document's ``(user_id, key)``), if it does not decode."""
        try:
            envelope = _decode(data)
            state = self.reducer.decode(bytes(envelope.state))
            if pages is not None and self.paged:
                state = self._joined(state, pages, first)
        except Exception as exc:  # (a reducer's decode may raise anything on bad bytes)
            raise self.corrupt(key, exc) from exc
        return Document(state, envelope.applied, envelope.cursor)

    def peek(self, data: bytes, shape: type[P], *, key: DocKey | None = None) -> Document[P]:
        """Decode only ``shape``'s fields of a stored head's state (a Struct that declares
        a few of them, with defaults where the state has them), and what it includes:
        a fraction of ``load``'s cost, for reads that look at every document but use
        few. ``ReadModelCorrupt``, naming ``key``, if it does not decode."""
        try:
            peeked = _peek_decoder(shape).decode(data)
        except Exception as exc:
            raise self.corrupt(key, exc) from exc
        return Document(peeked.state, peeked.applied, peeked.cursor)

    def corrupt(self, key: DocKey | None, cause: Exception | str) -> ReadModelCorrupt:
        """The error for a stored document ``key`` of this read model that does not
        decode, or whose pages do not fit its head: ``cause`` says how."""
        name = projection_of(self.name)  # a build's documents are its model's
        which = "a stored document" if key is None else f"document {key[1]!r} of {key[0]!r}"
        why = " ".join(str(cause).split()) or type(cause).__name__  # one line
        return ReadModelCorrupt(
            f"read model {name!r}: {which} is corrupt ({why}); it is derived from the log, "
            f"so rebuild it: ledger projections rebuild {name}"
        )

    def _joined(self, state: S, pages: Sequence[bytes], first: int) -> S:
        reducer, offset = self.reducer, cast(Paged, state).offset
        if not pages:  # none stored, or none asked for: the head's own items
            return state
        items = [item for page in pages for item in reducer.decode_page(page)]
        start = first * self.page_items
        if start + len(items) != offset:
            raise ValueError(
                f"its pages from page {first} hold {len(items)} items, which do not end "
                f"where its head starts ({offset})"
            )
        items += reducer.items(state)
        return reducer.with_items(state, items, start)

    def hand_back(
        self,
        doc: Document[S],
        events: Sequence[Event],
        fetch: FetchPages,
        fetched: dict[int, bytes] | None = None,
        key: DocKey | None = None,
    ) -> None:
        """Give ``doc`` (a head) the pages of the items that folding ``events`` changes
        (``fetched``: pages fetched before, kept for the next call); ``ReadModelCorrupt``
        naming ``key`` if one is missing or does not decode."""
        touched = self.reducer.touched(doc.state, events)
        if not touched:
            return
        numbers = sorted({index // self.page_items for index in touched})
        found = {} if fetched is None else fetched
        if wanted := [n for n in numbers if n not in found]:
            found.update(fetch(wanted))
        earlier = cast(Paged, doc.state).earlier
        for number in numbers:
            if number not in found:
                raise self.corrupt(key, f"its page {number} is not stored")
            try:
                earlier[number * self.page_items] = self.reducer.decode_page(found[number])
            except Exception as exc:
                raise self.corrupt(key, f"its page {number}: {exc}") from exc

    def dump(self, doc: Document[S], cursor: tuple[int, int]) -> Dumped:
        """Encode a document for storage as folded up to ``cursor`` in the log (the
        place of the last event of its key folded into it): its head, and the pages to
        write with it (the pages handed back, and the full ones moved out of the head
        now)."""
        state, pages = doc.state, dict[int, bytes]()
        if self.paged:
            state, pages = self._page_out(state)
        raw = msgspec.Raw(self.reducer.encode(state))
        return Dumped(_encode(_Written(doc.applied, raw, cursor)), pages)

    def _page_out(self, state: S) -> tuple[S, dict[int, bytes]]:
        reducer, size, paged = self.reducer, self.page_items, cast(Paged, state)
        items = reducer.items(state)
        if len(items) < 2 * size and not paged.earlier:  # most documents: nothing to move
            return state, {}
        if paged.offset % size:
            raise ValueError(
                f"read model {self.name!r}: a head at item {paged.offset} is not on a page "
                f"of {size} items (page_items changed: bump the projector's version)"
            )
        pages = {start // size: reducer.encode_page(page) for start, page in paged.earlier.items()}
        moved = (len(items) // size - 1) * size if len(items) >= 2 * size else 0
        first = paged.offset // size
        for n in range(moved // size):
            pages[first + n] = reducer.encode_page(items[n * size : (n + 1) * size])
        return reducer.with_items(state, items[moved:], paged.offset + moved), pages

    def fold_stored(
        self,
        data: bytes | None,
        events: Sequence[Event],
        *,
        loaded: Document[S] | None = None,
        quiet: bool = False,
        pages: Sequence[bytes] | None = None,
        first: int = 0,
        fetch: FetchPages | None = None,
        key: DocKey | None = None,
    ) -> tuple[Document[S] | None, int]:
        """``fold`` of ``events`` onto the stored document ``data`` (None: none yet;
        ``loaded``: ``data`` already decoded, folded into), skipping each event the
        reducer raises on: the document is folded again from ``data`` without it (a
        reducer folds in place, so the failed attempt is thrown away), and the event
        counts as folded. Logged as an error (``quiet``: at debug, for reads, which fold
        what the projector reports). Returns the document and how many were skipped.

        ``data`` is a head: with its ``pages`` from page ``first`` on (readers; they
        must hold every item the fold changes), or ``fetch`` to get those of its pages
        the fold changes (the projector). ``key``, the document's ``(user_id, key)``,
        names it if its bytes do not decode (``ReadModelCorrupt``)."""
        skipped: dict[int, Event] = {}  # by id(): the very events given
        fetched: dict[int, bytes] = {}  # pages fetched, for a retry
        while True:
            doc: Document[S] | None = loaded
            if doc is None and data is not None:
                doc = self.load(data, pages, first, key=key)
            loaded = None
            todo = [e for e in events if id(e) not in skipped] if skipped else events
            if doc is not None and fetch is not None and self.paged:
                self.hand_back(doc, todo, fetch, fetched, key)
            try:
                folded = self.fold(doc, todo)
            except Unfoldable as exc:
                skipped[id(exc.event)] = exc.event
                report(exc.event, f"{self.name} raised {exc.cause!r}", quiet)
                continue
            if folded is not None:
                for event in skipped.values():
                    if folded.applied.get(event.run_id, 0) < event.version:
                        folded.applied[event.run_id] = event.version
            return folded, len(skipped)

    def fold(self, doc: Document[S] | None, events: Sequence[Event]) -> Document[S] | None:
        """Fold ``events`` (all of this document's key, in log order) into ``doc``, in
        place; ``Unfoldable``, naming the event, if the reducer raises on one. (A
        sequence, not any iterable: what raises while iterating must not be taken for
        the reducer raising on the event before it.)"""
        step = self.reducer.step
        pending = iter(events)
        event: Event | None = None
        try:
            if doc is None:
                event = next(pending, None)
                if event is None:
                    return None
                doc = Document(self.reducer.initial(event), {event.run_id: event.version})
                step(doc.state, event)
            state, applied = doc.state, doc.applied
            # The run's entry of ``applied`` is kept in locals while the run does not
            # change (a document's events come mostly in runs of one run_id): the same
            # check and the same final ``applied`` as looking it up, and setting it, for
            # every event.
            # kind: the type of the event at ``last`` when folded here ("" if not): a run
            # whose last event folded ends it leaves ``applied`` (see _Envelope).
            run_id, last, kind = "", 0, ""
            if event is not None:  # the document's first event, folded above
                run_id, last, kind = event.run_id, event.version, event.type
            for event in pending:
                if event.run_id != run_id:
                    if last:
                        _settle(applied, run_id, last, kind)
                    run_id, kind = event.run_id, ""
                    last = applied.get(run_id, 0)
                version = event.version
                if version <= last:
                    continue  # already in this document: never apply twice
                step(state, event)
                last, kind = version, event.type
        except Exception as exc:
            if event is None:  # not the reducer's
                raise
            raise Unfoldable(event, exc) from exc
        if last:
            _settle(applied, run_id, last, kind)
        return doc


def _settle(applied: dict[str, int], run_id: str, last: int, kind: str) -> None:
    """Record that ``run_id`` is folded up to ``last`` (of type ``kind``, "" if not
    known): a run whose end was the last event folded leaves ``applied``."""
    if kind in ENDS_A_RUN:
        applied.pop(run_id, None)
    else:
        applied[run_id] = last


class Unfoldable(Exception):
    """The reducer raised ``cause`` on ``event``."""

    def __init__(self, event: Event, cause: Exception) -> None:
        super().__init__(f"{event.type} at version {event.version} of run {event.run_id!r}")
        self.event = event
        self.cause = cause


def decode(records: Sequence[Record]) -> list[Event]:
    """The catalog events among ``records`` (rows of other writers are not projected),
    as readers of the log get them, hashes and all."""
    return [to_event(r) for r in records if r.type in CATALOG]


def decode_for_fold(records: Sequence[Record], *, quiet: bool = False) -> tuple[list[Event], int]:
    """The catalog events among ``records`` (rows of other writers are not projected),
    decoded for reducers: ``hash`` and ``prev_hash`` are left empty, as no reducer reads
    them (a sixth of decoding is their hex). A record that does not decode is skipped
    and reported (see the module docstring; ``quiet`` as for ``fold_stored``). Returns
    the events and how many records were skipped."""
    try:
        return [to_event(r, hashes=False) for r in records if r.type in CATALOG], 0
    except Exception:  # (an upcaster may raise anything, as a reducer may)
        pass  # the slow way, one by one, to skip exactly the records that do not decode
    events, skipped = [], 0
    for record in records:
        if record.type in CATALOG:
            try:
                events.append(to_event(record, hashes=False))
            except Exception as exc:
                skipped += 1
                report(record, str(exc) if isinstance(exc, InvalidEvent) else repr(exc), quiet)
    return events, skipped


def report(event: Event | Record, why: str, quiet: bool = False) -> None:
    """Log that ``event`` was skipped by the read side, and why."""
    log.log(
        logging.DEBUG if quiet else logging.ERROR,
        "skipped stored event %s of run %r (user %r, %s) in the read models: %s; the "
        "read models go on without it",
        event.version,
        event.run_id,
        event.user_id,
        event.type,
        why,
    )


def describe(projector: Projector[Any]) -> str:
    """``name@version`` for logs and status."""
    return f"{projector.name}@{projector.version}"
