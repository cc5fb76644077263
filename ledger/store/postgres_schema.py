"""Migrations of the Postgres store: an ordered list of DDL steps and who ran them.

``migrate`` runs every step not yet recorded in ``ledger_schema_version``, all in one
transaction under ``pg_advisory_xact_lock(MIGRATION_LOCK)``: several processes
starting at once queue on the lock, the first does the work and the others find
nothing left to do. It also creates the store's schema if missing (inside the lock:
concurrent ``CREATE SCHEMA IF NOT EXISTS`` can otherwise fail on a unique index).

Immutability (DESIGN.md invariant 1) is enforced by the database: row triggers refuse
UPDATE and DELETE and statement triggers refuse TRUNCATE on the event and run tables,
for every role including the owner. Only a superuser who disables triggers
(``SET session_replication_role = replica``) can bypass them, which is what
``ledger verify`` exists to detect.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

#: Key of the advisory lock that serialises migrations (arbitrary, fixed forever).
MIGRATION_LOCK = 7_460_919_182_774_812_001

#: LISTEN on this channel to hear of appends; the payload is the ledger's schema name.
NOTIFY_CHANNEL = "ledger_events"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Step(NamedTuple):
    """One migration: its version number, a name, and its DDL statements in order."""

    version: int
    name: str
    statements: tuple[str, ...]


STEPS: tuple[Step, ...] = (
    Step(
        1,
        "run registry",
        (
            """CREATE TABLE ledger_runs (
            run_id text PRIMARY KEY,
            user_id text NOT NULL,
            session_id text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )""",
            "CREATE INDEX ledger_runs_by_session ON ledger_runs (user_id, session_id, created_at)",
        ),
    ),
    Step(
        2,
        "event log",
        (
            """CREATE TABLE ledger_events (
            user_id text NOT NULL,
            run_id text NOT NULL,
            version bigint NOT NULL,
            session_id text NOT NULL,
            position bigint GENERATED ALWAYS AS IDENTITY,
            tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
            type text NOT NULL,
            schema smallint NOT NULL,
            occurred_at timestamptz NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now(),
            payload bytea NOT NULL,
            key_id text,
            prev_hash bytea NOT NULL,
            hash bytea NOT NULL,
            PRIMARY KEY (user_id, run_id, version)
        )""",
            "CREATE INDEX ledger_events_log ON ledger_events (tx_id, position)",
        ),
    ),
    Step(
        3,
        "tracking",
        (
            """CREATE TABLE ledger_tracking (
            name text PRIMARY KEY,
            position bigint NOT NULL
        )""",
        ),
    ),
    Step(
        4,
        "immutability triggers",
        (
            """CREATE FUNCTION ledger_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% on %.% refused: the ledger is append-only',
                TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'stored events are never updated or deleted (invariant 1)';
        END
        $$""",
            """CREATE TRIGGER ledger_events_immutable BEFORE UPDATE OR DELETE ON ledger_events
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()""",
            """CREATE TRIGGER ledger_events_no_truncate BEFORE TRUNCATE ON ledger_events
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()""",
            """CREATE TRIGGER ledger_runs_immutable BEFORE UPDATE OR DELETE ON ledger_runs
        FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()""",
            """CREATE TRIGGER ledger_runs_no_truncate BEFORE TRUNCATE ON ledger_runs
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()""",
        ),
    ),
)

LATEST = STEPS[-1].version

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS ledger_schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def check_schema_name(schema: str) -> str:
    """``schema`` if it is a plain lower-case SQL identifier, else ValueError."""
    if not _IDENT.match(schema):
        raise ValueError(f"invalid schema name {schema!r}: use lower-case letters, digits and '_'")
    return schema


def migrate(conn: psycopg.Connection[Any], schema: str = "public") -> int:
    """Bring ``schema`` up to the latest version; return how many steps were applied.

    Safe to call from many processes at once and any number of times. Runs in one
    transaction on ``conn`` (which must not be inside one already).
    """
    check_schema_name(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(_VERSION_TABLE)
        row = conn.execute("SELECT coalesce(max(version), 0) FROM ledger_schema_version").fetchone()
        current = int(row[0]) if row else 0
        applied = 0
        for step in STEPS:
            if step.version <= current:
                continue
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO ledger_schema_version (version, name) VALUES (%s, %s)",
                (step.version, step.name),
            )
            applied += 1
    return applied
