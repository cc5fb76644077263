"""The SQL of the Postgres store, as named statements (schema objects in postgres_schema).

Every statement names its tables unqualified: the store's connections run with
``search_path`` set to the store's schema. Placeholders: ``%(name)b`` is sent in binary
(arrays, bytes, timestamps), ``%(name)s`` lets psycopg choose (xid8 cursors are passed
as text and cast).
"""

from __future__ import annotations

import re

from ledger.records import ENDING_TYPES

#: Act as ``role`` for ``user_id`` until the end of the current transaction (row-level
#: security reads the tenant from the setting; see postgres_schema). A NULL role keeps
#: the login's own: the store passes one when the login already acts as that role.
SET_SCOPE = """
SELECT CASE WHEN %(role)s::text IS NOT NULL THEN pg_catalog.set_config('role', %(role)s, true)
       END, pg_catalog.set_config('ledger.user_id', %(user_id)s, true)
"""

#: Columns of ``ledger_events`` in the field order of ``ledger.records.Record``.
RECORD_COLUMNS = (
    "user_id, session_id, run_id, version, position, tx_id, type, schema, occurred_at,"
    " recorded_at, payload, prev_hash, hash, key_id"
)

#: Rows of transactions older than every transaction still running: no event can
#: commit below this horizon any more (DESIGN.md invariant 6).
_HORIZON = "tx_id < pg_snapshot_xmin(pg_current_snapshot())"

_INSERT_COLUMNS = (
    "INSERT INTO ledger_events (user_id, run_id, version, session_id, type, schema,"
    " occurred_at, payload, key_id, prev_hash, hash)"
)

_SELECT_NEW = """
SELECT %(user_id)s::text, %(run_id)s::text, e.version, %(session_id)s::text, e.type, e.schema,
       e.occurred_at, e.payload, e.key_id, e.prev_hash, e.hash
FROM unnest(%(versions)b::bigint[], %(types)b::text[], %(schemas)b::smallint[],
            %(occurred)b::timestamptz[], %(payloads)b::bytea[], %(key_ids)s::text[],
            %(prev_hashes)b::bytea[], %(hashes)b::bytea[])
     AS e(version, type, schema, occurred_at, payload, key_id, prev_hash, hash)
"""

_RETURNING = "RETURNING version, position, tx_id, recorded_at"

#: The append's key (if it seals personal content) must still be live (not forgotten).
_KEY_IS_LIVE = """
  AND (%(key_id)s::text IS NULL OR EXISTS (
        SELECT 1 FROM ledger_keys k
        WHERE k.key_id = %(key_id)s AND k.user_id = %(user_id)s AND k.key IS NOT NULL))
"""

#: Start a run: register it and store its first events in one statement. The events
#: are inserted (and positions drawn) only if this statement registered the run, which
#: it does only if there are events and the append's key is live (no run is ever
#: registered without events: verify takes a registered run without any as emptied).
START_RUN_QUIET = f"""
WITH reg AS (
    INSERT INTO ledger_runs (run_id, user_id, session_id)
    SELECT %(run_id)s, %(user_id)s, %(session_id)s
    WHERE pg_catalog.cardinality(%(versions)b::bigint[]) > 0 {_KEY_IS_LIVE}
    ON CONFLICT (run_id) DO NOTHING
    RETURNING 1
)
{_INSERT_COLUMNS}
{_SELECT_NEW}
WHERE EXISTS (SELECT 1 FROM reg)
"""
START_RUN = f"{START_RUN_QUIET}{_RETURNING}"

_ENDING = ", ".join(f"'{t}'" for t in sorted(ENDING_TYPES))

#: Append to a run: inserted only if its head (for this tenant) is exactly the expected
#: (version, hash) and does not end the run; checked before any position is drawn. A
#: head row keyed by the tenant exists only if the run was registered to that tenant,
#: so no separate check.
APPEND_RUN_QUIET = f"""
{_INSERT_COLUMNS}
{_SELECT_NEW}
WHERE ROW(%(expected_version)s::bigint, %(expected_hash)b::bytea, false) = (
        SELECT h.version, h.hash, h.type IN ({_ENDING}) FROM ledger_events h
        WHERE h.user_id = %(user_id)s AND h.run_id = %(run_id)s
        ORDER BY h.version DESC LIMIT 1)
{_KEY_IS_LIVE}"""
APPEND_RUN = f"{APPEND_RUN_QUIET}{_RETURNING}"

