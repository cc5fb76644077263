"""The eventsourcing adapter beyond the library's own test cases."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System

import ledger
import ledger.integrity
from ledger.recorder import LedgerRecorder


@pytest.fixture
def recorder(store_url: str) -> LedgerRecorder:
    with ledger.connect(store_url) as led:
        yield LedgerRecorder(led.store)


def test_a_stream_that_starts_at_version_0_can_grow(recorder: LedgerRecorder) -> None:
    stream = uuid4()
    recorder.insert_events([StoredEvent(stream, 0, "t", b"zero")])
    recorder.insert_events([StoredEvent(stream, 1, "t", b"one")])
    assert [e.state for e in recorder.select_events(stream)] == [b"zero", b"one"]
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent(stream, 1, "t", b"again")])


def test_rows_written_through_the_adapter_are_hash_chained(recorder: LedgerRecorder) -> None:
    stream = uuid4()
    recorder.insert_events([StoredEvent(stream, 1, "t", b"a"), StoredEvent(stream, 2, "t", b"b")])
    recorder.insert_events([StoredEvent(stream, 3, "t", b"c")])
    records = recorder.store.read_run(recorder.tenant, str(stream))
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    assert ledger.integrity.first_problem(records) is None


def test_notifications_come_back_with_uuid_originator_ids(recorder: LedgerRecorder) -> None:
    stream = uuid4()
    ids = recorder.insert_events([StoredEvent(stream, 1, "t", b"a")])
    assert recorder.store.settle()  # another transaction on the server may hold the horizon
    (notification,) = recorder.select_notifications(ids[0] if ids else None, 1)
    assert notification.originator_id == stream


def test_a_topic_named_like_a_catalog_event_is_refused_and_nothing_is_written(
    recorder: LedgerRecorder,
) -> None:
    """Stored under the ledger's own type, an aggregate's state would be read as that
    type's payload by every reader: a projector would stall on it for every tenant."""
    stream = uuid4()
    ok = StoredEvent(uuid4(), 1, "app:Created", b"{}")
    forged = StoredEvent(stream, 1, "message_received", b'{"content": 5}')
    with pytest.raises(ledger.InvalidEvent, match="topic 'message_received' is an event type"):
        recorder.insert_events([ok, forged])
    assert recorder.select_events(stream) == [] and recorder.select_events(ok.originator_id) == []


