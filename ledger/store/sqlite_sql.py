"""The SQL of the SQLite store: schema migrations and named statements.

Migrations are an ordered list of steps (as on Postgres); the file records the last
one applied in ``PRAGMA user_version``. They are applied by ``migrate`` inside one
``BEGIN IMMEDIATE`` transaction, so several processes opening the same new file at
once are safe: the first one takes the write lock and creates the schema, the others
wait on the busy timeout, then see the new ``user_version`` and apply nothing.

Every column name mirrors the Postgres schema. ``ledger_events.tx_id`` is the position
of the first event of the append that wrote the row (writers are serialised, so the
log's order by ``(tx_id, position)`` is its order by ``position``).
"""

from __future__ import annotations

import functools
import sqlite3

from ledger.store.base import Step, schema_too_new

#: Positional upper bound used where a statement takes an optional ``<=`` bound.
MAX_INT = 2**63 - 1


STEPS: tuple[Step, ...] = (
    Step(
        1,
        "runs, events, tracking; the database refuses UPDATE and DELETE",
        (
            """
        CREATE TABLE IF NOT EXISTS ledger_runs (
            run_id      TEXT PRIMARY KEY,
            user_id     TEXT NOT NULL,
            session_id  TEXT NOT NULL,
            created_at  TEXT NOT NULL
        )
        """,
            """
        CREATE INDEX IF NOT EXISTS ledger_runs_session
            ON ledger_runs (user_id, session_id, created_at)
        """,
            """
        CREATE TABLE IF NOT EXISTS ledger_events (
            position    INTEGER PRIMARY KEY AUTOINCREMENT,
            tx_id       INTEGER NOT NULL,
            user_id     TEXT NOT NULL,
            run_id      TEXT NOT NULL,
            version     INTEGER NOT NULL,
            session_id  TEXT NOT NULL,
            type        TEXT NOT NULL,
            schema      INTEGER NOT NULL,
            occurred_at TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            payload     BLOB NOT NULL,
            key_id      TEXT,
            prev_hash   BLOB NOT NULL,
            hash        BLOB NOT NULL,
            UNIQUE (user_id, run_id, version)
        )
        """,
            """
        CREATE INDEX IF NOT EXISTS ledger_events_tenant_log
            ON ledger_events (user_id, position)
        """,
            """
        CREATE TABLE IF NOT EXISTS ledger_tracking (
            name        TEXT PRIMARY KEY,
            position    INTEGER NOT NULL
        )
        """,
            """
        CREATE TRIGGER IF NOT EXISTS ledger_events_no_update
        BEFORE UPDATE ON ledger_events
        BEGIN
            SELECT RAISE(ABORT, 'ledger_events is append-only: UPDATE is refused');
        END
        """,
            """
        CREATE TRIGGER IF NOT EXISTS ledger_events_no_delete
        BEFORE DELETE ON ledger_events
        BEGIN
            SELECT RAISE(ABORT, 'ledger_events is append-only: DELETE is refused');
        END
        """,
            """
        CREATE TRIGGER IF NOT EXISTS ledger_runs_no_delete
        BEFORE DELETE ON ledger_runs
        BEGIN
            SELECT RAISE(ABORT, 'ledger_runs is append-only: DELETE is refused');
        END
        """,
            """
        CREATE TRIGGER IF NOT EXISTS ledger_runs_no_update
        BEFORE UPDATE ON ledger_runs
        BEGIN
            SELECT RAISE(ABORT, 'ledger_runs is append-only: UPDATE is refused');
        END
        """,
        ),
    ),
    Step(
        2,
        "per-user keys (destroyed keys keep their row, without key material)",
        (
            """
        CREATE TABLE IF NOT EXISTS ledger_keys (
            key_id       TEXT PRIMARY KEY,
            user_id      TEXT NOT NULL,
            key          BLOB,
            created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            destroyed_at TEXT
        )
        """,
            """
        CREATE UNIQUE INDEX IF NOT EXISTS ledger_keys_one_live
            ON ledger_keys (user_id) WHERE key IS NOT NULL
        """,
        ),
    ),
    Step(
        3,
        "tracking positions per tenant",
        # Two tenants' eventsourcing applications of the same name shared one tracking
        # row: one's position made the other's follower skip events. Rows from before
        # belong to the adapter's default tenant (ledger.recorder.DEFAULT_TENANT).
        (
            """
        CREATE TABLE ledger_tracking_by_tenant (
            user_id     TEXT NOT NULL,
            name        TEXT NOT NULL,
            position    INTEGER NOT NULL,
            PRIMARY KEY (user_id, name)
        )
        """,
            """
        INSERT INTO ledger_tracking_by_tenant (user_id, name, position)
        SELECT '_eventsourcing', name, position FROM ledger_tracking
        """,
            "DROP TABLE ledger_tracking",
            "ALTER TABLE ledger_tracking_by_tenant RENAME TO ledger_tracking",
        ),
    ),
)

