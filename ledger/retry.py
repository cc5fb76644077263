"""Waiting out an unavailable store: what long-running readers (projector runners,
``ledger tail``) do between attempts."""

from __future__ import annotations

import logging
import random

from ledger.errors import StoreUnavailable


class Backoff:
    """How long to wait before trying the store again: 0.1 s doubling to 10 s, each wait
    drawn between half and all of that (readers that lost the same server do not come
    back in step). Logs the outage to ``log`` when it starts, each retry, and its end."""

    FIRST, LAST = 0.1, 10.0

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.delay = self.FIRST
        self.failures = 0

    def after(self, exc: StoreUnavailable) -> float:
        """Seconds to wait after ``exc``."""
        self.failures += 1
        wait = self.delay * random.uniform(0.5, 1.0)
        self.log.warning(
            "store unavailable (attempt %d, retrying in %.1fs): %s", self.failures, wait, exc
        )
        self.delay = min(self.delay * 2, self.LAST)
        return wait

    def succeeded(self) -> None:
        """The store answered: the next outage starts from the first wait again."""
        if self.failures:
            self.log.warning("store available again after %d failed attempts", self.failures)
            self.delay, self.failures = self.FIRST, 0
