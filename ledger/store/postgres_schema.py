"""Migrations of the Postgres store: an ordered list of DDL steps and who ran them.

``migrate`` runs every step not yet recorded in ``ledger_schema_version``, all in one
transaction under ``pg_advisory_xact_lock(MIGRATION_LOCK)``: several processes
starting at once queue on the lock, the first does the work and the others find
nothing left to do (they wait there whatever the login's ``lock_timeout``). It also
creates the store's schema if missing (inside the lock: concurrent ``CREATE SCHEMA IF
NOT EXISTS`` can otherwise fail on a unique index). A schema a later release migrated
further is refused.

Immutability (DESIGN.md invariant 1) is enforced by the database: row triggers refuse
UPDATE and DELETE and statement triggers refuse TRUNCATE on the event and run tables,
for every role including the owner. Only a superuser who disables triggers
(``SET session_replication_role = replica``) can bypass them, which is what
``ledger verify`` exists to detect.

Isolation (invariant 4) is enforced by the database too. Three cluster-wide roles
(created if missing; they hold no login, deployments grant them to login roles):

* ``ledger_app`` -- what agents run as: reads and appends rows of the tenant named by
  ``ledger.user_id`` in the current transaction, and nothing else. No BYPASSRLS, no
  UPDATE/DELETE, no DDL. With no tenant set it sees nothing (fail closed).
* ``ledger_auditor`` -- reads every tenant, writes nothing (verify, export, replay).
* ``ledger_owner`` -- owns the tables (migrations, projector runners, erasure).

The store switches role and tenant per transaction with
``set_config('role', ..., true)`` (the pattern PostgREST uses), pipelined in front of
the statement or, on the append hot path, inside the ``ledger_append`` function
(SECURITY INVOKER), so the switch costs no round trip and cannot leak to the next user
of a pooled connection.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from ledger.errors import AccessDenied, InvalidSetting, StoreUnavailable
from ledger.store.base import Step, schema_too_new
from ledger.store.postgres_sql import APPEND_FUNCTION

#: Key of the advisory lock that serialises migrations (arbitrary, fixed forever).
MIGRATION_LOCK = 7_460_919_182_774_812_001

#: LISTEN on this channel to hear of appends; the payload is the ledger's schema name.
NOTIFY_CHANNEL = "ledger_events"

#: The roles of the ledger (cluster-wide, shared by every schema of a cluster).
APP_ROLE = "ledger_app"
AUDITOR_ROLE = "ledger_auditor"
OWNER_ROLE = "ledger_owner"

#: The setting that names the tenant of the current transaction.
TENANT_SETTING = "ledger.user_id"

#: The row-level security condition of a tenant's rows: ``user_id`` is the tenant of the
#: transaction. A setting of '' is no tenant, like one never set: a connection that ran
#: one transaction with a local tenant keeps the setting, as '', afterwards, and must
#: not then see (or write) rows of a tenant ''.
TENANT_ROWS = f"user_id = nullif(current_setting('{TENANT_SETTING}', true), '')"

#: The condition of steps 5 to 13, which took the '' of such a connection for a tenant.
_TENANT_BEFORE_14 = f"user_id = current_setting('{TENANT_SETTING}', true)"

#: Tables of tenant rows the app role reads and appends to, and those it only reads
#: (the read models, made by ``projections.storage`` when first used).
_TENANT_TABLES = ("ledger_runs", "ledger_events", "ledger_keys", "ledger_tracking")
_READ_MODEL_TABLES = ("ledger_read_models", "ledger_read_model_pages")

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _tenant_policies(table: str) -> tuple[str, ...]:
    """Row-level security on ``table``: the app role sees and writes only the tenant of
    its transaction; the auditor reads all. The owner (not forced) is not bound."""
    return (
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY {table}_tenant ON {table} FOR ALL TO {APP_ROLE}"
        f" USING ({_TENANT_BEFORE_14}) WITH CHECK ({_TENANT_BEFORE_14})",
        f"CREATE POLICY {table}_auditor ON {table} FOR SELECT TO {AUDITOR_ROLE} USING (true)",
    )


def _empty_tenant_is_none() -> tuple[str, ...]:
    """Step 14's statements: every tenant policy on ``TENANT_ROWS`` (the read models'
    too, where they exist already)."""
    read_models = "".join(
        f"""
            IF to_regclass('{table}') IS NOT NULL THEN
                ALTER POLICY {table}_tenant ON {table} USING ({TENANT_ROWS});
            END IF;"""
        for table in _READ_MODEL_TABLES
    )
    return (
        *(
            f"ALTER POLICY {table}_tenant ON {table}"
            f" USING ({TENANT_ROWS}) WITH CHECK ({TENANT_ROWS})"
            for table in _TENANT_TABLES
        ),
        f"DO $$ BEGIN {read_models}\n        END $$",
    )


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
    Step(
        5,
        "roles and row-level security",
        (
            *_tenant_policies("ledger_runs"),
            *_tenant_policies("ledger_events"),
            f"GRANT USAGE ON SCHEMA {{schema}} TO {APP_ROLE}, {AUDITOR_ROLE}",
            f"GRANT SELECT, INSERT ON ledger_runs, ledger_events TO {APP_ROLE}",
            f"GRANT SELECT, INSERT, UPDATE ON ledger_tracking TO {APP_ROLE}",
            f"GRANT SELECT ON ledger_schema_version TO {APP_ROLE}",
            f"GRANT SELECT ON ledger_runs, ledger_events, ledger_tracking, ledger_schema_version"
            f" TO {AUDITOR_ROLE}",
        ),
    ),
    Step(
        6,
        "per-user keys",
        (
            """CREATE TABLE ledger_keys (
            user_id text NOT NULL,
            key_id text NOT NULL,
            key bytea,
            created_at timestamptz NOT NULL DEFAULT now(),
            destroyed_at timestamptz,
            PRIMARY KEY (user_id, key_id),
            UNIQUE (key_id)
        )""",
            """CREATE UNIQUE INDEX ledger_keys_one_live ON ledger_keys (user_id)
            WHERE key IS NOT NULL""",
            *_tenant_policies("ledger_keys"),
            f"GRANT SELECT, INSERT ON ledger_keys TO {APP_ROLE}",
            f"GRANT SELECT ON ledger_keys TO {AUDITOR_ROLE}",
        ),
    ),
    Step(
        7,
        "append function",
        (
            APPEND_FUNCTION,
            "REVOKE ALL ON FUNCTION ledger_append FROM PUBLIC",
            f"GRANT EXECUTE ON FUNCTION ledger_append TO {APP_ROLE}, {OWNER_ROLE}",
        ),
    ),
    Step(
        8,
        "append function: tenant without a role switch",
        # Sets the tenant also when no role is passed: a login that already acts as
        # ledger_app (see acting_role) skips the switch. CREATE OR REPLACE keeps grants.
        (APPEND_FUNCTION,),
    ),
    Step(
        9,
        "the owner may act as the app and auditor roles",
        # Erasure reads and records as the user's tenant, verify reads as the auditor:
        # a login granted only ledger_owner must be able to switch to both. The owner
        # owns every row already, so this widens nothing. Granting roles needs a
        # superuser (or ADMIN OPTION); another migrator leaves it to an admin.
        (
            f"""DO $$ BEGIN
                GRANT {APP_ROLE}, {AUDITOR_ROLE} TO {OWNER_ROLE};
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'ledger: run GRANT {APP_ROLE}, {AUDITOR_ROLE} TO {OWNER_ROLE} '
                    'as a superuser, so that ledger_owner logins can run forget and verify';
            END $$""",
        ),
    ),
    Step(
        10,
        "event payloads compressed with lz4 where the server has it",
        # Payloads over ~2 KB are compressed when stored; pglz, the default, costs 2x
        # lz4's time on a large plain payload (1 MB: 4.5 against 2.1 ms an append) and
        # gains nothing on ciphertext. Only the column's method changes (no rewrite);
        # payloads stored before keep theirs. A server without lz4 keeps pglz.
        (
            """DO $$ BEGIN
                IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression'
                           AND 'lz4' = ANY(enumvals)) THEN
                    ALTER TABLE ledger_events ALTER COLUMN payload SET COMPRESSION lz4;
                END IF;
            END $$""",
        ),
    ),
    Step(
        11,
        "append function: a run that ended takes no more events",
        # The head check also refuses a head that ends the run (RunEnded): the rule
        # the API kept holds for every client of the function. CREATE OR REPLACE keeps
        # grants.
        (APPEND_FUNCTION,),
    ),
    Step(
        12,
        "the eventsourcing adapter per tenant: notifications indexed, tracking isolated",
        # An Application's notifications are its tenant's rows of no session (agent runs
        # always have one), read by position: without an index that is a scan of the
        # whole log on every poll of a follower. Partial, so agent appends never touch
        # it. Tracking rows were one per application name for every tenant, readable
        # and writable by any app login: one tenant could move another's follower past
        # events. They now carry the tenant, under row-level security; rows from before
        # belong to the adapter's default tenant (ledger.recorder.DEFAULT_TENANT).
        (
            """CREATE INDEX ledger_events_aggregates ON ledger_events (user_id, position)
            WHERE session_id = ''""",
            "ALTER TABLE ledger_tracking ADD COLUMN user_id text NOT NULL DEFAULT '_eventsourcing'",
            "ALTER TABLE ledger_tracking ALTER COLUMN user_id DROP DEFAULT",
            "ALTER TABLE ledger_tracking DROP CONSTRAINT ledger_tracking_pkey",
            "ALTER TABLE ledger_tracking ADD PRIMARY KEY (user_id, name)",
            *_tenant_policies("ledger_tracking"),
        ),
    ),
    Step(
        13,
        "append function: no run registered without events",
        # A call with empty arrays registered the run and stored nothing: a run no
        # append could ever start again, which verify reports as emptied (its events
        # deleted). Such a call now inserts nothing at all. CREATE OR REPLACE keeps grants.
        (APPEND_FUNCTION,),
    ),
    Step(
        14,
        "row-level security: an empty tenant setting is no tenant",
        # The policies matched user_id = current_setting(...), and a pooled connection
        # that ever ran a transaction with a local tenant keeps the setting as '' after
        # it: raw SQL of the app role there, with no tenant set, read and wrote the rows
        # of a tenant '' shared by every such connection instead of nothing. ALTER
        # POLICY locks each table briefly (it waits for appends in flight).
        _empty_tenant_is_none(),
    ),
    Step(
        15,
        "append function: calls qualified with pg_catalog",
        # ledger_append called cardinality(...) unqualified: a role that may create in
        # the ledger's schema could plant a better-matching cardinality(bigint[]) there,
        # run in every appender's transaction. CREATE OR REPLACE keeps grants and takes
        # no lock an appender holds.
        (APPEND_FUNCTION,),
    ),
)

LATEST = STEPS[-1].version

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS ledger_schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

#: The latest step earlier releases cannot run on (0: none). The column that records
#: them is added with the first such step (``_RECORD_BREAKING``), by whichever release
#: has one: a schema without it has none.
_RECORDS_BREAKING = """
SELECT EXISTS (SELECT FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(schema)s AND c.relname = 'ledger_schema_version'
                 AND a.attname = 'breaks_older' AND NOT a.attisdropped)