#: Per-user keys (see ledger.personal).
LIVE_KEY = "SELECT key_id, key FROM ledger_keys WHERE user_id = ? AND key IS NOT NULL"
ADD_KEY = "INSERT OR IGNORE INTO ledger_keys (key_id, user_id, key) VALUES (?, ?, ?)"
READ_KEY = "SELECT key FROM ledger_keys WHERE user_id = ? AND key_id = ?"
KEY_IDS = "SELECT key_id FROM ledger_keys WHERE user_id = ? ORDER BY created_at, key_id"
DESTROY_KEYS = """
UPDATE ledger_keys SET key = NULL, destroyed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE user_id = ? AND key IS NOT NULL RETURNING key_id
"""
CHECK_KEY = "SELECT 1 FROM ledger_keys WHERE key_id = ? AND user_id = ? AND key IS NOT NULL"
#: Whether freed content is overwritten with zeros (on while keys are destroyed).
SECURE_DELETE = "PRAGMA secure_delete"
SET_SECURE_DELETE = "PRAGMA secure_delete = {on:d}"

LATEST = STEPS[-1].version

#: The steps earlier releases cannot run on (``Step.breaks_older``): the table is made
#: with the first such step, by whichever release has one; a file without it has none.
BREAKING_STEP = "SELECT coalesce(max(version), 0) FROM ledger_schema_breaks"
RECORD_BREAKING_STEP = (
    "CREATE TABLE IF NOT EXISTS ledger_schema_breaks (version INTEGER PRIMARY KEY)",
    "INSERT INTO ledger_schema_breaks (version) VALUES (?)",
)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file behind ``conn`` up to ``LATEST``; return how many steps ran.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Safe to call from
    many processes at once and any number of times.
    """
    current = _user_version(conn)
    if current >= LATEST:
        _check_later(conn, current)
        return 0  # the common case: no write lock taken
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = _user_version(conn)  # another process may have migrated meanwhile
        if current >= LATEST:
            _check_later(conn, current)
            conn.execute("ROLLBACK")
            return 0
        pending = [step for step in STEPS if step.version > current]
        for step in pending:
            for statement in step.statements:
                conn.execute(statement)
            if step.breaks_older:
                make_table, record = RECORD_BREAKING_STEP
                conn.execute(make_table)
                conn.execute(record, (step.version,))
        conn.execute(f"PRAGMA user_version = {LATEST:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(pending)


def _check_later(conn: sqlite3.Connection, current: int) -> None:
    """Refuse a file a later release migrated past ours with a step earlier releases
    cannot run on (``Step.breaks_older``); one it only added to is used as it is."""
    if current <= LATEST:
        return
    try:
        row = conn.execute(BREAKING_STEP).fetchone()
    except sqlite3.OperationalError:  # no such table: no later step was one
        return
    breaking = int(row[0])
    if breaking > LATEST:
        raise schema_too_new(current, LATEST, breaking)


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


# -- connection setup ---------------------------------------------------------------

SET_WAL = "PRAGMA journal_mode = WAL"
SET_SYNCHRONOUS = "PRAGMA synchronous = NORMAL"
#: The -wal file's size to cut back to whenever SQLite rewinds it (``{limit:d}`` bytes).
SET_WAL_SIZE_LIMIT = "PRAGMA journal_size_limit = {limit:d}"
#: Milliseconds a connection's statements wait for a lock (``{ms:d}``).
SET_BUSY_TIMEOUT = "PRAGMA busy_timeout = {ms:d}"

# -- write-ahead log --------------------------------------------------------------------

#: Copy all of it, wait (busy timeout) for writers and readers to leave it, empty it.
CHECKPOINT_TRUNCATE = "PRAGMA wal_checkpoint(TRUNCATE)"

# -- write path ---------------------------------------------------------------------

BEGIN_WRITE = "BEGIN IMMEDIATE"
BEGIN_READ = "BEGIN"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

INSERT_RUN = """
INSERT INTO ledger_runs (run_id, user_id, session_id, created_at)
VALUES (?, ?, ?, ?)
ON CONFLICT (run_id) DO NOTHING
"""

SELECT_RUN_OWNER = "SELECT user_id FROM ledger_runs WHERE run_id = ?"

#: The next position to draw: one past the largest ever drawn (AUTOINCREMENT keeps it
#: in sqlite_sequence); only meaningful inside the write transaction.
_NEXT_POSITION = """max(
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'ledger_events'), 0),
    coalesce((SELECT max(position) FROM ledger_events), 0)
) + 1"""

SELECT_NEXT_POSITION = f"SELECT {_NEXT_POSITION}"

#: The write path's head check: owner, head version and hash (NULL: genesis), and the
#: next position, read together to keep the append path short.
CHECK_HEAD = f"""
SELECT r.user_id, coalesce(e.version, 0), e.hash, {_NEXT_POSITION}, e.type
FROM ledger_runs AS r
LEFT JOIN ledger_events AS e
    ON e.user_id = r.user_id AND e.run_id = r.run_id
    AND e.version = (
        SELECT max(m.version) FROM ledger_events AS m
        WHERE m.user_id = r.user_id AND m.run_id = r.run_id
    )
