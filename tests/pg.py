"""Where the tests get a Postgres: $LEDGER_TEST_URL, else a throwaway cluster.

Each test session creates its own database on that server and drops it at the end;
each test that asks for ``pg_url`` gets its own schema inside it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True):
        return str(candidate)
    return None


@contextmanager
def _throwaway_cluster() -> Iterator[str]:
    """Start a private cluster from the local PostgreSQL binaries (pytest-postgresql)."""
    from pytest_postgresql.executors.proc import PostgreSQLExecutor

    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        raise RuntimeError("no PostgreSQL binaries (pg_ctl) found")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        raise RuntimeError("initdb refuses to run as root; set LEDGER_TEST_URL instead")
    tmp = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
    port = _free_port()
    executor = PostgreSQLExecutor(
        executable=pg_ctl,
        host="127.0.0.1",
        port=port,
        datadir=str(tmp / "data"),
        unixsocketdir=str(tmp),
        logfile=str(tmp / "pg.log"),
        startparams="-w",
        dbname="postgres",
        user="postgres",
        postgres_options="-c max_connections=200 -c fsync=off",
    )
    executor.start()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        executor.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@contextmanager
def test_database() -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    with _server() as server_url:
        dbname = f"ledger_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        try:
            yield _with_database(server_url, dbname)
        finally:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@contextmanager
def _server() -> Iterator[str]:
    url = os.environ.get("LEDGER_TEST_URL")
    if url:
        yield url
        return
    with _throwaway_cluster() as started:
        yield started


def with_schema(url: str, schema: str) -> str:
    """The ledger URL that keeps everything in ``schema`` of the database at ``url``."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}schema={schema}"


def raw_connection(ledger_url: str, **kwargs: object) -> psycopg.Connection[tuple[object, ...]]:
    """A plain psycopg connection to the schema a ledger URL names (for raw-SQL tests)."""
    base, _, query = ledger_url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    schema = params.pop("schema", "public")
    conn = psycopg.connect(base, options=f"-c search_path={schema}", **kwargs)  # type: ignore[arg-type]
    return conn


def cut_connections(database_url: str) -> int:
    """Terminate every other session of the test database (a server restart, as the
    clients see it); how many were cut."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def login_role(url: str, granted: str | None) -> Iterator[str]:
    """``url``, logged in as a fresh LOGIN role granted ``granted`` (a comma-separated
    list of roles; None: no role at all); the role is dropped afterwards."""
    role = f"ledger_test_login_{uuid.uuid4().hex[:8]}"
    grant = "" if granted is None else f" IN ROLE {granted}"
    with raw_connection(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN{grant}")
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    try:
        yield f"{scheme}://{role}@{rest.partition('@')[2]}?{query}"
    finally:
        with raw_connection(url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"DROP ROLE {role}")


def migrate_until(conninfo: str, schema: str, version: int) -> None:
    """Give ``schema`` the ledger of a release whose newest migration was ``version``
    (today's steps up to it): the "previous release" fixture of the upgrade tests."""
    from unittest import mock

    from ledger.store import postgres_schema

    steps = tuple(s for s in postgres_schema.STEPS if s.version <= version)
    with (
        mock.patch.multiple(postgres_schema, STEPS=steps, LATEST=version),
        psycopg.connect(conninfo, autocommit=True) as conn,
    ):
        postgres_schema.migrate(conn, schema)