"""
_BREAKING_STEP = """
SELECT coalesce(max(version) FILTER (WHERE breaks_older), 0) FROM {}.ledger_schema_version
"""
_RECORD_BREAKING = (
    "ALTER TABLE ledger_schema_version"
    " ADD COLUMN IF NOT EXISTS breaks_older boolean NOT NULL DEFAULT false",
    "INSERT INTO ledger_schema_version (version, name, breaks_older) VALUES (%s, %s, true)",
)


def ensure_roles(conn: psycopg.Connection[Any]) -> None:
    """Create the ledger's three roles if they do not exist (idempotent, race-safe)."""
    for role in (APP_ROLE, AUDITOR_ROLE, OWNER_ROLE):
        conn.execute(
            sql.SQL(
                """DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN
                    CREATE ROLE {role} NOLOGIN NOBYPASSRLS;
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END $$"""
            ).format(name=sql.Literal(role), role=sql.Identifier(role))
        )


#: What the login may act as without SET ROLE: whether it bypasses row-level security on
#: the events table (superuser, BYPASSRLS, or the privileges of its owner), and which of
#: the ledger's roles' privileges (and so policies) it holds through inheritance.
_LOGIN_ROLES = f"""
SELECT r.rolsuper OR r.rolbypassrls OR pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE'),
       pg_catalog.pg_has_role(current_user, '{APP_ROLE}', 'USAGE'),
       pg_catalog.pg_has_role(current_user, '{AUDITOR_ROLE}', 'USAGE')
FROM pg_roles r, pg_class c
WHERE r.rolname = current_user AND c.oid = pg_catalog.to_regclass(%(events)s)::oid
"""