WHERE r.run_id = ?
"""

#: Columns in the field order of ``ledger.records.Record`` (positional construction).
_EVENT_COLUMNS = """
    user_id, session_id, run_id, version, position, tx_id, type, schema,
    occurred_at, recorded_at, payload, prev_hash, hash, key_id
"""

#: Parameters an event takes in ``insert_events`` (one per column of _EVENT_COLUMNS).
EVENT_WIDTH = 14

#: How many events one INSERT_EVENTS statement stores at most (14 parameters each,
#: well below SQLite's default limit of 32,766 parameters a statement).
MAX_EVENTS_A_STATEMENT = 256


@functools.cache
def insert_events(count: int) -> str:
    """One INSERT of ``count`` events, their parameters one row after another in the
    order of _EVENT_COLUMNS: one statement step for a turn instead of one per event,
    ~7 us less a 5-event turn than ``executemany`` of a one-row INSERT."""
    if not 1 <= count <= MAX_EVENTS_A_STATEMENT:
        raise ValueError(f"insert_events: count {count} out of 1..{MAX_EVENTS_A_STATEMENT}")
    row = "(" + ", ".join(["?"] * EVENT_WIDTH) + ")"
    return f"INSERT INTO ledger_events ({_EVENT_COLUMNS}) VALUES {', '.join([row] * count)}"


#: Raises nothing and changes no row when ``position`` is not above the stored one.
UPSERT_TRACKING = """
INSERT INTO ledger_tracking (user_id, name, position) VALUES (?, ?, ?)
ON CONFLICT (user_id, name) DO UPDATE SET position = excluded.position
WHERE ledger_tracking.position < excluded.position
"""

SELECT_TRACKING = "SELECT position FROM ledger_tracking WHERE user_id = ? AND name = ?"

# -- read path ----------------------------------------------------------------------

#: A run's registration and head; params (run_id, user_id or NULL).
_RUN_HEAD_SELECT = """
SELECT r.user_id, r.session_id, r.run_id, coalesce(e.version, 0), e.hash, r.created_at,
       e.type, e.tx_id, e.position
FROM ledger_runs AS r
LEFT JOIN ledger_events AS e
    ON e.user_id = r.user_id AND e.run_id = r.run_id
    AND e.version = (
        SELECT max(m.version) FROM ledger_events AS m
        WHERE m.user_id = r.user_id AND m.run_id = r.run_id
    )
"""

SELECT_RUN_HEAD = (
    _RUN_HEAD_SELECT
    + """
WHERE r.run_id = :run_id AND (:user_id IS NULL OR r.user_id = :user_id)
"""
)

LIST_RUNS = (
    _RUN_HEAD_SELECT
    + """
WHERE (:session_id IS NULL OR r.session_id = :session_id)
ORDER BY r.created_at, r.rowid
"""
)

LIST_TENANT_RUNS = (
    _RUN_HEAD_SELECT
    + """