#: The parameters of ``ledger_append`` in order, with their types.
APPEND_PARAMS = (
    ("role", "text"),
    ("tenant", "text"),
    ("user_id", "text"),
    ("run_id", "text"),
    ("session_id", "text"),
    ("versions", "bigint[]"),
    ("types", "text[]"),
    ("schemas", "smallint[]"),
    ("occurred", "timestamptz[]"),
    ("payloads", "bytea[]"),
    ("key_ids", "text[]"),
    ("prev_hashes", "bytea[]"),
    ("hashes", "bytea[]"),
    ("expected_version", "bigint"),
    ("expected_hash", "bytea"),
    ("key_id", "text"),
    ("starts_run", "boolean"),
)

_PLACEHOLDER = re.compile(r"%\((\w+)\)[sb]")
_TABLE = re.compile(r"\b(ledger_(?:events|runs|keys))\b")


def _in_function(statement: str) -> str:
    """``statement`` as a line of PL/pgSQL: parameters by name, tables schema-qualified."""
    return _TABLE.sub(r"{schema}.\1", _PLACEHOLDER.sub(r"p_\1", statement))


#: The append of the API's hot path as one function call: it sets the role and tenant
#: of the transaction (like SET_SCOPE; each skipped when NULL), then runs
#: START_RUN_QUIET or APPEND_RUN_QUIET, and returns how many events it inserted. One
#: statement instead of a pipelined pair: one round of socket waits a turn, not two.
#: SECURITY INVOKER (the default): the insert runs as ``p_role``, under its policies.
#: Its calls are qualified (``pg_catalog.cardinality``, ``pg_catalog.set_config``): the
#: body resolves names on the caller's search_path, which holds the ledger's schema, and
#: a ``cardinality(bigint[])`` created there would match better than pg_catalog's
#: ``cardinality(anyarray)`` and run in the appender's transaction (the CVE-2018-1058
#: pattern). Qualified rather than ``SET search_path`` on the function: a SET clause
#: saves and restores the setting on every call of the hot path. Its operators take
#: arguments of exact types, which pg_catalog (searched first) answers; the
#: multi-array ``unnest`` in FROM is expanded by the parser into pg_catalog's.
APPEND_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {{schema}}.ledger_append(
    {", ".join(f"p_{name} {type_}" for name, type_ in APPEND_PARAMS)}
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE inserted bigint;
BEGIN
    IF p_role IS NOT NULL THEN
        PERFORM pg_catalog.set_config('role', p_role, true);
    END IF;
    IF p_tenant IS NOT NULL THEN
        PERFORM pg_catalog.set_config('ledger.user_id', p_tenant, true);
    END IF;
    IF p_starts_run THEN
        {_in_function(START_RUN_QUIET)};
    ELSE
        {_in_function(APPEND_RUN_QUIET)};
    END IF;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    RETURN inserted;
END
$$"""

#: Tell live readers (LISTEN ledger_events) that this schema has new events. Sent by
#: the writer after its commit, never inside the append transaction: a transaction
#: that notifies holds a cluster-wide lock through its commit, serialising writers.
NOTIFY = "SELECT pg_notify(%(channel)s, %(schema)s)"

#: Why an append did not happen: the run's owner and head, if it is registered at all.
RUN_STATE = """
SELECT r.user_id, h.version, h.hash, h.type
FROM ledger_runs r
LEFT JOIN LATERAL (
    SELECT e.version, e.hash, e.type FROM ledger_events e
    WHERE e.user_id = r.user_id AND e.run_id = r.run_id
    ORDER BY e.version DESC LIMIT 1
) h ON true
WHERE r.run_id = %(run_id)s
"""

_HEADS = """
SELECT r.user_id, r.session_id, r.run_id, coalesce(h.version, 0),
       coalesce(h.hash, %(genesis)b::bytea), r.created_at, h.type, h.tx_id, h.position
FROM ledger_runs r
LEFT JOIN LATERAL (
    SELECT e.version, e.hash, e.type, e.tx_id, e.position FROM ledger_events e
    WHERE e.user_id = r.user_id AND e.run_id = r.run_id
    ORDER BY e.version DESC LIMIT 1
) h ON true
"""

#: One run's head, optionally only if it belongs to the tenant.
RUN_HEAD = f"""{_HEADS}
WHERE r.run_id = %(run_id)s AND (%(user_id)s::text IS NULL OR r.user_id = %(user_id)s)
"""

#: Registered runs, oldest first, optionally narrowed to a tenant and a session.
LIST_RUNS = f"""{_HEADS}
WHERE (%(user_id)s::text IS NULL OR r.user_id = %(user_id)s)
  AND (%(session_id)s::text IS NULL OR r.session_id = %(session_id)s)
ORDER BY r.created_at, r.run_id
"""

# Plain parameters (no coalesce) keep the version bounds index conditions under the
# generic plan Postgres switches prepared statements to after five executions.
_READ_RUN_BOUNDS = """
  AND run_id = %(run_id)s
  AND version > %(after_version)s::bigint
  AND version <= %(upto_version)s::bigint
"""
_READ_RUN = f"""
SELECT {RECORD_COLUMNS} FROM ledger_events
WHERE user_id = %(user_id)s::text {_READ_RUN_BOUNDS}"""
_READ_ANY_RUN = f"""
SELECT {RECORD_COLUMNS} FROM ledger_events
WHERE user_id = (SELECT r.user_id FROM ledger_runs r WHERE r.run_id = %(run_id)s)
{_READ_RUN_BOUNDS}"""

#: A tenant's run's events by version, ascending / descending (``limit`` NULL: all).
READ_RUN_ASC = f"{_READ_RUN} ORDER BY version LIMIT %(limit)s::bigint"
READ_RUN_DESC = f"{_READ_RUN} ORDER BY version DESC LIMIT %(limit)s::bigint"
#: The same for a run of any tenant (auditor, projector runners).
READ_ANY_RUN_ASC = f"{_READ_ANY_RUN} ORDER BY version LIMIT %(limit)s::bigint"
READ_ANY_RUN_DESC = f"{_READ_ANY_RUN} ORDER BY version DESC LIMIT %(limit)s::bigint"

_READ_LOG = f"""
SELECT {RECORD_COLUMNS} FROM ledger_events
WHERE (tx_id, position) > (%(tx_id)s::xid8, %(position)s::bigint)
  AND {_HORIZON}
"""

#: The global log after a cursor, in (tx_id, position) order, below the horizon.
READ_LOG = f"{_READ_LOG} ORDER BY tx_id, position LIMIT %(limit)s::bigint"

#: The same, for one tenant.
READ_LOG_TENANT = (
    f"{_READ_LOG} AND user_id = %(user_id)s ORDER BY tx_id, position LIMIT %(limit)s::bigint"
)

#: A tenant's aggregate events: rows of no session, which only the eventsourcing adapter
#: writes (agent runs always have a session), through the partial index of step 12.
_AGGREGATE_EVENTS = "user_id = %(user_id)s::text AND session_id = ''"

#: A tenant's aggregate events by position, for eventsourcing's ``select_notifications``,
#: below the horizon.
READ_NOTIFICATIONS = f"""
SELECT {RECORD_COLUMNS} FROM ledger_events
WHERE {_AGGREGATE_EVENTS}
  AND position >= %(low)s::bigint
  AND position <= coalesce(%(stop)s::bigint, 9223372036854775807)
  AND (pg_catalog.cardinality(%(types)s::text[]) = 0 OR type = ANY(%(types)s::text[]))
  AND {_HORIZON}
ORDER BY position
LIMIT %(limit)s::bigint
"""

#: The largest position of a tenant's aggregate events below the horizon.
MAX_NOTIFICATION_ID = (
    f"SELECT max(position) FROM ledger_events WHERE {_AGGREGATE_EVENTS} AND {_HORIZON}"
)

#: How much of the log lies after a cursor, and when the first of it was recorded.
LAG = f"""
SELECT count(*), min(recorded_at) FROM ledger_events
WHERE (tx_id, position) > (%(tx_id)s::xid8, %(position)s::bigint) AND {_HORIZON}
"""

#: The last event of the log below the horizon.
LOG_HEAD = f"""
SELECT tx_id, position FROM ledger_events WHERE {_HORIZON}
ORDER BY tx_id DESC, position DESC LIMIT 1
"""

#: The largest position below the horizon.
MAX_POSITION = f"SELECT max(position) FROM ledger_events WHERE {_HORIZON}"

#: The first transaction id not yet assigned, and whether the horizon has passed one.
NEXT_XID = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text"
HORIZON_PASSED = "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %(xid)s::xid8"

#: The transactions of this database running now, other than this session's own, by
#: virtual transaction id (every transaction has one from its start, before it draws a
#: real one at its first write), with their backends' pids; NULL ``virtualxids``: all,
#: else only those still running of the ones given. Autovacuum never appends: skipped
#: when the login may see a backend's type. pg_locks and pids are visible to any login.
RUNNING_TRANSACTIONS = """
SELECT l.virtualxid, l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'virtualxid' AND l.virtualxid = l.virtualtransaction
  AND l.pid <> pg_backend_pid()
  AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
  AND (%(virtualxids)s::text[] IS NULL OR l.virtualxid = ANY(%(virtualxids)s::text[]))
ORDER BY l.pid
"""

#: Move a tracking position forward; affects no row if it is not above the last one.
UPSERT_TRACKING = """
INSERT INTO ledger_tracking (user_id, name, position)
VALUES (%(user_id)s, %(name)s, %(position)s::bigint)
ON CONFLICT (user_id, name) DO UPDATE SET position = EXCLUDED.position
WHERE ledger_tracking.position < EXCLUDED.position
"""

MAX_TRACKING = (
    "SELECT position FROM ledger_tracking WHERE user_id = %(user_id)s AND name = %(name)s"
)

#: Per-user keys (see ledger.personal): destroyed keys keep their row, without the key.
LIVE_KEY = "SELECT key_id, key FROM ledger_keys WHERE user_id = %(user_id)s AND key IS NOT NULL"
ADD_KEY = """
INSERT INTO ledger_keys (user_id, key_id, key) VALUES (%(user_id)s, %(key_id)s, %(key)b)
ON CONFLICT DO NOTHING
"""
READ_KEY = "SELECT key FROM ledger_keys WHERE user_id = %(user_id)s AND key_id = %(key_id)s"
KEY_IDS = "SELECT key_id FROM ledger_keys WHERE user_id = %(user_id)s ORDER BY created_at, key_id"
DESTROY_KEYS = """
UPDATE ledger_keys SET key = NULL, destroyed_at = now()
WHERE user_id = %(user_id)s AND key IS NOT NULL RETURNING key_id
"""
KEY_STATE = "SELECT key IS NOT NULL FROM ledger_keys WHERE key_id = %(key_id)s"

# -- audit ---------------------------------------------------------------------------

_AUDIT_SCOPE = (
    "(%(user_id)s::text IS NULL OR {t}.user_id = %(user_id)s)"
    " AND (%(run_id)s::text IS NULL OR {t}.run_id = %(run_id)s)"
)

#: The audit scan's transaction: one snapshot for its statements, and nothing written.
AUDIT_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

#: The user a run id is registered to (the scope of an audit of that run alone).
RUN_OWNER = "SELECT user_id FROM ledger_runs WHERE run_id = %(run_id)s"

#: Every stored event in scope beside the registry's entry for its run_id (NULLs: none),
#: in (user, run, version) order: the primary key's, so the rows stream off the index.
AUDIT_EVENTS = f"""
SELECT {", ".join("e." + c.strip() for c in RECORD_COLUMNS.split(","))}, r.user_id, r.session_id
FROM ledger_events e
LEFT JOIN ledger_runs r ON r.run_id = e.run_id
WHERE {_AUDIT_SCOPE.format(t="e")}
ORDER BY e.user_id, e.run_id, e.version
"""

#: Registered runs in scope that hold no events of their owner.
AUDIT_EMPTY_RUNS = f"""
SELECT r.user_id, r.run_id, r.session_id FROM ledger_runs r
WHERE {_AUDIT_SCOPE.format(t="r")} AND NOT EXISTS (
    SELECT 1 FROM ledger_events e WHERE e.user_id = r.user_id AND e.run_id = r.run_id)
ORDER BY r.user_id, r.run_id
"""