def acting_role(conn: psycopg.Connection[Any], schema: str) -> str | None:
    """The ledger role whose policies already apply to ``conn``'s login as it is, or None.

    A login granted ``ledger_app`` (with INHERIT) and nothing that bypasses row-level
    security is held to the app role's policies without ``SET ROLE``, so the store
    sets only the tenant for it: the role switch is a catalog lookup per transaction
    (~12 us of server time an append) that such a deployment does not need. Likewise
    for a login granted only ``ledger_auditor``. Any other login (a superuser, the
    tables' owner, a member of both roles, whose permissive policies would add up)
    gets None, and the store switches role every transaction as before.
    """
    events = f"{check_schema_name(schema)}.ledger_events"
    row = conn.execute(_LOGIN_ROLES, {"events": events}).fetchone()
    if row is None or row[0]:
        return None
    _, app, auditor = row
    if app and not auditor:
        return APP_ROLE
    if auditor and not app:
        return AUDITOR_ROLE
    return None


def check_schema_name(schema: str) -> str:
    """``schema`` if it is a plain lower-case SQL identifier, else InvalidSetting (a
    ValueError)."""
    if not _IDENT.match(schema):
        raise InvalidSetting(
            f"invalid schema name {schema!r}: use lower-case letters, digits and '_'"
        )
    return schema


