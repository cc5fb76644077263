"""Isolation enforced by the database (DESIGN.md invariant 4, compliance issue).

Raw SQL as the application role, with a tenant set, cannot read, insert or alter
another tenant's rows in any table that holds tenant data; with no tenant set it sees
nothing. The auditor role reads every tenant and writes nothing. A hypothesis test
drives the API with random interleavings of tenants and checks no read ever crosses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger
from ledger.records import Tracking
from ledger.store.postgres import migrate, split_url
from ledger.store.postgres_schema import APP_ROLE, AUDITOR_ROLE, OWNER_ROLE, ensure_roles
from projections.catalog import default_projectors
from projections.runner import ProjectorRunner
from projections.status import status
from tests.pg import login_role, raw_connection

#: Every table that holds tenant data, and a column that is safe to write back.
TENANT_TABLES = (
    "ledger_events",
    "ledger_runs",
    "ledger_keys",
    "ledger_read_models",
    "ledger_read_model_pages",
    "ledger_tracking",
)
#: The tables whose rows never change once written (tracking positions move forward).
APPEND_ONLY_TABLES = tuple(t for t in TENANT_TABLES if t != "ledger_tracking")


def _seed(url: str) -> None:
    """Two tenants with a run, a memory and projected read models each."""
    with ledger.connect(url) as led:
        for user in ("usr_a", "usr_b"):
            t = led.tenant(user)
            run = t.start_run(session_id=f"sess_{user}", run_id=f"run_{user}", model="gpt-4o")
            with run.turn():
                run.message_received(content=f"secret of {user}")
                run.memory_written(namespace="prefs", key="tone", value=f"{user} likes brief")
            for n in range(70):  # a session long enough for its conversation to page out
                with run.turn():
                    run.message_received(content=f"question {n} of {user}")
                    run.model_responded(model="gpt-4o", content=f"answer {n} to {user}")
            run.complete()
            # An eventsourcing follower's position (ledger.recorder), per tenant.
            led.store.insert_tracking(Tracking(user, "follower", 1))
        ProjectorRunner(led, default_projectors()).catch_up()


@pytest.fixture
def seeded(pg_url: str) -> str:
    _seed(pg_url)
    return pg_url


def _as(url: str, role: str, tenant: str | None) -> psycopg.Connection[Any]:
    conn = raw_connection(url, autocommit=True)
    conn.execute(f"SET ROLE {role}")
    if tenant is not None:
        conn.execute("SELECT set_config('ledger.user_id', %s, false)", (tenant,))
    return conn


@pytest.fixture
def app_a(seeded: str) -> Iterator[psycopg.Connection[Any]]:
    with _as(seeded, APP_ROLE, "usr_a") as conn:
        yield conn


def test_the_tenant_tables_are_every_table_with_a_user_id(seeded: str) -> None:
    """A table added later cannot be left out of the checks below."""
    with raw_connection(seeded) as conn:
        tables = {
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND column_name = 'user_id'"
            )
        }
    assert tables == set(TENANT_TABLES)


def test_every_tenant_table_has_rows_of_both_tenants(seeded: str) -> None:
    """The control: as the owner, both tenants' rows are there to be hidden."""
    with raw_connection(seeded) as conn:
        for table in TENANT_TABLES:
            users = {u for (u,) in conn.execute(f"SELECT DISTINCT user_id FROM {table}")}
            assert users == {"usr_a", "usr_b"}, table


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_the_app_role_sees_only_its_tenant(app_a: psycopg.Connection[Any], table: str) -> None:
    users = {u for (u,) in app_a.execute(f"SELECT DISTINCT user_id FROM {table}")}
    assert users == {"usr_a"}


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_with_no_tenant_set_the_app_role_sees_nothing(seeded: str, table: str) -> None:
    with _as(seeded, APP_ROLE, None) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


