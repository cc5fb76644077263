"""A fresh Postgres database per benchmark (dropped at the end) and URLs into it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ledger.store.postgres_schema import APP_ROLE, ensure_roles

DEFAULT_SERVER = "postgresql://root@127.0.0.1:5432/postgres"


def server_url() -> str:
    """``$LEDGER_BENCH_URL`` or the local default."""
    return os.environ.get("LEDGER_BENCH_URL") or DEFAULT_SERVER


def with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``?schema=`` (what ``ledger.connect`` understands)."""
    return urlunsplit(urlsplit(url)._replace(query=urlencode({"schema": schema})))


def conninfo(url: str, schema: str | None = None) -> str:
    """A psycopg conninfo for ``url`` (without ``?schema=``), search_path set to ``schema``."""
    plain = urlunsplit(urlsplit(url)._replace(query=""))
    if schema is None:
        return plain
    return psycopg.conninfo.make_conninfo(plain, options=f"-c search_path={schema}")


def params(url: str) -> dict[str, Any]:
    """host, port, dbname, user, password of ``url``."""
    return conninfo_to_dict(urlunsplit(urlsplit(url)._replace(query="")))


def create_schema(url: str, schema: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))


@contextmanager
def fresh_database() -> Iterator[str]:
    """CREATE DATABASE bench_<random> on the server; yield its URL; drop it at the end."""
    server = server_url()
    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(conninfo(server), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(conninfo(server), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def describe_server(url: str) -> str:
    """Version and the settings that decide commit cost, for the report."""
    with psycopg.connect(conninfo(url)) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        rows = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'shared_buffers', 'wal_level') ORDER BY name"
        ).fetchall()
    settings = ", ".join(f"{name}={value}" for name, value in rows)
    return f"PostgreSQL {version[0] if version else '?'} ({settings})"


@contextmanager
def app_login(url: str) -> Iterator[Callable[[str], str]]:
    """A fresh LOGIN role granted only ``ledger_app`` (the deployment the docs
    recommend: agents log in as a plain member of the app role), dropped at the end.

    Yields a function that turns a URL into the same URL logged in as that role."""
    role = f"ledger_bench_app_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        ensure_roles(conn)
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(role), sql.Literal(password), sql.Identifier(APP_ROLE)
            )
        )

    def as_login(target: str) -> str:
        parts = urlsplit(target)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))

    try:
        yield as_login
    finally:
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