#: Whether the schema, and its version table, exist. Read from the catalog tables with
#: the statement's snapshot, not by ``to_regclass``/``to_regnamespace``, whose cached
#: lookups can miss what another migrator committed while this one waited on the lock.
_LEDGER_EXISTS = """
SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %(schema)s),
       EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(schema)s AND c.relname = 'ledger_schema_version')
"""


def _ledger_exists(conn: psycopg.Connection[Any], schema: str) -> tuple[bool, bool]:
    row = conn.execute(_LEDGER_EXISTS, {"schema": schema}).fetchone()
    return (bool(row[0]), bool(row[1])) if row else (False, False)


def current_version(conn: psycopg.Connection[Any], schema: str) -> int:
    """The schema's migration level (0 when it has no ledger yet); takes no lock."""
    if not _ledger_exists(conn, check_schema_name(schema))[1]:
        return 0
    found = conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.ledger_schema_version").format(
            sql.Identifier(schema)
        )
    ).fetchone()
    return int(found[0]) if found else 0


def migrate(conn: psycopg.Connection[Any], schema: str = "public") -> int:
    """Bring ``schema`` up to the latest version; return how many steps were applied.

    Safe to call from many processes at once and any number of times. Runs in one
    transaction on ``conn`` (which must not be inside one already). A schema that is
    already current is recognised without a lock or any DDL, so application roles that
    may not alter the schema can still ``connect``. A schema a later release migrated
    further is refused (``StoreUnavailable``); one this login may not migrate gets
    ``AccessDenied`` naming what to do, and nothing is changed.
    """
    check_schema_name(schema)
    try:
        found = current_version(conn, schema)
        if found >= LATEST:
            _check_later(conn, schema, found)
            return 0
        try:
            with conn.transaction():
                return _apply_steps(conn, schema)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _may_not_migrate(schema, found, exc) from exc
    except psycopg.errors.LockNotAvailable as exc:
        raise StoreUnavailable(
            f"checking or migrating the ledger schema {schema!r} (to version {LATEST}) waited"
            " longer than lock_timeout for a table other sessions hold; nothing was changed: run"
            " `ledger init` again when they are done, or with a longer lock_timeout"
        ) from exc


