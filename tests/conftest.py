"""Shared fixtures: a real Postgres (or a clear failure under CI), real SQLite files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pg import test_database, with_schema


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of a database created for this test session (dropped at the end)."""
    try:
        ctx = test_database()
        url = ctx.__enter__()
    except Exception as exc:  # no server and no binaries
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres is required under CI=true but none could be had: {exc}")
        pytest.skip(f"no Postgres available ({exc}); set LEDGER_TEST_URL")
    try:
        yield url
    finally:
        ctx.__exit__(None, None, None)


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """A ledger URL whose objects live in a schema of their own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield with_schema(pg_database, schema)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A ledger URL for a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    """A URL per backend another process can open too (SQLite file, Postgres)."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """One URL per backend: the backend test suite runs against all three stores."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))
