"""Stores full of realistic agent sessions for the read-side benchmarks, loaded fast.

A session belongs to a user and holds ``runs`` runs one after the other; a run is
``run_started``, ``turns`` agent turns (the five events of ``bench.workload``, plus a
``memory_written`` every ``memory_every`` turns) and ``run_completed``. Up to
``active`` sessions of a loader are in progress at once and take steps round-robin
(a step is one append, as the public API makes them: the start, one turn, the end),
so the log interleaves sessions the way concurrent agents do.

Rows are sealed here (real hash chains) and stored with ``store.append`` many runs per
transaction, from ``parts`` processes with disjoint users: far faster than the public
API, and the stored rows are the same.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import ledger
from bench.workload import encoded_turn
from ledger.chain import GENESIS, Unsealed, seal
from ledger.events import CATALOG, encode_payload
from ledger.records import RunAppend


@dataclass(frozen=True)
class Shape:
    sessions_per_user: int = 4
    runs: int = 2  # per session
    turns: int = 4  # per run
    memory_every: int = 4  # a memory_written in every n-th turn (0: none)
    complete: bool = True  # end each run with run_completed
    active: int = 64  # sessions in progress at once, per loader process


#: Many users, a few sessions each, two runs of four turns per session (23 events a run).
AGENTS = Shape()
#: One exchange per session: run_started plus one turn (6 events a session).
SHORT = Shape(sessions_per_user=10, runs=1, turns=1, memory_every=0, complete=False)

_BASE = datetime(2026, 1, 1, tzinfo=UTC)


def user_id(part: int, session: int, shape: Shape) -> str:
    return f"usr_{part}_{session // shape.sessions_per_user:06d}"


def session_id(part: int, session: int) -> str:
    return f"sess_{part}_{session:07d}"


def run_id(part: int, session: int, run: int) -> str:
    return f"run_{part}_{session:07d}_{run}"


def _encoded(type_: str, fields: Mapping[str, object]) -> tuple[str, bytes]:
    return type_, encode_payload(CATALOG.validate(type_, fields))


Step = tuple[str, list[tuple[str, bytes]]]  # (run_id, [(type, payload)]): one append


def _steps(part: int, session: int, shape: Shape) -> Iterator[Step]:
    """The appends of one session, in order."""
    for r in range(shape.runs):
        rid = run_id(part, session, r)
        yield rid, [_encoded("run_started", {"agent": "bench", "model": "gpt-4o"})]
        for t in range(shape.turns):
            turn = encoded_turn(session * 100 + r * 10 + t)
            if shape.memory_every and (t + 1) % shape.memory_every == 0:
                fields = {"namespace": "prefs", "key": f"k{t % 3}", "value": {"v": t, "run": rid}}
                turn.append(_encoded("memory_written", fields))
            yield rid, turn
        if shape.complete:
            yield rid, [_encoded("run_completed", {"output": {"answer": "done"}})]


def schedule(part: int, shape: Shape, events: int) -> Iterator[RunAppend]:
    """Sealed appends of loader ``part`` until ``events`` events, sessions interleaved."""
    active: list[tuple[int, Iterator[Step]]] = []
    heads: dict[str, tuple[int, bytes]] = {}
    next_session = emitted = tick = 0
    while emitted < events:
        while len(active) < shape.active:
            active.append((next_session, _steps(part, next_session, shape)))
            next_session += 1
        slot = tick % len(active)
        session, steps = active[slot]
        step = next(steps, None)
        if step is None:
            active.pop(slot)
            continue
        tick += 1
        rid, fields = step
        version, head = heads.get(rid, (0, GENESIS))
        when = _BASE + timedelta(milliseconds=50 * tick)
        unsealed = [
            Unsealed(type=t, schema=CATALOG.payload_type(t).SCHEMA, occurred_at=when, payload=p)
            for t, p in fields
        ]
        uid, sid = user_id(part, session, shape), session_id(part, session)
        sealed = seal(uid, sid, rid, version, head, unsealed)
        heads[rid] = (sealed[-1].version, sealed[-1].hash)
        emitted += len(sealed)
        yield RunAppend(uid, sid, rid, version, head, sealed)


def _load_part(url: str, part: int, shape: Shape, events: int, chunk: int) -> None:
    with ledger.connect(url) as led:
        batch: list[RunAppend] = []
        for item in schedule(part, shape, events):
            if len(batch) >= chunk or any(b.run_id == item.run_id for b in batch):
                led.store.append(batch, returning=False)
                batch = []
            batch.append(item)
        if batch:
            led.store.append(batch, returning=False)


def load(url: str, shape: Shape, events: int, parts: int = 4, chunk: int = 50) -> None:
    """Add about ``events`` events to the store at ``url`` from ``parts`` processes."""
    ledger.connect(url).close()  # migrate once, before the loaders start
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_load_part, args=(url, p, shape, -(-events // parts), chunk))
        for p in range(parts)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"a loader process failed (exit code {failed[0]})")