class Account(Aggregate):
    """A tiny aggregate of the library's own kind."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, amount: int) -> None:
        self.balance += amount


class Bank(Application[UUID]):
    def open(self, owner: str) -> UUID:
        account = Account(owner)
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: int) -> None:
        account: Account = self.repository.get(account_id)
        account.deposit(amount)
        self.save(account)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    """A store that outlives the application that opened it (not memory://)."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def test_an_application_keeps_its_aggregates_in_the_ledger(url: str) -> None:
    """PERSISTENCE_MODULE=ledger.recorder is all an eventsourcing Application needs."""
    store_url = url
    env = {"PERSISTENCE_MODULE": "ledger.recorder", "BANK_LEDGER_URL": store_url}
    bank = Bank(env=env)
    account_id = bank.open("ada")
    for amount in (10, 20, 12):
        bank.deposit(account_id, amount)
    bank.close()

    again = Bank(env={**env, "LEDGER_TENANT": "_eventsourcing"})  # another process would
    account: Account = again.repository.get(account_id)
    assert (account.owner, account.balance, account.version) == ("ada", 42, 4)
    assert [n.originator_version for n in again.notification_log.select(start=1, limit=10)] == [
        1,
        2,
        3,
        4,
    ]
    again.close()
    with ledger.connect(store_url) as led:
        report = led.auditor().verify(user_id="_eventsourcing")
        assert (report.ok, report.runs, report.events) == (True, 1, 4)
    with pytest.raises(ledger.InvalidEvent, match="IS_SNAPSHOTTING_ENABLED"):
        Bank(env={**env, "IS_SNAPSHOTTING_ENABLED": "y"})


class Tally(ProcessApplication[UUID]):
    """A follower of Bank: counts the deposits it processed."""

    deposits = 0

    @singledispatchmethod
    def policy(self, domain_event: Any, processing_event: Any) -> None:
        if type(domain_event).__name__ == "Deposited":
            type(self).deposits += 1


def test_a_system_of_applications_follows_through_the_ledger(url: str) -> None:
    """A follower reads the leader's notifications from the ledger and tracks them."""
    Tally.deposits = 0
    env = {"PERSISTENCE_MODULE": "ledger.recorder", "LEDGER_URL": url}
    runner = SingleThreadedRunner(System(pipes=[[Bank, Tally]]), env=env)
    runner.start()
    try:
        bank = runner.get(Bank)
        account_id = bank.open("grace")
        for amount in (1, 2, 3):
            bank.deposit(account_id, amount)
        assert Tally.deposits == 3
        assert runner.get(Tally).recorder.max_tracking_id("Bank") == 4
    finally:
        runner.stop()


#: A script as users write them: applications and a system runner in a function, the
#: runner stopped, an application closed and then dropped (its ``__del__`` closes the
#: factory a second time).
_QUIET_EXIT = """
    import sys
    from eventsourcing.system import MultiThreadedRunner, SingleThreadedRunner, System
    from tests.test_recorder import Bank, Tally

    def main(url: str) -> None:
        env = {"PERSISTENCE_MODULE": "ledger.recorder", "LEDGER_URL": url}
        for runner_class in (SingleThreadedRunner, MultiThreadedRunner):
            runner = runner_class(System(pipes=[[Bank, Tally]]), env=env)
            runner.start()
            try:
                runner.get(Bank).open("ada")
            finally:
                runner.stop()
        bank = Bank(env=env)
        bank.open("grace")
        bank.close()

    main(sys.argv[1])
"""


def test_a_script_using_the_adapter_exits_without_noise(url: str) -> None:
    """Nothing on stderr at interpreter exit: the factory closes its ledger once, so
    the library's ``Application.__del__`` closing it again does nothing. (An
    application still referenced from module globals at exit makes the library's
    ``__del__`` print an ignored TypeError, with its own persistence modules too: see
    README.md.)"""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_QUIET_EXIT), url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_an_applications_notifications_are_its_tenants_aggregate_events_only(url: str) -> None:
    """Agents' events and other tenants' aggregates share the log; an Application's
    notification log holds neither (they would leak, and a follower would stop at a
    topic it cannot resolve)."""
    with ledger.connect(url) as led:
        led.tenant("usr_secret").start_run(session_id="s").message_received(content="my secret")
    env = {"PERSISTENCE_MODULE": "ledger.recorder", "LEDGER_URL": url}
    bank_a = Bank(env={**env, "LEDGER_TENANT": "tenant_a"})
    bank_b = Bank(env={**env, "LEDGER_TENANT": "tenant_b"})
    try:
        bank_a.open("ada")
        bob = bank_b.open("bob")
        bank_b.deposit(bob, 5)
        recorder = bank_b.recorder
        assert recorder.store.settle()  # nothing else on the server holds the horizon
        seen = recorder.select_notifications(start=None, limit=50)
        assert [(n.originator_id, n.originator_version) for n in seen] == [(bob, 1), (bob, 2)]
        assert recorder.max_notification_id() == seen[-1].id
        assert all(b"secret" not in n.state for n in seen)
    finally:
        bank_a.close()
        bank_b.close()


def test_tenants_systems_of_the_same_applications_follow_apart(url: str) -> None:
    """Each tenant's follower tracks its own leader: same application names, one log
    that also holds agent runs, and no follower skips or sees the other's events."""
    with ledger.connect(url) as led:
        led.tenant("usr_x").start_run(session_id="s").message_received(content="hi")
    deposits = {}
    for tenant, amounts in (("tenant_a", (1, 2, 3)), ("tenant_b", (4,))):
        Tally.deposits = 0
        env = {"PERSISTENCE_MODULE": "ledger.recorder", "LEDGER_URL": url, "LEDGER_TENANT": tenant}
        runner = SingleThreadedRunner(System(pipes=[[Bank, Tally]]), env=env)
        runner.start()
        try:
            bank = runner.get(Bank)
            account_id = bank.open(tenant)
            for amount in amounts:
                bank.deposit(account_id, amount)
            last = bank.recorder.max_notification_id()
            assert runner.get(Tally).recorder.max_tracking_id("Bank") == last
            deposits[tenant] = Tally.deposits
        finally:
            runner.stop()
    assert deposits == {"tenant_a": 3, "tenant_b": 1}
