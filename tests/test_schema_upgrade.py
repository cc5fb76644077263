"""Upgrading a ledger in use: the previous release's schema migrated in place by the
owner while appenders use it, refused to logins that may not migrate it, and a later
release's schema refused by this one when it has a step earlier releases cannot run on,
and used as it is when it only adds. Real Postgres, real SQLite files, real processes.

The previous release's schema is built by today's migration steps up to LATEST - 1
(``tests.pg.migrate_until``): the steps are append-only, so that is the schema the
previous release left.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import threading
import time
from types import ModuleType
from unittest import mock

import psycopg
import pytest

import ledger
from ledger.errors import AccessDenied, StoreUnavailable
from ledger.store import postgres_schema
from ledger.store import sqlite_sql as sqlite_schema
from ledger.store.base import Step
from ledger.store.postgres import migrate, split_url
from ledger.store.postgres_schema import LATEST, MIGRATION_LOCK, TENANT_ROWS
from ledger.store.postgres_sql import APPEND_FUNCTION
from projections.storage import postgres_sql as read_model_sql
from tests.pg import login_role, migrate_until, raw_connection
from tests.test_cli import ledger_cli

PREVIOUS = LATEST - 1
CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def previous_release(pg_url: str) -> str:
    """A ledger URL whose schema the previous release made."""
    conninfo, schema = split_url(pg_url)
    assert schema is not None
    migrate_until(conninfo, schema, PREVIOUS)
    return pg_url


#: The latest step that replaces ``ledger_append`` (later steps may lock tables).
APPEND_STEP = max(s.version for s in postgres_schema.STEPS if APPEND_FUNCTION in s.statements)


@pytest.fixture
def before_the_append_step(pg_url: str) -> str:
    """A ledger URL whose schema the release before ``APPEND_STEP`` made."""
    conninfo, schema = split_url(pg_url)
    assert schema is not None
    migrate_until(conninfo, schema, APPEND_STEP - 1)
    return pg_url


def schema_versions(url: str) -> list[int]:
    with raw_connection(url) as conn:
        rows = conn.execute("SELECT version FROM ledger_schema_version ORDER BY 1").fetchall()
    return [int(v) for (v,) in rows]


def one_error_line(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    """A refusal as the CLI must give it: exit 1, one line on stderr, no traceback."""
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for part in parts:
        assert part in lines[0]


# -- the previous release's schema, migrated in place ---------------------------------


def _open_append(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection inside a transaction that has called ``ledger_append`` (the append of
    a process of the previous release, not yet committed)."""
    conn = raw_connection(url)
    conn.execute("SET lock_timeout = '5s'")  # a wait on any lock fails the test
    conn.execute(
        "SELECT ledger_append(NULL, 'u', 'u', 'r', 's', '{}', '{}', '{}', '{}', '{}',"
        " '{}', '{}', '{}', 0, NULL, NULL, false)"
    )
    return conn


def test_migrating_the_append_function_does_not_wait_for_appenders_in_flight(
    before_the_append_step: str,
) -> None:
    """``APPEND_STEP`` replaces ``ledger_append`` while an appender's transaction that
    called it is still open: CREATE OR REPLACE FUNCTION takes no lock such a transaction
    holds (with ``lock_timeout`` set, any wait would fail the migration)."""
    steps = tuple(s for s in postgres_schema.STEPS if s.version <= APPEND_STEP)
    with _open_append(before_the_append_step) as appender:
        conninfo, schema = split_url(before_the_append_step)
        with (
            mock.patch.multiple(postgres_schema, STEPS=steps, LATEST=APPEND_STEP),
            psycopg.connect(conninfo, autocommit=True, options="-c lock_timeout=5s") as conn,
        ):
            assert postgres_schema.migrate(conn, schema or "public") == 1
        appender.commit()
    assert schema_versions(before_the_append_step) == list(range(1, APPEND_STEP + 1))


def test_appenders_do_not_wait_for_a_migration_in_flight(previous_release: str) -> None:
    """The reverse: while the migration that replaces ``ledger_append`` is uncommitted
    (its lock held), appenders call the function and commit without waiting."""
    conninfo, schema = split_url(previous_release)
    with psycopg.connect(conninfo) as migrator:
        migrator.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        migrator.execute(f"SET LOCAL search_path TO {schema}")
        for statement in postgres_schema.STEPS[APPEND_STEP - 1].statements:
            migrator.execute(statement.replace("{schema}", str(schema)))
        with _open_append(previous_release) as appender:
            appender.commit()
        migrator.rollback()


def test_every_tenant_policy_of_an_earlier_ledger_takes_an_empty_tenant_for_none(
    pg_url: str,
) -> None:
    """Step 14 rewrites the policies the steps before it and the read models' tables
    made, so '' (a pooled connection's setting after its first tenant) matches no row."""
    conninfo, schema = split_url(pg_url)
    migrate_until(conninfo, str(schema), 13)
    before = "user_id = current_setting('ledger.user_id', true)"
    with raw_connection(pg_url, autocommit=True) as conn:
        for statement in read_model_sql.SCHEMA:  # as the release before step 14 made them
            conn.execute(statement.replace(TENANT_ROWS, before))
    ledger.connect(pg_url).close()
    with raw_connection(pg_url) as conn:
        policies = conn.execute(
            "SELECT tablename, coalesce(qual, '') || coalesce(with_check, '') FROM pg_policies"
            " WHERE schemaname = current_schema() AND policyname LIKE '%_tenant'"
        ).fetchall()
    assert len(policies) == 6
    assert all("nullif" in c.lower() for _, c in policies), policies


def _migrate_in_a_process(url: str) -> int:
    return migrate(url)


