"""Projector processes for the crash and concurrency tests (importable, so 'spawn' works)."""

from __future__ import annotations

import threading
import time

import ledger
from projections.catalog import default_projectors
from projections.projector import Projector
from projections.runner import ProjectorRunner
from tests.tally import TALLY, TALLY_V2


def projectors() -> list[Projector[object]]:
    """The projectors these tests run: the three real read models and a counting one."""
    return [*default_projectors(), TALLY]  # type: ignore[list-item]


def catch_up_until_killed(url: str, batch_size: int, lease_seconds: float) -> None:
    """Catch up in small batches, forever (the test kills this process)."""
    with ledger.connect(url) as led:
        runner = ProjectorRunner(
            led, projectors(), batch_size=batch_size, lease_seconds=lease_seconds
        )
        while True:
            if runner.step() == 0:
                time.sleep(0.01)


def run_live_for(url: str, seconds: float, lease_seconds: float) -> None:
    """Follow the log live for ``seconds``, then shut down cleanly."""
    with ledger.connect(url) as led:
        runner = ProjectorRunner(led, projectors(), batch_size=200, lease_seconds=lease_seconds)
        stop = threading.Event()
        threading.Timer(seconds, stop.set).start()
        runner.run(stop, poll_seconds=0.05)


def rebuild_until_killed(url: str, lease_seconds: float) -> None:
    """Rebuild every read model in small, slow batches, over and over (the test kills
    this process mid-way)."""
    with ledger.connect(url) as led:
        runner = ProjectorRunner(
            led, projectors(), rebuild_batch_size=20, lease_seconds=lease_seconds
        )
        while True:
            runner.rebuild_all(progress=lambda events: time.sleep(0.02))


def run_tally_live_for(url: str, version: int, seconds: float, lease_seconds: float) -> None:
    """Follow the log live with the tally of ``version`` (1 or 2: a runner of an earlier
    or of the next release) for ``seconds``, then shut down cleanly."""
    projector = TALLY if version == 1 else TALLY_V2
    with ledger.connect(url) as led:
        runner = ProjectorRunner(led, [projector], batch_size=20, lease_seconds=lease_seconds)
        stop = threading.Event()
        threading.Timer(seconds, stop.set).start()
        runner.run(stop, poll_seconds=0.05)
