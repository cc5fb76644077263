"""The eventsourcing library's own recorder test cases, over a SQLite ledger file."""

from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path

from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)

from ledger.recorder import LedgerAggregateRecorder, LedgerRecorder
from ledger.store.sqlite import SQLiteStore


def _fresh_store(case: unittest.TestCase) -> SQLiteStore:
    """A store on a new file, closed and removed when the test ends."""
    directory = Path(tempfile.mkdtemp(prefix="ledger-es-"))
    store = SQLiteStore(directory / "ledger.db")
    case.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    case.addCleanup(store.close)
    return store


class TestSQLiteAggregateRecorder(AggregateRecorderTestCase):
    def create_recorder(self) -> LedgerAggregateRecorder:
        return LedgerAggregateRecorder(_fresh_store(self))


class TestSQLiteApplicationRecorder(ApplicationRecorderTestCase[LedgerRecorder]):
    def create_recorder(self) -> LedgerRecorder:
        return LedgerRecorder(_fresh_store(self))

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestSQLiteTrackingRecorder(TrackingRecorderTestCase):
    def create_recorder(self) -> LedgerRecorder:
        return LedgerRecorder(_fresh_store(self))


class TestSQLiteProcessRecorder(ProcessRecorderTestCase):
    def create_recorder(self) -> LedgerRecorder:
        return LedgerRecorder(_fresh_store(self))