#: Columns to change, beside ``user_id``, in a copy of a row (unique across tenants).
_UNIQUE_ELSEWHERE = {"ledger_runs": "run_id = 'run_nobody'", "ledger_keys": "key_id = 'k_nobody'"}


def _copy_a_row_to_tenant(url: str, table: str, tenant: str) -> None:
    """As the owner, a copy of one row of ``table`` belonging to ``tenant``."""
    changes = ", ".join(("user_id = %s", *filter(None, [_UNIQUE_ELSEWHERE.get(table)])))
    with raw_connection(url, autocommit=True) as conn:
        conn.execute(f"CREATE TEMP TABLE copied AS SELECT * FROM {table} LIMIT 1")
        conn.execute(f"UPDATE copied SET {changes}", (tenant,))
        conn.execute(f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM copied")


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_an_empty_tenant_setting_is_no_tenant(seeded: str, table: str) -> None:
    """A pooled connection keeps ``ledger.user_id`` as '' after a transaction that set it
    locally: raw SQL there, with no tenant set, must see nothing and write nothing, not
    the rows of a tenant '' that every such connection shares."""
    _copy_a_row_to_tenant(seeded, table, "")
    with _as(seeded, APP_ROLE, None) as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('ledger.user_id', 'usr_a', true)")
        assert conn.execute("SELECT current_setting('ledger.user_id')").fetchone() == ("",)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO ledger_runs (run_id, user_id, session_id) VALUES ('r', '', 's')"
            )