def _check_later(conn: psycopg.Connection[Any], schema: str, found: int) -> None:
    """Refuse a schema a later release migrated past ours with a step earlier releases
    cannot run on (``Step.breaks_older``); one it only added to is used as it is."""
    if found == LATEST:
        return
    recorded = conn.execute(_RECORDS_BREAKING, {"schema": schema}).fetchone()
    if not (recorded and recorded[0]):
        return  # no later step was one earlier releases cannot run on
    row = conn.execute(sql.SQL(_BREAKING_STEP).format(sql.Identifier(schema))).fetchone()
    breaking = int(row[0]) if row else 0
    if breaking > LATEST:
        raise schema_too_new(found, LATEST, breaking)


def _may_not_migrate(
    schema: str, found: int, exc: psycopg.errors.InsufficientPrivilege
) -> AccessDenied:
    """The refusal of a login that may not create or migrate the ledger: what and who."""
    if found == 0:
        state = "has no ledger yet, which this login may not create"
        who = "an admin (a superuser)"
    else:
        state = (
            f"is at version {found} and this release needs {LATEST},"
            " which this login may not migrate"
        )
        who = (
            "the owner of the ledger's tables and functions"
            " (a login granted ledger_owner, or a superuser)"
        )
    return AccessDenied(
        f"the ledger schema {schema!r} {state} ({exc.diag.message_primary}):"
        f" run `ledger init` once as {who}, then connect again"
    )


#: Refuse (as Postgres refuses a login without the privileges) a login that acts as
#: ``ledger_app`` and is neither a superuser, nor a member of ``ledger_owner``, nor the
#: owner of the ledger's tables. Where the schema lets every role create (``public``
#: before Postgres 15), such a login, an agent started before ``ledger init``, would
#: otherwise make the ledger itself and own its tables, and an owner bypasses their
#: row-level security. It runs before the schema is known to be closed (see
#: ``_OPEN_SCHEMA``), so its calls are qualified and its arguments of the exact types:
#: a ``pg_has_role(name, regrole, text)`` planted in the schema would otherwise be
#: called, as the migrating superuser, instead of pg_catalog's ``(name, oid, text)``.
_REFUSE_APP_LOGIN = f"""DO $$ BEGIN
    IF pg_catalog.pg_has_role(current_user, pg_catalog.to_regrole('{APP_ROLE}')::oid, 'USAGE')
       AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT coalesce(pg_catalog.pg_has_role(current_user,
               pg_catalog.to_regrole('{OWNER_ROLE}')::oid, 'USAGE'), false)
       AND NOT coalesce(pg_catalog.pg_has_role(current_user, (SELECT relowner
               FROM pg_catalog.pg_class
               WHERE oid = pg_catalog.to_regclass('{{schema}}.ledger_events')::oid), 'USAGE'),
               false)
    THEN
        RAISE EXCEPTION 'a login acting as {APP_ROLE} may not make or migrate the ledger'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$"""


