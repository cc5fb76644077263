"""When appends wake live readers on Postgres: a throttle with a trailing notice.

Every NOTIFY is a transaction of its own (one inside the append's transaction would
hold Postgres's cluster-wide notify lock through the commit, serialising writers), and
it wakes every listening backend and reader. At 16 writers on 2 cores, one notice per
writer every 20 ms cost a quarter of the append throughput. So a store sends at most
one notice per ``interval``: the first append after a quiet spell notifies at once (in
its own round trip), and the appends inside the interval are covered by the next
append that is due or, if none comes, by one trailing notice shortly after the
interval ends: a burst's last append is never left for the readers' poll to find.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable


class NoticeThrottle:
    """Decides, after each committed append, whether to notify now; sends the trailing
    notice itself, through ``send``, from one background thread per throttle.

    The trailing notice waits ``GRACE`` of an interval past the interval's end: a
    writer still writing then has an append due by then, which notifies inline (in
    its own round trip), so the thread only ever sends for a writer that went quiet.
    """

    #: How far past the interval's end (as a fraction of it) the trailing notice waits.
    GRACE = 0.25

    def __init__(self, send: Callable[[], None]) -> None:
        self._send = send
        self._cond = threading.Condition()
        self._last = float("-inf")  # monotonic time of the last notice
        self._pending = False  # an append committed since then went un-notified
        self._interval = 0.0
        self._thread: threading.Thread | None = None
        self._closed = False

    def due(self, interval: float) -> bool:
        """True if the caller's append should notify itself (and it must, once it has
        committed); False if it should call ``later`` once it has committed."""
        now = time.monotonic()
        with self._cond:
            if now - self._last >= interval:
                self._last = now
                self._pending = False
                return True
            return False

    def later(self, interval: float) -> None:
        """A committed append left un-notified: make sure a notice follows, by the end
        of the current interval and its grace at the latest."""
        with self._cond:
            if self._closed:
                return
            was_pending, self._pending, self._interval = self._pending, True, interval
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(
                    target=self._trail, name="ledger-notices", daemon=True
                )
                self._thread.start()
            elif not was_pending:
                self._cond.notify()

    def _trail(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._pending:
                    self._cond.wait()
                    continue
                wait = self._last + self._interval * (1 + self.GRACE) - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._pending, self._last = False, time.monotonic()
                self._cond.release()
                try:
                    self._send_quietly()
                finally:
                    self._cond.acquire()

    def _send_quietly(self) -> None:
        # Best effort: readers also poll (Listener's timeout), so a lost notice delays
        # them, it loses nothing.
        with contextlib.suppress(Exception):
            self._send()

    def close(self) -> None:
        """Send a pending trailing notice now (a process that exits right after its
        last append still wakes the readers); none is sent after this."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, False
            self._cond.notify_all()
        if pending:
            self._send_quietly()