def test_the_app_role_cannot_insert_rows_of_another_tenant(
    app_a: psycopg.Connection[Any],
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        app_a.execute(
            "INSERT INTO ledger_runs (run_id, user_id, session_id) VALUES ('run_x', 'usr_b', 's')"
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        app_a.execute(
            "INSERT INTO ledger_events (user_id, run_id, version, session_id, type, schema,"
            " occurred_at, payload, prev_hash, hash) SELECT 'usr_b', run_id, version + 100,"
            " session_id, type, schema, occurred_at, payload, prev_hash, hash"
            " FROM ledger_events LIMIT 1"
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_a.execute(
            "INSERT INTO ledger_keys (user_id, key_id, key) VALUES ('usr_b', 'k_evil', 'x')"
        )


def test_the_app_role_moves_only_its_tenants_tracking_positions(
    app_a: psycopg.Connection[Any],
) -> None:
    """Tracking rows move forward (their one UPDATE), each tenant's only: an app login
    cannot push another tenant's follower past events, nor hand its rows over."""
    moved = app_a.execute("UPDATE ledger_tracking SET position = position + 1")
    assert moved.rowcount == 1  # usr_a's row; usr_b's is invisible
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        app_a.execute("UPDATE ledger_tracking SET user_id = 'usr_b'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        app_a.execute(
            "INSERT INTO ledger_tracking (user_id, name, position) VALUES ('usr_b', 'f2', 9)"
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_a.execute("DELETE FROM ledger_tracking")


def test_the_append_function_keeps_the_policies_of_its_role(seeded: str) -> None:
    """``ledger_append`` runs as its caller (SECURITY INVOKER) under the role it is
    given: as the app role for tenant A it cannot start a run of tenant B, and a login
    without the app role cannot borrow it through the function."""
    start_b = (
        "SELECT ledger_append(%s, %s, 'usr_b', 'run_x', 's', ARRAY[1]::bigint[],"
        " ARRAY['run_failed'], ARRAY[1]::smallint[], ARRAY[now()], ARRAY['{}'::bytea],"
        " ARRAY[NULL]::text[], ARRAY[''::bytea], ARRAY[''::bytea], 0, ''::bytea, NULL, true)"
    )
    refused = pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security")
    with _as(seeded, APP_ROLE, "usr_a") as conn, refused:
        conn.execute(start_b, (APP_ROLE, "usr_a"))
    with (
        _as(seeded, AUDITOR_ROLE, None) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(start_b, (APP_ROLE, "usr_b"))
    with raw_connection(seeded) as conn:
        assert conn.execute(
            "SELECT count(*) FROM ledger_runs WHERE run_id = 'run_x'"
        ).fetchone() == (0,)


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
@pytest.mark.parametrize("statement", ["UPDATE {t} SET user_id = user_id", "DELETE FROM {t}"])
def test_the_app_role_cannot_alter_any_row(
    app_a: psycopg.Connection[Any], table: str, statement: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_a.execute(statement.format(t=table))


def test_the_app_role_cannot_change_the_schema(app_a: psycopg.Connection[Any]) -> None:
    for statement in (
        "ALTER TABLE ledger_events DISABLE ROW LEVEL SECURITY",
        "DROP POLICY ledger_events_tenant ON ledger_events",
        "CREATE TABLE sneaky (x int)",
        "TRUNCATE ledger_events",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app_a.execute(statement)
    row = app_a.execute(
        "SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = %s", (APP_ROLE,)
    ).fetchone()
    assert row == (False, False)


def test_the_auditor_reads_every_tenant_and_writes_nothing(seeded: str) -> None:
    with _as(seeded, AUDITOR_ROLE, None) as conn:
        for table in TENANT_TABLES:
            users = {u for (u,) in conn.execute(f"SELECT DISTINCT user_id FROM {table}")}
            assert users == {"usr_a", "usr_b"}, table
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO ledger_runs (run_id, user_id, session_id) VALUES ('r', 'usr_a', 's')"
            )


def test_the_auditor_handle_runs_as_the_auditor_role(seeded: str) -> None:
    """Its reads cross tenants; the database refuses its writes."""
    with ledger.connect(seeded) as led:
        auditor = led.auditor()
        assert {r.user_id for r in auditor.runs()} == {"usr_a", "usr_b"}
        store: Any = auditor._store
        with store.connection() as conn, conn.transaction():
            conn.execute(
                "SELECT set_config('role', %s, true)", (AUDITOR_ROLE,)
            )  # what the auditor's statements run under
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    "INSERT INTO ledger_tracking (user_id, name, position) VALUES ('usr_a', 'x', 1)"
                )


def test_another_tenants_ids_are_not_found_like_missing_ones(seeded: str) -> None:
    with ledger.connect(seeded) as led:
        a = led.tenant("usr_a")
        for call in (
            lambda: a.run("run_usr_b"),
            lambda: a.events("run_usr_b"),
            lambda: a.replay("run_usr_b"),
            lambda: a.run_metadata("run_usr_b"),
        ):
            with pytest.raises(ledger.NotFound) as other:
                call()
            assert "usr_b" not in str(other.value).replace("run_usr_b", "")
        with pytest.raises(ledger.NotFound) as missing:
            a.run("run_nope")
        assert type(missing.value) is type(other.value)
        with pytest.raises(ledger.NotFound):
            a.conversation("sess_usr_b")
        assert [m.value for m in a.memories()] == ["usr_a likes brief"]


# -- random interleavings through the API --------------------------------------------

USERS = ("usr_a", "usr_b", "usr_c")
actions = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.sampled_from(["start", "message", "memory", "read"]),
        st.integers(min_value=0, max_value=2),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=actions)
def test_no_read_ever_returns_another_tenants_data(store_url: str, script: list[Any]) -> None:
    import uuid

    tag = uuid.uuid4().hex[:8]  # examples share the store: keep their ids apart
    with ledger.connect(store_url) as led:
        runs: dict[tuple[str, int], Any] = {}
        for i, (user, action, n) in enumerate(script):
            t = led.tenant(f"{user}_{tag}")
            session = f"sess_{n}"
            if action == "start" or (user, n) not in runs:
                runs[(user, n)] = t.start_run(session_id=session, run_id=f"run_{i}_{tag}")
                if action == "start":
                    continue
            run = runs[(user, n)]
            if action == "message":
                run.message_received(content=f"{user} says {n}")
            elif action == "memory":
                run.memory_written(namespace="ns", key=f"k{n}", value=f"{user} value")
            else:
                _check_reads(t, user, session)
        for user in USERS:
            _check_reads(led.tenant(f"{user}_{tag}"), user, "sess_0")


def _check_reads(t: Any, user: str, session: str) -> None:
    me = t.user_id
    for summary in t.summaries():
        assert summary.user_id == me
        assert all(e.user_id == me for e in t.events(summary.run_id))
        assert t.replay(summary.run_id).user_id == me
    assert all(r.user_id == me for r in t.runs())
    try:
        messages = t.conversation(session).messages
    except ledger.NotFound:
        messages = []
    for message in messages:
        assert message["content"].startswith(user + " ")
    for memory in t.memories():
        assert memory.value.startswith(user + " ")


# -- a deployment that logs the agents in as a plain member of ledger_app ------------


@pytest.fixture
def agent_login(seeded: str) -> Iterator[str]:
    """``seeded``'s URL, logged in as a fresh LOGIN role granted only ``ledger_app``."""
    with login_role(seeded, APP_ROLE) as url:
        yield url


@pytest.fixture
def auditor_login(seeded: str) -> Iterator[str]:
    """``seeded``'s URL, logged in as a fresh LOGIN role granted only ``ledger_auditor``."""
    with login_role(seeded, AUDITOR_ROLE) as url:
        yield url


def test_a_plain_app_login_works_for_its_tenants_and_is_refused_the_rest(
    agent_login: str,
) -> None:
    with ledger.connect(agent_login) as led:
        assert led.store.acts_as == APP_ROLE  # so only the tenant is set, no SET ROLE
        every_tenant = "SELECT DISTINCT user_id FROM ledger_events"
        assert led.store.read_as("usr_b", every_tenant, {}) == [("usr_b",)]
        a = led.tenant("usr_a")
        run = a.start_run(session_id="sess_new")
        run.message_received(content="usr_a from a plain login")
        assert a.events(run.run_id)[1].data["content"] == "usr_a from a plain login"
        assert a.conversation("sess_new").messages[0]["content"] == "usr_a from a plain login"
        assert [m.value for m in a.memories()] == ["usr_a likes brief"]
        with pytest.raises(ledger.NotFound):
            a.events("run_usr_b")
        with pytest.raises(ledger.AccessDenied, match="ledger_auditor"):
            led.auditor().runs()
        with pytest.raises(ledger.AccessDenied):
            led.forget("usr_b")
        with pytest.raises(ledger.AccessDenied, match="ledger_auditor"):
            status(led, default_projectors())  # not "head 0, lag 0": it sees no tenant
    refused = subprocess.run(
        [sys.executable, "-m", "cli", "verify", "--digest"],
        env={**os.environ, "LEDGER_URL": agent_login},
        capture_output=True,
        text=True,
    )
    # one line naming the role to use; not a digest of the nothing it may see
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "ledger_auditor" in refused.stderr
    with raw_connection(agent_login, autocommit=True) as conn:
        # raw SQL from this login, no tenant set: nothing at all
        assert conn.execute("SELECT count(*) FROM ledger_events").fetchone() == (0,)


def test_an_auditor_login_reads_every_tenant_and_writes_nothing(auditor_login: str) -> None:
    """The auditor handle's reads, narrowed to a tenant or not, run as the auditor."""
    with ledger.connect(auditor_login) as led:
        assert led.store.acts_as == AUDITOR_ROLE
        auditor = led.auditor()
        assert {r.user_id for r in auditor.runs()} == {"usr_a", "usr_b"}
        assert [r.user_id for r in auditor.runs(user_id="usr_b")] == ["usr_b"]
        assert auditor.events("run_usr_a")[1].data["content"] == "secret of usr_a"
        assert auditor.replay("run_usr_b").user_id == "usr_b"
        report = auditor.verify(user_id="usr_a")
        assert report.ok and report.runs == 1
        metadata = auditor.runs_metadata()
        assert [(m.user_id, m.run_id) for m in metadata] == [
            ("usr_a", "run_usr_a"),
            ("usr_b", "run_usr_b"),
        ]
        assert all(m.total_tokens == 0 and m.status == "completed" for m in metadata)
        assert [m.run_id for m in auditor.runs_metadata(user_id="usr_b")] == ["run_usr_b"]
        heads = {row.head_position for row in status(led, default_projectors())}
        assert heads == {led.store.max_position()} != {None}  # the whole log's head
        with pytest.raises(ledger.AccessDenied):
            led.tenant("usr_a").start_run(session_id="sess_x")
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "runs", "--json"],
        env={**os.environ, "LEDGER_URL": auditor_login},
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert {r["user_id"] for r in json.loads(listed.stdout)} == {"usr_a", "usr_b"}


def test_a_login_with_both_roles_still_switches_and_stays_isolated(seeded: str) -> None:
    """Granted ledger_app and ledger_auditor, a login would see every tenant under
    their permissive policies together: the store must switch role for it."""
    with login_role(seeded, f"{APP_ROLE}, {AUDITOR_ROLE}") as url, ledger.connect(url) as led:
        assert led.store.acts_as is None
        # The database, not the query, must narrow this to usr_a.
        every_tenant = "SELECT DISTINCT user_id FROM ledger_events"
        assert led.store.read_as("usr_a", every_tenant, {}) == [("usr_a",)]
        a = led.tenant("usr_a")
        assert [r.run_id for r in a.runs()] == ["run_usr_a"]
        with pytest.raises(ledger.NotFound):
            a.events("run_usr_b")
        assert {r.user_id for r in led.auditor().runs()} == {"usr_a", "usr_b"}


def test_a_superuser_login_always_switches_role(seeded: str) -> None:
    with ledger.connect(seeded) as led:
        assert led.store.acts_as is None  # it bypasses RLS unless it switches
        every_tenant = "SELECT DISTINCT user_id FROM ledger_events"
        assert led.store.read_as("usr_a", every_tenant, {}) == [("usr_a",)]
        # the conversation read's pipelined pair runs as the tenant too
        runs, rows = led.store.list_runs_and_read("usr_a", "sess_usr_a", every_tenant, {})
        assert [r.run_id for r in runs] == ["run_usr_a"] and rows == [("usr_a",)]
        with pytest.raises(ledger.NotFound):
            led.tenant("usr_a").events("run_usr_b")


def test_the_documented_deployment_agents_runner_and_auditor_logins(seeded: str) -> None:
    """docs/isolation-and-erasure.md: agents log in as members of ledger_app, the
    projector runner and erasure as a member of ledger_owner, audits as a member of
    ledger_auditor. Each does its job and nothing it should not."""
    with (
        login_role(seeded, APP_ROLE) as agent_url,
        login_role(seeded, OWNER_ROLE) as owner_url,
        login_role(seeded, AUDITOR_ROLE) as auditor_url,
    ):
        with ledger.connect(agent_url) as agent:
            run = agent.tenant("usr_a").start_run(session_id="sess_deployed")
            run.message_received(content="usr_a via the agent login")
        with ledger.connect(owner_url) as owner:
            assert owner.store.acts_as is None  # the owner bypasses row-level security
            ProjectorRunner(owner, default_projectors()).catch_up()  # every tenant
            owner.forget("usr_b")
            assert owner.auditor().verify().ok
        with ledger.connect(agent_url) as agent:
            a = agent.tenant("usr_a")
            messages = a.conversation("sess_deployed").messages
            assert messages[0]["content"] == "usr_a via the agent login"
            assert [m.value for m in agent.tenant("usr_b").memories()] == ["[erased]"]
            with pytest.raises(ledger.AccessDenied):
                agent.forget("usr_a")
        with ledger.connect(auditor_url) as auditor:
            report = auditor.auditor().verify()
            assert report.ok
            erased = auditor.auditor().events("run_usr_b")
            assert erased[1].data["content"] == "[erased]"


# -- a schema any role may create in (``public`` before Postgres 15) -------------------


@pytest.fixture
def open_schema(pg_url: str) -> str:
    """A migrated ledger (no read models yet) whose schema grants CREATE to the app role,
    as ``public`` grants it to every role on servers before Postgres 15."""
    migrate(pg_url)
    with raw_connection(pg_url, autocommit=True) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA {split_url(pg_url)[1]} TO {APP_ROLE}")
    return pg_url


def _schema_tables(url: str) -> list[str]:
    with raw_connection(url) as conn:
        return [
            name
            for (name,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
            )
        ]


@pytest.mark.parametrize("grantee", ["PUBLIC", APP_ROLE])
def test_init_refuses_a_schema_others_may_create_in(pg_url: str, grantee: str) -> None:
    """The migrator runs as an admin with the schema on its search_path: a role that may
    create there could plant functions it would call. One line naming the REVOKE, exit
    1, nothing made; ``connect``'s migration refuses the same."""
    from tests.test_cli import ledger_cli

    schema = split_url(pg_url)[1]
    with raw_connection(pg_url, autocommit=True) as conn:
        ensure_roles(conn)
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {grantee}")
    result = ledger_cli(pg_url, "init")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"the ledger schema '{schema}' lets {grantee} create objects" in line
    assert f"run `REVOKE CREATE ON SCHEMA {schema} FROM {grantee}` as its owner" in line
    with pytest.raises(ledger.AccessDenied, match=f"REVOKE CREATE ON SCHEMA {schema}"):
        ledger.connect(pg_url)
    assert _schema_tables(pg_url) == []
    with raw_connection(pg_url, autocommit=True) as conn:
        conn.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM {grantee}")
    assert ledger_cli(pg_url, "init").returncode == 0


def test_the_schema_the_ledger_makes_lets_no_other_role_create(pg_url: str) -> None:
    """Made by ``ledger init``: its ACL is the ledger's, so it passes, and only its owner
    and ``ledger_owner`` may create in it."""
    assert migrate(pg_url) > 0
    with raw_connection(pg_url) as conn:
        creators = conn.execute(
            "SELECT coalesce(nullif(a.grantee::regrole::text, '-'), 'PUBLIC')"
            " FROM pg_namespace n, aclexplode(n.nspacl) a"
            " WHERE n.nspname = current_schema() AND a.privilege_type = 'CREATE'"
            " AND a.grantee <> n.nspowner"
        ).fetchall()
        may = conn.execute(
            "SELECT has_schema_privilege(%s, current_schema(), 'CREATE'),"
            " has_schema_privilege(%s, current_schema(), 'CREATE')",
            (APP_ROLE, AUDITOR_ROLE),
        ).fetchone()
    assert creators == [(OWNER_ROLE,)] and may == (False, False)


#: Functions an app login plants where it may create, each a better match than
#: pg_catalog's for a call the ledger made unqualified (the CVE-2018-1058 pattern).
PLANTED = (
    "cardinality(bigint[]) RETURNS integer",  # ledger_append's, on every append
    "format(text, text) RETURNS text",  # hand_to_owner's, as a runner making read models
)


def test_functions_planted_in_the_schema_are_not_called(open_schema: str) -> None:
    """Where an app login may still create (CREATE granted after init), what it plants
    never runs in an appender's transaction, nor in a runner's (a superuser here)."""
    with (
        login_role(open_schema, APP_ROLE) as agent_url,
        raw_connection(agent_url, autocommit=True) as conn,
    ):
        for signature in PLANTED:
            conn.execute(
                f"CREATE FUNCTION {signature} LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'planted function called'; END $$"
            )
            function = signature.partition(" RETURNS")[0]
            conn.execute(f"ALTER FUNCTION {function} OWNER TO {APP_ROLE}")  # outlives the login
    with ledger.connect(open_schema) as led:
        run = led.tenant("usr_a").start_run(session_id="sess_a")
        run.message_received(content="hello")
        ProjectorRunner(led, default_projectors()).catch_up()
        assert led.tenant("usr_a").conversation("sess_a").messages
    assert {owner for _, owner in _read_model_tables(open_schema)} == {OWNER_ROLE}


#: The tables the read models' storage makes.
READ_MODEL_TABLES = (
    "ledger_projectors",
    "ledger_read_models",
    "ledger_read_model_pages",
    "ledger_generations",
)


def test_an_app_login_never_makes_the_ledger(pg_url: str) -> None:
    """An agent started before ``ledger init`` where it may create would make the ledger
    itself, own every table and so read every tenant past row-level security."""
    with raw_connection(pg_url, autocommit=True) as conn:
        ensure_roles(conn)
        conn.execute(f"CREATE SCHEMA {split_url(pg_url)[1]}")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA {split_url(pg_url)[1]} TO {APP_ROLE}")
    with login_role(pg_url, APP_ROLE) as agent_url:
        with pytest.raises(ledger.AccessDenied, match=r"no ledger yet.*ledger init"):
            ledger.connect(agent_url)
        with raw_connection(pg_url) as conn:
            made = conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
            ).fetchall()
        assert made == []


def _read_model_tables(url: str) -> list[tuple[str, str]]:
    with raw_connection(url) as conn:
        return conn.execute(
            "SELECT relname, relowner::regrole::text FROM pg_class"
            " WHERE relnamespace = current_schema()::regnamespace"
            " AND relname = ANY(%s) ORDER BY relname",
            (list(READ_MODEL_TABLES),),
        ).fetchall()


def test_an_app_login_never_makes_the_read_models_tables(open_schema: str) -> None:
    """Their owner would read every tenant's read models past row-level security."""
    with login_role(open_schema, APP_ROLE) as agent_url, ledger.connect(agent_url) as agent:
        run = agent.tenant("usr_a").start_run(session_id="sess_a")
        run.message_received(content="usr_a's question")
        with pytest.raises(ledger.AccessDenied, match="ledger init"):
            agent.tenant("usr_a").conversation("sess_a")
        assert _read_model_tables(open_schema) == []


def test_read_models_tables_an_app_login_made_first_are_refused(open_schema: str) -> None:
    """A table an app login made before the first runner (its own, with a trigger or a
    grant of its choosing) is never adopted, nor written to: the runner stops, naming it."""
    with login_role(open_schema, APP_ROLE) as agent_url:
        with raw_connection(agent_url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE ledger_read_models (user_id text NOT NULL, projection text"
                " NOT NULL, generation integer NOT NULL, key text NOT NULL, doc bytea NOT NULL,"
                " PRIMARY KEY (user_id, projection, generation, key))"
            )
            conn.execute("GRANT ALL ON ledger_read_models TO PUBLIC")
        with pytest.raises(ledger.AccessDenied, match=r"ledger_read_models \(owned by ledger_"):
            _seed(open_schema)  # as a superuser: appends, then a runner
        with raw_connection(agent_url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM ledger_read_models").fetchone() == (0,)
            conn.execute("DROP TABLE ledger_read_models")
        with (
            ledger.connect(agent_url) as agent,
            pytest.raises(ledger.AccessDenied, match="ledger init"),
        ):
            agent.tenant("usr_a").conversation("sess_usr_a")  # no tables yet
        with ledger.connect(open_schema) as led:
            ProjectorRunner(led, default_projectors()).catch_up()
        assert {owner for _, owner in _read_model_tables(open_schema)} == {OWNER_ROLE}
        with ledger.connect(agent_url) as agent:
            assert agent.tenant("usr_a").conversation("sess_usr_a").messages