#: Who, besides the schema's owner, may create in ``schema``: the grantees of CREATE in
#: its ACL that are PUBLIC or that ``ledger_app`` or ``ledger_auditor`` inherit, and
#: whether either role may create at all (through the owner's role, say). Every call is
#: pg_catalog's, named so, and every operator's arguments are of exact types (which
#: pg_catalog, searched first unless the search_path names it later, always answers): it
#: runs before the schema is known not to hold objects planted by others.
_OPEN_SCHEMA = f"""
SELECT coalesce(pg_catalog.array_agg(DISTINCT CASE WHEN a.grantee = 0::oid THEN 'PUBLIC'
                ELSE pg_catalog.quote_ident(r.rolname::text) END)
                FILTER (WHERE a.grantee IS NOT NULL), '{{}}'),
       coalesce(pg_catalog.bool_or(pg_catalog.has_schema_privilege(m.oid, n.oid, 'CREATE')),
                false)
FROM pg_catalog.pg_namespace n
CROSS JOIN (SELECT oid FROM pg_catalog.pg_roles
            WHERE rolname IN ('{APP_ROLE}', '{AUDITOR_ROLE}')) m
LEFT JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
       ON a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner
          AND (a.grantee = 0::oid OR pg_catalog.pg_has_role(m.oid, a.grantee, 'USAGE'))
LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
WHERE n.nspname = %(schema)s::name
"""


def refuse_open_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """AccessDenied (nothing changed: the caller rolls back) if roles other than the
    schema's owner, ``ledger_owner`` and superusers may create in ``schema``.

    Refused, not warned about: the migration runs as a superuser or the ledger's owner
    with ``schema`` on its ``search_path``, and a role that may create there can plant
    a function or operator of a better-matching signature than pg_catalog's for any of
    the migration's unqualified calls, which the migrator then runs with its own
    privileges (CVE-2018-1058), or a table the ledger would use. A warning would be
    printed after that already happened, and ``connect`` migrates where no one reads
    stderr. An admin closes the schema with one statement, the one named. A schema the
    ledger makes itself grants CREATE to no one else (no ACL: its owner only), so it
    passes, unless default privileges an admin set open it, which is refused the same.
    """
    row = conn.execute(_OPEN_SCHEMA, {"schema": schema}).fetchone()
    grantees, may_create = (list(row[0]), bool(row[1])) if row else ([], False)
    if not may_create:
        return
    if grantees:
        who = ", ".join(grantees)
        fix = f"run `REVOKE CREATE ON SCHEMA {schema} FROM {who}` as its owner"
    else:
        who = f"{APP_ROLE} or {AUDITOR_ROLE} (through a role they are members of)"
        fix = f"make sure neither {APP_ROLE} nor {AUDITOR_ROLE} is a member of its owner"
    raise AccessDenied(
        f"the ledger schema {schema!r} lets {who} create objects in it, which could plant"
        f" tables or functions the ledger's owner would use; nothing was changed: {fix},"
        " then run `ledger init` again"
    )