def test_processes_migrating_the_previous_schema_at_once_apply_each_step_once(
    previous_release: str,
) -> None:
    with CTX.Pool(4) as pool:
        applied = pool.map(_migrate_in_a_process, [previous_release] * 4)
    assert sorted(applied) == [0, 0, 0, 1]
    assert schema_versions(previous_release) == list(range(1, LATEST + 1))


def _migrate_with_lock_timeout(url: str, applied: list[object]) -> None:
    conninfo, schema = split_url(url)
    try:
        with psycopg.connect(conninfo, autocommit=True, options="-c lock_timeout=100ms") as c:
            applied.append(postgres_schema.migrate(c, schema or "public"))
    except Exception as exc:
        applied.append(exc)


def _waits_on_the_migration_lock(url: str) -> bool:
    with raw_connection(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    return bool(row and row[0])


def test_a_login_with_a_lock_timeout_queues_behind_another_migrator(
    previous_release: str,
) -> None:
    """Deployments often set lock_timeout on their logins: a migrator that queues behind
    another (processes starting at once) must wait for it, not fail on the timeout."""
    applied: list[object] = []
    with raw_connection(previous_release) as first:
        first.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        second = threading.Thread(
            target=_migrate_with_lock_timeout, args=(previous_release, applied)
        )
        second.start()
        while second.is_alive() and not _waits_on_the_migration_lock(previous_release):
            time.sleep(0.01)
        time.sleep(0.5)  # it has waited past its lock_timeout (100 ms) by now
        first.commit()
    second.join()
    assert applied == [1]


def test_a_migration_that_waits_past_lock_timeout_changes_nothing_and_says_so(
    previous_release: str,
) -> None:
    with raw_connection(previous_release) as holder:
        holder.execute("LOCK TABLE ledger_schema_version IN ACCESS EXCLUSIVE MODE")
        applied: list[object] = []
        _migrate_with_lock_timeout(previous_release, applied)
        holder.rollback()
    [refused] = applied
    assert isinstance(refused, StoreUnavailable)
    assert "waited longer than lock_timeout" in str(refused)
    assert "nothing was changed" in str(refused)
    assert schema_versions(previous_release) == list(range(1, PREVIOUS + 1))


def test_a_ledger_owner_login_migrates_the_previous_release_schema(previous_release: str) -> None:
    """The owner of the tables and functions need not have CREATE on the database (which
    CREATE SCHEMA IF NOT EXISTS checks even for a schema that exists)."""
    with login_role(previous_release, "ledger_owner") as owner:
        assert migrate(owner) == 1
    assert schema_versions(previous_release) == list(range(1, LATEST + 1))


def test_an_app_login_cannot_migrate_and_is_told_who_can(previous_release: str) -> None:
    with login_role(previous_release, "ledger_app") as app:
        with pytest.raises(AccessDenied, match="run `ledger init` once as the owner"):
            ledger.connect(app)
        result = ledger_cli(app, "init")
    one_error_line(result, f"at version {PREVIOUS} and this release needs {LATEST}", "ledger_owner")
    assert schema_versions(previous_release) == list(range(1, PREVIOUS + 1))


# -- a later release's schema ---------------------------------------------------------


#: A later release's newest step: one that only adds (earlier releases carry on), or
#: one they cannot run on (``Step.breaks_older``: they refuse to start).
ADDING = "CREATE TABLE ledger_later_release_note (note text)"
LATER = {
    "adds": lambda version: Step(version, "a later release adds", (ADDING,)),
    "breaks": lambda version: Step(version, "a later release breaks", (ADDING,), True),
}


def schema_of(url: str) -> ModuleType:
    """The module of ``url``'s backend's migration steps (``STEPS``, ``LATEST``)."""
    return sqlite_schema if url.startswith("sqlite") else postgres_schema


def migrated_by_a_later_release(url: str, kind: str) -> None:
    """Migrate ``url`` as a release with one more step than this one (of ``kind``)."""
    module = schema_of(url)
    steps = (*module.STEPS, LATER[kind](module.LATEST + 1))
    with mock.patch.multiple(module, STEPS=steps, LATEST=module.LATEST + 1):
        ledger.connect(url).close()


def stored_version(url: str) -> int:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
    return schema_versions(url)[-1]


@pytest.mark.parametrize("command", [["init"], ["runs", "--user", "u"], ["projections", "status"]])
def test_a_later_release_that_breaks_earlier_ones_is_refused(url: str, command: list[str]) -> None:
    latest = schema_of(url).LATEST
    migrated_by_a_later_release(url, "breaks")
    expected = (
        f"this database is at schema version {latest + 1}, newer than this release's"
        f" {latest}, and its step {latest + 1} is one that earlier releases cannot run on:"
        " upgrade ledger"
    )
    with pytest.raises(StoreUnavailable, match=expected):
        ledger.connect(url)
    one_error_line(ledger_cli(url, *command), expected)
    assert stored_version(url) == latest + 1


def test_a_later_release_that_only_adds_leaves_this_one_working(url: str) -> None:
    """A rolling deploy, or a rollback of the code: this release runs on the later
    schema as it is (nothing migrated back), appends, reads and verifies."""
    latest = schema_of(url).LATEST
    migrated_by_a_later_release(url, "adds")
    with ledger.connect(url) as led:
        run = led.tenant("usr_a").start_run(session_id="s1")
        with run.turn():
            run.message_received(content="still here", role="user")
        assert [m["content"] for m in led.tenant("usr_a").conversation("s1").messages] == [
            "still here"
        ]
    result = ledger_cli(url, "verify")
    assert result.returncode == 0, result
    assert ledger_cli(url, "init").returncode == 0
    assert stored_version(url) == latest + 1
