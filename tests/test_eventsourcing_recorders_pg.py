"""The eventsourcing library's own recorder test cases, against our Postgres store.

Each test gets a fresh schema (the cases expect notification ids to start at 1) via
the ``pg_url`` fixture, injected into these unittest classes by an autouse fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)

from ledger.recorder import LedgerAggregateRecorder, LedgerRecorder
from ledger.store.postgres import PostgresStore


class _PostgresStores:
    """Mixin: a fresh schema per test; every store opened in it is closed afterwards."""

    pg_url: str
    _stores: list[PostgresStore]

    @pytest.fixture(autouse=True)
    def _fresh_schema(self, pg_url: str) -> Iterator[None]:
        self.pg_url = pg_url
        self._stores = []
        yield
        for store in self._stores:
            store.close()

    def store(self) -> PostgresStore:
        store = PostgresStore.from_url(self.pg_url, max_size=12)
        self._stores.append(store)
        return store


class TestAggregateRecorder(_PostgresStores, AggregateRecorderTestCase):
    def create_recorder(self) -> LedgerAggregateRecorder:
        return LedgerAggregateRecorder(self.store())


class TestApplicationRecorder(_PostgresStores, ApplicationRecorderTestCase[LedgerRecorder]):
    def create_recorder(self) -> LedgerRecorder:
        return LedgerRecorder(self.store())

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(_PostgresStores, TrackingRecorderTestCase):
    def create_recorder(self) -> LedgerRecorder:
        return LedgerRecorder(self.store())


class TestProcessRecorder(_PostgresStores, ProcessRecorderTestCase):
    def create_recorder(self) -> LedgerRecorder:
        return LedgerRecorder(self.store())
