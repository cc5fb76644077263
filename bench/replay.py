"""``python -m bench replay``: how fast ``t.replay()`` rebuilds a run, against reading it.

Three questions, answered in one run (figures are medians of the repeats):

1. A 1,000-event run replayed to its last event (``t.replay(run_id)``), on Postgres and
   on SQLite, against a floor that selects the same run's rows (every column the store
   reads, by its primary key, in version order) and msgspec-decodes each payload into
   its catalog Struct, nothing folded. Target: >= 0.5x the floor's events/s.
2. The same replay on Postgres with 5,000,000 other events stored (other users' runs,
   ``bench.preload``: binary COPY), against the store that holds only that run.
   Target: within 1.2x of its time.
3. 100,000-event runs, stored among those 5,000,000, replayed to versions 1, 50,000,
   99,999 and their head. Target: under 2 s each.

The measured runs are agent runs of the benchmark workload (``bench.workload``:
``run_started``, then turns of five events; the last turn is cut short to make the count
exact), woven into the loaded store between the preload's batches, so their rows lie
spread among the other runs' as a long-lived agent's do, not packed at the end of the
table:

* the 1,000-event run and the "appended" 100,000-event run: sealed with the real hash
  chain and stored by ``store.append`` (a turn per append; ten for the long run), with
  payloads as written (as a store with encryption off holds them); the 1,000-event run
  also alone in a store of its own, and in a SQLite file;
* the "API" 100,000-event run: written through the public API with default settings,
  a ``with run.turn()`` per turn; on Postgres that seals personal content with the
  user's key, so its ``t.replay`` also decrypts (``ledger.personal``).

After loading, VACUUM ANALYZE and CHECKPOINT (SQLite: ANALYZE and a WAL checkpoint),
and every case runs once unmeasured.

Timing: for questions 1-2, each repeat calls every case ``calls`` times, interleaved
call by call (the order rotates each round), each call timed alone; a repeat's figure
is its median call. For question 3, each repeat replays once to each point, in turn.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import msgspec
import psycopg

import ledger
from bench.pgserver import conninfo, describe_server, fresh_database, with_schema
from bench.preload import preload, table_size
from bench.read_side import Figures, ratio_line, settle, sqlite_file, verdict
from bench.workload import EVENTS_PER_TURN, encoded_turn, turn_events
from ledger.chain import GENESIS, Unsealed, seal
from ledger.events import CATALOG, encode_payload
from ledger.records import RunAppend
from ledger.store.postgres_sql import RECORD_COLUMNS


@dataclass(frozen=True)
class Plan:
    preload: int  # other events in the loaded store
    repeats: int
    calls: int  # timed calls per case and repeat, questions 1-2
    short: int = 1_000  # events of the run of questions 1-2
    long: int = 100_000  # events of the run of question 3
    points: tuple[int, ...] = (1, 50_000, 99_999)  # versions replayed to, and the head


FULL = Plan(preload=5_000_000, repeats=5, calls=30)
QUICK = Plan(preload=500_000, repeats=3, calls=15)

SHORT_TARGET = 0.5  # x the floor's events/s
LOADED_TARGET = 1.2  # x the time with the run alone
LONG_TARGET = 2.0  # seconds per replay

USER, API_USER, SESSION = "usr_replay", "usr_replay_api", "sess_replay"
SHORT_RUN, LONG_RUN, API_RUN = "run_replay_short", "run_replay_long", "run_replay_api"
_BASE = datetime(2026, 1, 1, tzinfo=UTC)


# -- the measured runs -------------------------------------------------------------------


def agent_run(run_id: str, events: int, turns_per_append: int = 1) -> list[RunAppend]:
    """``events`` events of one agent run, sealed into appends, ready for ``store.append``.

    ``run_started`` on its own (as ``start_run`` appends it), then turn after turn of
    the workload, a turn every two seconds of agent clock.
    """
    fields = {"agent": "bench", "model": "gpt-4o"}
    started = Unsealed(
        "run_started",
        CATALOG.payload_type("run_started").SCHEMA,
        _BASE,
        encode_payload(CATALOG.validate("run_started", fields)),
    )
    groups: list[list[Unsealed]] = [[started]]
    left, n = events - 1, 0
    while left > 0:
        when = _BASE + timedelta(seconds=2 * n + 1)
        turn = [
            Unsealed(t, CATALOG.payload_type(t).SCHEMA, when + timedelta(milliseconds=100 * i), p)
            for i, (t, p) in enumerate(encoded_turn(n))
        ][:left]
        if n % turns_per_append == 0:
            groups.append([])
        groups[-1].extend(turn)
        left -= len(turn)
        n += 1
    out: list[RunAppend] = []
    version, head = 0, GENESIS
    for group in groups:
        sealed = seal(USER, SESSION, run_id, version, head, group)
        out.append(RunAppend(USER, SESSION, run_id, version, head, sealed))
        version, head = sealed[-1].version, sealed[-1].hash
    return out


def api_steps(led: ledger.Ledger, run_id: str, events: int) -> list[Callable[[], None]]:
    """Start an ``events``-event run through the public API (default settings); return
    its turns still to write, each one ``with run.turn()`` (the last one cut short)."""
    run = led.tenant(API_USER).start_run(
        session_id=SESSION, run_id=run_id, agent="bench", model="gpt-4o"
    )
    steps: list[Callable[[], None]] = []
    left, n = events - 1, 0
    while left > 0:
        count = min(EVENTS_PER_TURN, left)
        steps.append(partial(_api_turn, run, n, count))
        left, n = left - count, n + 1
    return steps


def _api_turn(run: ledger.Run, n: int, count: int) -> None:
    with run.turn():
        for type_, fields in turn_events(n)[:count]:
            getattr(run, type_)(**fields)


def appending(led: ledger.Ledger, appends: list[RunAppend]) -> list[Callable[[], None]]:
    """One ``store.append`` step per sealed append."""
    return [partial(_append, led, item) for item in appends]


def _append(led: ledger.Ledger, item: RunAppend) -> None:
    led.store.append([item], returning=False)


class Weaver:
    """``preload``'s ``after_batch``: take the next share of each list of steps."""

    def __init__(self, *steps: list[Callable[[], None]]) -> None:
        self.steps = steps

    def __call__(self, done: int, batches: int) -> None:
        for steps in self.steps:
            for step in steps[len(steps) * (done - 1) // batches : len(steps) * done // batches]:
                step()


# -- the floors --------------------------------------------------------------------------

_COLUMNS = [c.strip() for c in RECORD_COLUMNS.split(",")]
_TYPE, _PAYLOAD = _COLUMNS.index("type"), _COLUMNS.index("payload")
_DECODERS = {name: msgspec.json.Decoder(CATALOG.payload_type(name)) for name in CATALOG.names}
FLOOR_PG = (
    f"SELECT {RECORD_COLUMNS} FROM ledger_events "
    "WHERE user_id = %s AND run_id = %s ORDER BY version"
)
FLOOR_SQLITE = (
    f"SELECT {RECORD_COLUMNS} FROM ledger_events WHERE user_id = ? AND run_id = ? ORDER BY version"
)


def _decoded(rows: list[Any]) -> int:
    payloads = [_DECODERS[row[_TYPE]].decode(row[_PAYLOAD]) for row in rows]
    return len(payloads)


class PgFloor:
    """psycopg, autocommit, prepared, binary: the run's rows, then their payloads decoded."""

    def __init__(self, url: str, schema: str) -> None:
        self.conn = psycopg.connect(conninfo(url, schema), autocommit=True)

    def __call__(self, run_id: str) -> int:
        cur = self.conn.cursor(binary=True)
        return _decoded(cur.execute(FLOOR_PG, (USER, run_id), prepare=True).fetchall())

    def close(self) -> None:
        self.conn.close()


class SqliteFloor:
    """sqlite3 on the store's file: the run's rows, then their payloads decoded."""

    def __init__(self, url: str) -> None:
        self.conn = sqlite3.connect(url.removeprefix("sqlite:///"))

    def __call__(self, run_id: str) -> int:
        return _decoded(self.conn.execute(FLOOR_SQLITE, (USER, run_id)).fetchall())

    def close(self) -> None:
        self.conn.close()


# -- measuring ---------------------------------------------------------------------------


def interleaved(cases: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Call each case ``calls`` times, one call of each per round (order rotating);
    the median seconds of one call, per case."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n in range(calls):
        shift = n % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


@dataclass
class Result:
    """Seconds per call, one value per repeat, by case."""

    short: dict[str, Figures]
    long: dict[str, Figures]


def _figures(names: list[str]) -> dict[str, Figures]:
    return {name: Figures(name) for name in names}


def measure(plan: Plan, pg_url: str, sqlite_url: str) -> Result:
    """Load the stores, then time the cases of all three questions, ``plan.repeats`` times."""
    loaded, alone = with_schema(pg_url, "loaded"), with_schema(pg_url, "alone")
    short = agent_run(SHORT_RUN, plan.short)
    long = agent_run(LONG_RUN, plan.long, turns_per_append=10)
    started = time.monotonic()
    for url in (alone, sqlite_url):
        with ledger.connect(url) as led:
            for item in short:
                _append(led, item)
        settle(url)
    with ledger.connect(loaded) as led:
        weave = Weaver(
            appending(led, short), appending(led, long), api_steps(led, API_RUN, plan.long)
        )
        preload(pg_url, "loaded", plan.preload, after_batch=weave)
        sealed = "sealed" if getattr(led, "encrypting", False) else "as written"
    print(
        f"  loaded {plan.preload:,} other events and wove in the {plan.short:,}-event run and "
        f"two {plan.long:,}-event runs (store.append; public API, personal content {sealed}) "
        f"in {time.monotonic() - started:,.0f}s; ledger_events is {table_size(pg_url, 'loaded')}",
        flush=True,
    )
    with (
        ledger.connect(loaded) as led_loaded,
        ledger.connect(alone) as led_alone,
        ledger.connect(sqlite_url) as led_sqlite,
    ):
        floor_loaded, floor_alone = PgFloor(pg_url, "loaded"), PgFloor(pg_url, "alone")
        floor_sqlite = SqliteFloor(sqlite_url)
        t_loaded, t_alone = led_loaded.tenant(USER), led_alone.tenant(USER)
        t_sqlite, t_api = led_sqlite.tenant(USER), led_loaded.tenant(API_USER)
        short_cases: dict[str, Callable[[], object]] = {
            "pg floor, run alone": partial(floor_alone, SHORT_RUN),
            "pg t.replay, run alone": partial(t_alone.replay, SHORT_RUN),
            "pg floor, loaded": partial(floor_loaded, SHORT_RUN),
            "pg t.replay, loaded": partial(t_loaded.replay, SHORT_RUN),
            "sqlite floor": partial(floor_sqlite, SHORT_RUN),
            "sqlite t.replay": partial(t_sqlite.replay, SHORT_RUN),
        }
        long_cases: dict[str, Callable[[], object]] = {}
        for label, tenant, run_id in (("appended", t_loaded, LONG_RUN), ("API", t_api, API_RUN)):
            for at in [*plan.points, None]:
                name = f"{label} run, t.replay at {'head' if at is None else f'{at:,}'}"
                long_cases[name] = partial(tenant.replay, run_id, at=at)
        long_cases["appended run, floor (all events)"] = partial(floor_loaded, LONG_RUN)
        long_cases["appended run, engine alone at head"] = partial(
            led_loaded.replayer.replay, USER, LONG_RUN, None
        )
        _check(t_loaded, t_alone, t_sqlite, t_api, plan)
        for case in (*short_cases.values(), *long_cases.values()):  # warm-up, unmeasured
            case()
        result = Result(_figures(list(short_cases)), _figures(list(long_cases)))
        for r in range(plan.repeats):
            for name, seconds in interleaved(short_cases, plan.calls).items():
                result.short[name].values.append(seconds)
            names = list(long_cases)
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                long_cases[name]()
                result.long[name].values.append(time.perf_counter() - t0)
            print(
                f"  repeat {r + 1}/{plan.repeats}: {plan.short:,}-event run, ms per replay: "
                + ", ".join(f"{n} {f.values[-1] * 1e3:.1f}" for n, f in result.short.items())
                + f"; {plan.long:,}-event runs, s: "
                + ", ".join(f"{n} {f.values[-1]:.2f}" for n, f in result.long.items()),
                flush=True,
            )
        for floor in (floor_loaded, floor_alone, floor_sqlite):
            floor.close()
    return result


def _check(
    t_loaded: ledger.Tenant,
    t_alone: ledger.Tenant,
    t_sqlite: ledger.Tenant,
    t_api: ledger.Tenant,
    plan: Plan,
) -> None:
    """The stores hold what the benchmark thinks: same states, the right versions."""
    states = [t.replay(SHORT_RUN) for t in (t_loaded, t_alone, t_sqlite)]
    shapes = {(s.version, len(s.messages), s.run_metadata.total_tokens) for s in states}
    assert len(shapes) == 1 and states[0].version == plan.short, shapes
    assert states[0].messages == states[1].messages == states[2].messages
    for tenant, run_id in ((t_loaded, LONG_RUN), (t_api, API_RUN)):
        for at in [*plan.points, None]:
            assert tenant.replay(run_id, at=at).version == (at or plan.long)
    contents = [
        [(m["role"], m.get("content"), m.get("output")) for m in t.replay(run, at=50).messages]
        for t, run in ((t_loaded, LONG_RUN), (t_api, API_RUN))
    ]
    assert contents[0] == contents[1], "the API-written run reads back differently"


# -- reporting ---------------------------------------------------------------------------


def report(result: Result, plan: Plan) -> None:
    s, lg = result.short, result.long
    print(
        f"\nReplay: a {plan.short:,}-event run to its head (median of {plan.repeats} repeats "
        f"of {plan.calls} calls each; 'loaded' = {plan.preload:,} other events stored)"
    )
    print(f"  {'case':<44} {'ms':>8} {'(min-max)':>13} {'events/s':>10}")
    for name, f in s.items():
        rate = plan.short / f.median
        print(f"  {name:<44} {f.median * 1e3:>8.2f} {_ms_spread(f):>13} {rate:>10,.0f}")
    print()
    pg = ratio_line(
        "pg t.replay / floor, events/s (run alone)",
        s["pg floor, run alone"],
        s["pg t.replay, run alone"],
    )
    ratio_line(
        "pg t.replay / floor, events/s (loaded)", s["pg floor, loaded"], s["pg t.replay, loaded"]
    )
    lite = ratio_line("sqlite t.replay / floor, events/s", s["sqlite floor"], s["sqlite t.replay"])
    grown = ratio_line(
        "pg t.replay time, loaded / run alone",
        s["pg t.replay, loaded"],
        s["pg t.replay, run alone"],
    )
    ratio_line("pg floor time, loaded / run alone", s["pg floor, loaded"], s["pg floor, run alone"])
    verdict("pg t.replay / floor", pg, SHORT_TARGET, "x", True)
    verdict("sqlite t.replay / floor", lite, SHORT_TARGET, "x", True)
    verdict("pg t.replay, loaded / run alone", grown, LOADED_TARGET, "x", False)
    print(
        f"\nReplay: {plan.long:,}-event runs among {plan.preload:,} other events, Postgres "
        f"(median of {plan.repeats} repeats, one call each)"
    )
    print(f"  {'case':<44} {'s':>8} {'(min-max)':>13} {'events/s':>10}")
    for name, f in lg.items():
        events = _events_of(name, plan)
        print(f"  {name:<44} {f.median:>8.3f} {f.spread('.3f'):>13} {events / f.median:>10,.0f}")
    print()
    for name, f in lg.items():
        if "t.replay" in name:
            verdict(name, f.median, LONG_TARGET, "s", False)


def _ms_spread(f: Figures) -> str:
    return f"{min(f.values) * 1e3:.2f}-{max(f.values) * 1e3:.2f}"


def _events_of(name: str, plan: Plan) -> int:
    """Events a long-run case folds (or reads): the point it replays to."""
    for at in plan.points:
        if name.endswith(f" at {at:,}"):
            return at
    return plan.long


def run(quick: bool = False) -> Result:
    plan = QUICK if quick else FULL
    print(
        f"\nReplay: t.replay() of a {plan.short:,}-event and a {plan.long:,}-event run, "
        f"{plan.preload:,} other events stored",
        flush=True,
    )
    with fresh_database() as pg_url, sqlite_file() as sqlite_url:
        print(f"  on {describe_server(pg_url)}", flush=True)
        result = measure(plan, pg_url, sqlite_url)
    report(result, plan)
    return result
