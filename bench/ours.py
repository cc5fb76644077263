"""Our writers, for any store URL: the public API, and the store alone.

Each writer works on its own runs (``runs`` of them, turn ``n`` goes to run
``n % runs``) in its own process; see ``bench.runner`` for how they are driven.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import ledger
from bench.workload import api_turn, encoded_turn
from ledger.chain import Unsealed, seal
from ledger.events import CATALOG
from ledger.records import RunAppend


def prebuilt(
    led: ledger.Ledger, user_id: str, session: str, runs: int, total: int
) -> list[RunAppend]:
    """Start ``runs`` runs, then seal every turn's events in advance, chained per run."""
    tenant = led.tenant(user_id)
    heads = [
        led.store.run_head(user_id, tenant.start_run(session_id=session).run_id)
        for _ in range(runs)
    ]
    state = [(h.run_id, h.version, h.hash) for h in heads if h is not None]
    out: list[RunAppend] = []
    for n in range(total):
        run_id, version, head_hash = state[n % runs]
        now = datetime.now(UTC)
        unsealed = [
            Unsealed(type=t, schema=CATALOG.payload_type(t).SCHEMA, occurred_at=now, payload=p)
            for t, p in encoded_turn(n)
        ]
        sealed = seal(user_id, session, run_id, version, head_hash, unsealed)
        out.append(
            RunAppend(
                user_id=user_id,
                session_id=session,
                run_id=run_id,
                expected_version=version,
                expected_hash=head_hash,
                events=sealed,
            )
        )
        state[n % runs] = (run_id, sealed[-1].version, sealed[-1].hash)
    return out


class OursApi:
    """``ledger.connect(url)`` -> tenant -> start_run -> ``with run.turn(): 5 events``."""

    def __init__(self, index: int, url: str, runs: int = 4, **_: Any) -> None:
        self.led = self.connect(url)
        tenant = self.led.tenant(f"usr_w{index}")
        self.runs = [
            tenant.start_run(session_id=f"sess_{index}", model="gpt-4o") for _ in range(runs)
        ]

    def connect(self, url: str) -> ledger.Ledger:
        """The ledger this writer appends to (default settings)."""
        return ledger.connect(url)

    def turn(self, n: int) -> None:
        api_turn(self.runs[n % len(self.runs)], n)

    def close(self) -> None:
        self.led.close()


class OursApiUnprotected(OursApi):
    """The same API with encryption off and row-level security bypassed (statements run
    as the login role, no tenant set): the "off" side of what protection costs."""

    def connect(self, url: str) -> ledger.Ledger:
        led = ledger.connect(url, encrypt=False)
        led.store._scope = lambda user_id: None  # type: ignore[attr-defined,method-assign]
        return led


class OursStore:
    """The store alone: ``store.append([RunAppend])`` of turns sealed before the clock runs."""

    def __init__(self, index: int, url: str, total: int, runs: int = 4, **_: Any) -> None:
        self.led = ledger.connect(url)
        self.appends = prebuilt(self.led, f"usr_w{index}", f"sess_{index}", runs, total)

    def turn(self, n: int) -> None:
        self.led.store.append([self.appends[n]])

    def close(self) -> None:
        self.led.close()
