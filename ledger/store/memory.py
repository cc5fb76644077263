"""The in-memory store: the reference implementation of the store contract, for tests.

Writers are serialised by one lock, so log order is position order and ``tx_id``
equals the position of the first event of each append.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from ledger.chain import GENESIS
from ledger.errors import ConcurrencyError, KeyErased, NotFound, RunIdTaken
from ledger.records import (
    AuditRow,
    LogCursor,
    LogLag,
    Record,
    RunAppend,
    RunHead,
    Tracking,
)
from ledger.records import stored as record_of
from ledger.store.base import EventStore, RecordConflict, check_head, check_starts


class MemoryStore(EventStore):
    """Everything in Python lists and dicts; lost when the process ends."""

    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._log: list[Record] = []
        self._runs: dict[str, RunHead] = {}
        self._events: dict[str, list[Record]] = {}
        self._tracking: dict[tuple[str, str], int] = {}
        self._keys: dict[str, dict[str, bytes | None]] = {}

    def append(
        self,
        appends: Sequence[RunAppend],
        *,
        tracking: Tracking | None = None,
        returning: bool = True,
    ) -> list[Record]:
        check_starts(appends)
        with self._lock:
            new_runs: dict[str, RunHead] = {}
            for item in appends:
                self._check(item, new_runs)
            if tracking is not None:
                last = self._tracking.get((tracking.user_id, tracking.name))
                if last is not None and tracking.position <= last:
                    raise RecordConflict(f"tracking {tracking} not above {last}")
            now = datetime.now(UTC)
            position = len(self._log)
            tx_id = position + 1
            stored: list[Record] = []
            for item in appends:
                for event in item.events:
                    position += 1
                    stored.append(record_of(item, event, position, tx_id, now))
            if self.before_commit is not None:
                self.before_commit()
            self._runs.update(new_runs)
            for record in stored:
                self._events.setdefault(record.run_id, []).append(record)
            self._log.extend(stored)
            if tracking is not None:
                self._tracking[(tracking.user_id, tracking.name)] = tracking.position
            return stored

    def _check(self, item: RunAppend, new_runs: dict[str, RunHead]) -> None:
        key_id = item.key_id
        if key_id is not None and self._keys.get(item.user_id, {}).get(key_id) is None:
            raise KeyErased(f"key {key_id!r} of this user was destroyed; nothing written")
        existing = self._runs.get(item.run_id) or new_runs.get(item.run_id)
        events = self._events.get(item.run_id, [])
        if item.starts_run:
            if existing is not None:
                if existing.user_id != item.user_id:
                    raise RunIdTaken(f"run_id {item.run_id!r} is already in use")
                raise ConcurrencyError(f"run {item.run_id!r} already exists")
            new_runs[item.run_id] = RunHead(
                user_id=item.user_id,
                session_id=item.session_id,
                run_id=item.run_id,
                version=0,
                hash=GENESIS,
                created_at=datetime.now(UTC),
            )
            return
        if existing is None or existing.user_id != item.user_id:
            raise NotFound(f"run {item.run_id!r} not found")
        last = events[-1] if events else None
        head_version, head_hash, head_type = (
            (0, GENESIS, None) if last is None else (last.version, last.hash, last.type)
        )
        check_head(item, head_version, head_hash, head_type)
        if item.events and item.events[0].version <= head_version:
            raise ConcurrencyError(f"run {item.run_id!r}: version already stored")

    def run_head(self, user_id: str | None, run_id: str) -> RunHead | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or (user_id is not None and run.user_id != user_id):
                return None
            events = self._events.get(run_id)
            if not events:
                return run
            last = events[-1]
            return RunHead(
                user_id=run.user_id,
                session_id=run.session_id,
                run_id=run_id,
                version=last.version,
                hash=last.hash,
                created_at=run.created_at,
                type=last.type,
                cursor=last.cursor,
            )

    def read_run(
        self,
        user_id: str | None,
        run_id: str,
        *,
        after_version: int = 0,
        upto_version: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[Record]:
        with self._lock:
            rows = [
                r
                for r in self._events.get(run_id, [])
                if (user_id is None or r.user_id == user_id)
                and r.version > after_version
                and (upto_version is None or r.version <= upto_version)
            ]
        if desc:
            rows.reverse()
        return rows if limit is None else rows[:limit]

    def read_log(
        self, after: LogCursor, limit: int = 1000, *, user_id: str | None = None
    ) -> list[Record]:
        with self._lock:
            rows = (r for r in self._log[after.position :] if user_id in (None, r.user_id))
            out: list[Record] = []
            for r in rows:
                out.append(r)
                if len(out) >= limit:
                    break
            return out

    def lag(self, after: LogCursor) -> LogLag:
        with self._lock:
            pending = self._log[after.position :]
            head = self._log[-1].cursor if self._log else None
        return LogLag(head, len(pending), pending[0].recorded_at if pending else None)

    def list_runs(self, user_id: str | None = None, session_id: str | None = None) -> list[RunHead]:
        with self._lock:
            heads = [
                self.run_head(None, run.run_id)
                for run in self._runs.values()
                if user_id in (None, run.user_id) and session_id in (None, run.session_id)
            ]
        return [h for h in heads if h is not None]

    def audit_scan(
        self, user_id: str | None = None, run_id: str | None = None
    ) -> Iterator[AuditRow]:
        with self._lock:  # a snapshot: the scan must not see appends made while it runs
            runs = dict(self._runs)
            if run_id is not None and user_id is None and run_id in runs:
                user_id = runs[run_id].user_id  # the owner's rows, as every store reads
            log = [
                r for r in self._log if user_id in (None, r.user_id) and run_id in (None, r.run_id)
            ]
        log.sort(key=lambda r: (r.user_id, r.run_id, r.version))
        for record in log:
            run = runs.get(record.run_id)
            yield AuditRow(
                record.user_id,
                record.run_id,
                None if run is None else run.user_id,
                None if run is None else run.session_id,
                record,
            )
        holding = {(r.user_id, r.run_id) for r in log}
        for run in sorted(runs.values(), key=lambda r: (r.user_id, r.run_id)):
            if (
                user_id in (None, run.user_id)
                and run_id in (None, run.run_id)
                and (run.user_id, run.run_id) not in holding
            ):
                yield AuditRow(run.user_id, run.run_id, run.user_id, run.session_id, None)

    def read_notifications(
        self,
        user_id: str,
        start: int | None,
        limit: int,
        stop: int | None = None,
        types: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Record]:
        low = 0 if start is None else (start if inclusive_of_start else start + 1)
        with self._lock:
            out = [
                r
                for r in self._aggregate_events(user_id)
                if r.position >= low
                and (stop is None or r.position <= stop)
                and (not types or r.type in types)
            ]
        return out[:limit]

    def max_notification_id(self, user_id: str) -> int | None:
        with self._lock:
            return max((r.position for r in self._aggregate_events(user_id)), default=None)

    def _aggregate_events(self, user_id: str) -> Iterator[Record]:
        return (r for r in self._log if r.user_id == user_id and not r.session_id)

    def max_position(self) -> int | None:
        with self._lock:
            return self._log[-1].position if self._log else None

    def insert_tracking(self, tracking: Tracking) -> None:
        self.append([], tracking=tracking)

    def max_tracking(self, user_id: str, name: str) -> int | None:
        with self._lock:
            return self._tracking.get((user_id, name))

    def live_key(self, user_id: str) -> tuple[str, bytes] | None:
        with self._lock:
            live = [(k, v) for k, v in self._keys.get(user_id, {}).items() if v is not None]
        return live[0] if live else None

    def add_key(self, user_id: str, key_id: str, key: bytes) -> tuple[str, bytes]:
        with self._lock:
            live = self.live_key(user_id)
            if live is not None:
                return live
            self._keys.setdefault(user_id, {})[key_id] = key
            return key_id, key

    def read_key(self, user_id: str, key_id: str) -> bytes | None:
        with self._lock:
            return self._keys.get(user_id, {}).get(key_id)

    def key_ids(self, user_id: str) -> list[str]:
        with self._lock:
            return list(self._keys.get(user_id, {}))

    def destroy_keys(self, user_id: str) -> list[str]:
        with self._lock:
            keys = self._keys.get(user_id, {})
            live = [k for k, v in keys.items() if v is not None]
            for k in live:
                keys[k] = None
            return live

    def close(self) -> None:
        pass
