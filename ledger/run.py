"""The run handle: the agent's side of one run, one atomic append per turn."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ledger.chain import Unsealed, seal
from ledger.errors import ConcurrencyError, KeyErased, LedgerError, RunEnded
from ledger.events import CATALOG, ENDS_A_RUN
from ledger.personal import Draft, Sealer, protect, protect_one
from ledger.records import NewEvent, RunAppend, RunHead
from ledger.settle import append_settled
from ledger.storable import check_size, stored_time

if TYPE_CHECKING:
    from ledger.tenant import Tenant


class Run:
    """A handle on one run at a known head (version and hash).

    Event methods called inside ``with run.turn():`` are buffered and committed
    together when the block exits (nothing is written if it raises); called outside
    a turn, each commits on its own. Appends state the head this handle saw, so a
    stale handle gets ``ConcurrencyError`` and writes nothing: call ``refresh()`` to
    move it to the current head. A handle is not meant to be shared between threads.

    ``complete()`` or ``fail()`` ends the run: any event after it is ``RunEnded`` and
    nothing is written (an agent that goes on starts a new run in the session). The
    check is the handle's, against the head it states; the store's head check makes
    it hold across handles and processes (a handle that did not see the end gets
    ``ConcurrencyError``, and after ``refresh()`` knows the run has ended).
    """

    def __init__(
        self,
        tenant: Tenant,
        run_id: str,
        session_id: str,
        version: int,
        head_hash: bytes,
        head_type: str | None = None,
    ) -> None:
        self._tenant = tenant
        self.run_id = run_id
        self.session_id = session_id
        self.version = version
        self._head_hash = head_hash
        self._turn: list[tuple[Draft, Unsealed]] | None = None
        self._sealer: Sealer | None = None  # the open turn's (one key a turn)
        #: How the run ended ("run_completed at version 7"), None while it is open.
        self._ended = _ending(head_type, version)

    @classmethod
    def at_head(cls, tenant: Tenant, head: RunHead) -> Run:
        """A handle on the run ``head`` describes, at that head."""
        return cls(tenant, head.run_id, head.session_id, head.version, head.hash, head.type)

    def __repr__(self) -> str:
        return (
            f"Run(run_id={self.run_id!r}, session_id={self.session_id!r}, version={self.version})"
        )

    @property
    def user_id(self) -> str:
        """The tenant this run belongs to."""
        return self._tenant.user_id

    @property
    def ended(self) -> bool:
        """True once the run has ended (``complete()`` or ``fail()`` stored), as of the
        head this handle last saw."""
        return self._ended is not None

    # -- turns -------------------------------------------------------------------
    @contextmanager
    def turn(self) -> Iterator[Run]:
        """Buffer the events of one turn and commit them together, or not at all."""
        if self._turn is not None:
            raise LedgerError("turns do not nest: this run already has an open turn")
        self._turn = []
        try:
            yield self
        except BaseException:
            self._turn = self._sealer = None
            raise
        events, self._turn, self._sealer = self._turn, None, None
        if events:
            self._commit(events)

    def state(self) -> Any:
        """RunState at this run's head: completed steps and pending tool calls tell an
        interrupted agent where to resume."""
        return self._tenant.replay(self.run_id)

    def refresh(self) -> Run:
        """Move this handle to the run's current head (after a ConcurrencyError)."""
        head = self._tenant._head(self.run_id)
        self.version, self._head_hash = head.version, head.hash
        self._ended = _ending(head.type, head.version)
        return self

    def _ended_error(self, type_: str, ended: str) -> RunEnded:
        """What refuses ``type_`` on a run that ended as ``ended`` says."""
        return RunEnded(
            f"run {self.run_id!r} has ended ({ended}), so it takes no {type_}; nothing "
            "was written: a run records nothing after complete() or fail(), start a "
            f"new run in session {self.session_id!r} to go on"
        )

    def _emit(self, type_: str, fields: Mapping[str, Any], occurred_at: datetime | None) -> None:
        if self._ended is not None:
            raise self._ended_error(type_, self._ended)
        turn = self._turn
        # Nothing is buffered after an ending event, so only a turn's last can be one.
        if turn and turn[-1][0].type in ENDS_A_RUN:
            raise self._ended_error(type_, f"{turn[-1][0].type} earlier in this turn")
        payload = CATALOG.validate(type_, fields)
        when = datetime.now(UTC) if occurred_at is None else stored_time(type_, occurred_at)
        draft = Draft(type_, when, payload)
        ledger = self._tenant._ledger
        sealer = None
        if ledger.encrypting:
            sealer = self._sealer or Sealer(self.user_id, ledger.keyring)
            if self._turn is not None:
                self._sealer = sealer
        # Sealed now, so the size checked is the size stored (tokens are larger).
        event = protect_one(draft, sealer)
        check_size(type_, event.payload, ledger.settings.max_event_bytes)
        if self._turn is not None:
            self._turn.append((draft, event))
        else:
            self._commit([(draft, event)])

    def _commit(self, events: Sequence[tuple[Draft, Unsealed]]) -> None:
        keyring = self._tenant._ledger.keyring
        drafts = [draft for draft, _ in events]
        ready = [event for _, event in events]
        if len({e.key_id for e in ready if e.key_id is not None}) > 1:
            # The key changed during the turn (cache expiry after an erasure): one
            # append, one key, the current one.
            ready = protect(self.user_id, drafts, keyring)
        try:
            sealed = self._append(ready)
        except KeyErased:
            # The user was forgotten since this process cached their key: what comes
            # next belongs to a fresh key (never to one nobody can read any more).
            keyring.forget(self.user_id)
            sealed = self._append(protect(self.user_id, drafts, keyring))
        head = sealed[-1]
        self.version, self._head_hash = head.version, head.hash
        if head.type in ENDS_A_RUN:
            self._ended = _ending(head.type, head.version)

    def _append(self, events: Sequence[Unsealed]) -> tuple[NewEvent, ...]:
        sealed = seal(
            self.user_id, self.session_id, self.run_id, self.version, self._head_hash, events
        )
        append = RunAppend(
            user_id=self.user_id,
            session_id=self.session_id,
            run_id=self.run_id,
            expected_version=self.version,
            expected_hash=self._head_hash,
            events=sealed,
        )
        try:
            append_settled(self._tenant._ledger.store, [append])
        except ConcurrencyError as exc:
            if not self.version:  # starting a run whose id is taken: said as it is
                raise
            raise ConcurrencyError(
                f"{exc}: another writer appended to it since this handle last did; nothing "
                "of this call was written (run.refresh() moves the handle to the head)"
            ) from None
        return sealed

    # -- the event catalog -----------------------------------------------------------
    def message_received(
        self,
        content: str,
        role: str = "user",
        attachments: list[Any] | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> None:
        """A user or system message reached the agent."""
        self._emit(
            "message_received",
            {"content": content, "role": role, "attachments": attachments},
            occurred_at,
        )

    def model_responded(
        self,
        model: str | None = None,
        content: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        usage: dict[str, Any] | None = None,
        latency_ms: float | None = None,
        finish_reason: str | None = None,
        request_id: str | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> None:
        """The model answered (content and/or tool calls, usage, latency)."""
        self._emit(
            "model_responded",
            {
                "model": model,
                "content": content,
                "tool_calls": tool_calls or [],
                "usage": usage,
                "latency_ms": latency_ms,
                "finish_reason": finish_reason,
                "request_id": request_id,
            },
            occurred_at,
        )

    def tool_called(
        self, call_id: str, name: str, input: Any = None, *, occurred_at: datetime | None = None
    ) -> None:
        """The agent invoked a tool."""
        self._emit("tool_called", {"call_id": call_id, "name": name, "input": input}, occurred_at)

    def tool_returned(
        self,
        call_id: str,
        name: str,
        output: Any = None,
        error: str | None = None,
        duration_ms: float | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> None:
        """A tool call finished with ``output`` or ``error``."""
        self._emit(
            "tool_returned",
            {
                "call_id": call_id,
                "name": name,
                "output": output,
                "error": error,
                "duration_ms": duration_ms,
            },
            occurred_at,
        )

    def retry_attempted(
        self,
        what: str,
        attempt: int,
        error: str | None = None,
        delay_ms: float | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> None:
        """A model or tool call is being retried."""
        self._emit(
            "retry_attempted",
            {"what": what, "attempt": attempt, "error": error, "delay_ms": delay_ms},
            occurred_at,
        )

    def step_completed(self, step: str, index: int, *, occurred_at: datetime | None = None) -> None:
        """A named step finished: the resume marker for interrupted runs."""
        self._emit("step_completed", {"step": step, "index": index}, occurred_at)

    def memory_written(
        self, namespace: str, key: str, value: Any, *, occurred_at: datetime | None = None
    ) -> None:
        """The agent stored a long-term memory for this user."""
        self._emit(
            "memory_written",
            {"namespace": namespace, "key": key, "value": value, "source_run": self.run_id},
            occurred_at,
        )

    def memory_forgotten(
        self, namespace: str, key: str, *, occurred_at: datetime | None = None
    ) -> None:
        """The agent dropped a long-term memory."""
        self._emit(
            "memory_forgotten",
            {"namespace": namespace, "key": key, "source_run": self.run_id},
            occurred_at,
        )

    def complete(self, output: Any = None, *, occurred_at: datetime | None = None) -> None:
        """The run finished successfully."""
        self._emit("run_completed", {"output": output}, occurred_at)

    def fail(self, error: str, *, occurred_at: datetime | None = None) -> None:
        """The run ended with an error."""
        self._emit("run_failed", {"error": error}, occurred_at)


def _ending(head_type: str | None, version: int) -> str | None:
    """How a run whose head is ``head_type`` at ``version`` ended; None if it has not."""
    return f"{head_type} at version {version}" if head_type in ENDS_A_RUN else None