def _apply_steps(conn: psycopg.Connection[Any], schema: str) -> int:
    """The steps not yet recorded, under the migration lock, in the caller's transaction.

    CREATE SCHEMA and the version table run only for a new ledger: CREATE SCHEMA needs
    CREATE on the database (even with IF NOT EXISTS), which the owner of an existing
    ledger need not have."""
    # Queue behind another migrator however long it works, whatever lock_timeout the
    # login has: it is doing this very work. The steps' own lock waits keep the login's.
    conn.execute("SET LOCAL lock_timeout = 0")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    conn.execute("SET LOCAL lock_timeout TO DEFAULT")
    current = current_version(conn, schema)  # another process may have migrated meanwhile
    if current >= LATEST:
        _check_later(conn, schema, current)
        return 0
    schema_ident = sql.Identifier(schema).as_string(conn)
    conn.execute(_REFUSE_APP_LOGIN.replace("{schema}", schema_ident))
    ensure_roles(conn)
    if not _ledger_exists(conn, schema)[0]:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    refuse_open_schema(conn, schema)
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    if current == 0:
        conn.execute(_VERSION_TABLE)
    applied = 0
    for step in STEPS:
        if step.version <= current:
            continue
        for statement in step.statements:
            conn.execute(statement.replace("{schema}", schema_ident))
        if step.breaks_older:
            add_column, record = _RECORD_BREAKING
            conn.execute(add_column)
            conn.execute(record, (step.version, step.name))
        else:
            conn.execute(
                "INSERT INTO ledger_schema_version (version, name) VALUES (%s, %s)",
                (step.version, step.name),
            )
        applied += 1
    if applied:
        hand_to_owner(conn, schema)
    return applied


#: Give the ledger's tables and functions to ``ledger_owner`` when the current role may
#: (a superuser, or a member of it that owns them); otherwise their creator stays their
#: owner. The schema grant is skipped by a role that does not own the schema. Only what
#: the ledger's makers made is given: a table whose owner is neither a superuser, nor
#: a member of ``ledger_owner``, nor the owner of the events table was made by someone
#: else (an app login, in a schema that lets any role create) and is left to them, with
#: whatever triggers, rules or policies they gave it. The runner calls it on a ledger
#: already made, as a member of ``ledger_owner`` or a superuser: its calls are qualified
#: (a ``format(text, text)`` planted in the schema would match better than pg_catalog's
#: variadic one, and compose what EXECUTE runs).
_HAND_TO_OWNER = f"""DO $$
DECLARE t text;
BEGIN
    IF pg_catalog.pg_has_role(current_user, '{OWNER_ROLE}', 'MEMBER') THEN
        BEGIN
            EXECUTE 'GRANT USAGE, CREATE ON SCHEMA {{schema}} TO {OWNER_ROLE}';
        EXCEPTION WHEN insufficient_privilege THEN NULL;
        END;
        FOR t IN SELECT c.relname FROM pg_class c
                 WHERE c.relnamespace = '{{schema}}'::regnamespace AND c.relkind = 'r'
                   AND c.relname LIKE 'ledger%'
                   AND c.relowner <> '{OWNER_ROLE}'::regrole
                   AND pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')
                   AND ((SELECT rolsuper FROM pg_roles WHERE oid = c.relowner)
                        OR pg_catalog.pg_has_role(c.relowner, '{OWNER_ROLE}', 'USAGE')
                        OR c.relowner = (SELECT relowner FROM pg_class
                                         WHERE oid = to_regclass('{{schema}}.ledger_events')))
                   LOOP
            EXECUTE pg_catalog.format('ALTER TABLE {{schema}}.%I OWNER TO {OWNER_ROLE}', t);
        END LOOP;
        -- The functions too: a later step replaces ledger_append, which only its
        -- owner may do.
        FOR t IN SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = '{{schema}}'::regnamespace
                   AND p.proname LIKE 'ledger%'
                   AND p.proowner <> '{OWNER_ROLE}'::regrole
                   AND pg_catalog.pg_has_role(current_user, p.proowner, 'USAGE') LOOP
            EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO {OWNER_ROLE}', t);
        END LOOP;
    END IF;
END $$"""


def hand_to_owner(conn: psycopg.Connection[Any], schema: str) -> None:
    """Give the ledger's tables (read models included) and functions in ``schema`` to
    ``ledger_owner`` if the current role may, so any login granted ``ledger_owner`` can
    run migrations, projector runners and erasure; a no-op for a role that may not."""
    schema_ident = sql.Identifier(check_schema_name(schema)).as_string(conn)
    conn.execute(_HAND_TO_OWNER.replace("{schema}", schema_ident))