WHERE r.user_id = :user_id AND (:session_id IS NULL OR r.session_id = :session_id)
ORDER BY r.created_at, r.rowid
"""
)

#: A run's events by version. The tenant is looked up from the registry so that the
#: (user_id, run_id, version) index serves admin reads too.
_SELECT_RUN = f"""
SELECT {_EVENT_COLUMNS} FROM ledger_events
WHERE user_id = (
        SELECT user_id FROM ledger_runs
        WHERE run_id = :run_id AND (:user_id IS NULL OR user_id = :user_id)
    )
    AND run_id = :run_id AND version > :after AND version <= :upto
"""

SELECT_RUN_ASC = _SELECT_RUN + "ORDER BY version LIMIT :limit"
SELECT_RUN_DESC = _SELECT_RUN + "ORDER BY version DESC LIMIT :limit"

SELECT_LOG = f"""
SELECT {_EVENT_COLUMNS} FROM ledger_events
WHERE position > ? ORDER BY position LIMIT ?
"""

SELECT_TENANT_LOG = f"""
SELECT {_EVENT_COLUMNS} FROM ledger_events
WHERE user_id = ? AND position > ? ORDER BY position LIMIT ?
"""

#: A tenant's aggregate events (rows of no session: the eventsourcing adapter's) by
#: position, through the (user_id, position) index.
_AGGREGATE_EVENTS = "user_id = ? AND session_id = '' AND position >= ? AND position <= ?"

SELECT_NOTIFICATIONS = f"""
SELECT {_EVENT_COLUMNS} FROM ledger_events
WHERE {_AGGREGATE_EVENTS} ORDER BY position LIMIT ?
"""

#: ``{types}`` is replaced by one ``?`` per type asked for.
SELECT_NOTIFICATIONS_OF_TYPES = f"""
SELECT {_EVENT_COLUMNS} FROM ledger_events
WHERE {_AGGREGATE_EVENTS} AND type IN ({{types}})
ORDER BY position LIMIT ?
"""

SELECT_MAX_NOTIFICATION = (
    "SELECT max(position) FROM ledger_events WHERE user_id = ? AND session_id = ''"
)

SELECT_MAX_POSITION = "SELECT max(position) FROM ledger_events"

#: How much of the log lies after a position, and when the first of it was recorded.
SELECT_LAG = "SELECT count(*), min(recorded_at) FROM ledger_events WHERE position > ?"

#: The last event of the log.
SELECT_LOG_HEAD = "SELECT tx_id, position FROM ledger_events ORDER BY position DESC LIMIT 1"

# -- audit ----------------------------------------------------------------------------


def _audit_scope(table: str, user: bool, run: bool) -> str:
    """The WHERE of an audit statement: only the columns given, so SQLite looks them up
    in an index (``:x IS NULL OR col = :x`` would scan the whole table)."""
    scope = [
        f"{table}.{column} = :{column}"
        for column, given in (("user_id", user), ("run_id", run))
        if given
    ]
    return " AND ".join(scope) or "1"


@functools.cache
def audit_events(user: bool, run: bool) -> str:
    """Every stored event in scope (of ``:user_id``, ``:run_id`` when given), in (user,
    run, version) order: the order of the (user_id, run_id, version) index, which both
    given make a range of. No join: looking the registry up once a run (REGISTRATION)
    costs a fifth of what a join's lookup on every row does."""
    return f"""
SELECT {_EVENT_COLUMNS} FROM ledger_events AS e
WHERE {_audit_scope("e", user, run)}
ORDER BY e.user_id, e.run_id, e.version
"""


#: The registry's entry for a run id, whoever it belongs to.
REGISTRATION = "SELECT user_id, session_id FROM ledger_runs WHERE run_id = ?"


@functools.cache
def audit_empty_runs(user: bool, run: bool) -> str:
    """Registered runs in scope that hold no events of their owner."""
    return f"""
SELECT r.user_id, r.run_id, r.session_id FROM ledger_runs AS r
WHERE {_audit_scope("r", user, run)} AND NOT EXISTS (
    SELECT 1 FROM ledger_events AS e WHERE e.user_id = r.user_id AND e.run_id = r.run_id)
ORDER BY r.user_id, r.run_id
"""
