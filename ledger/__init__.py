"""Run Ledger: an event-sourced run ledger for AI agents.

Example::

    import ledger

    led = ledger.connect()  # $LEDGER_URL, else sqlite:///ledger.db
    run = led.tenant("usr_xyz").start_run(session_id="sess_1", model="gpt-4o")
    with run.turn():
        run.message_received(content="hi")
"""

from ledger.auditor import Auditor
from ledger.connection import Ledger, connect
from ledger.erasure import Erasure
from ledger.errors import (
    AccessDenied,
    ConcurrencyError,
    IntegrityError,
    InvalidEvent,
    InvalidSetting,
    KeyErased,
    LedgerError,
    NotErasable,
    NotFound,
    ProjectorOutdated,
    ReadModelCorrupt,
    RebuildInProgress,
    RunEnded,
    RunIdTaken,
    StoreUnavailable,
)
from ledger.events import Event
from ledger.integrity import Problem, VerifyReport
from ledger.run import Run
from ledger.tenant import RunSummary, Tenant

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "Auditor",
    "ConcurrencyError",
    "Erasure",
    "Event",
    "IntegrityError",
    "InvalidEvent",
    "InvalidSetting",
    "KeyErased",
    "Ledger",
    "LedgerError",
    "NotErasable",
    "NotFound",
    "Problem",
    "ProjectorOutdated",
    "ReadModelCorrupt",
    "RebuildInProgress",
    "Run",
    "RunEnded",
    "RunIdTaken",
    "RunSummary",
    "StoreUnavailable",
    "Tenant",
    "VerifyReport",
    "connect",
]
