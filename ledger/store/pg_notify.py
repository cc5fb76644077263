"""When appends wake live readers on Postgres: a throttle with a trailing notice.

Every NOTIFY is a transaction of its own (one inside the append's transaction would
hold Postgres's cluster-wide notify lock through the commit, serialising writers), and
it wakes every listening backend and reader. At 16 writers on 2 cores, one notice per
writer every 20 ms cost a quarter of the append throughput. So a store sends at most
one notice per ``interval``: the first append after a quiet spell notifies at once (in
its own round trip), and appends inside the interval are covered by one trailing
notice sent when the interval ends, so a burst's last append is never left for the
readers' poll to find.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable


class NoticeThrottle:
    """Decides, after each committed append, whether to notify now; sends the trailing
    notice itself (from a timer thread, through ``send``)."""

    def __init__(self, send: Callable[[], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._last = float("-inf")  # monotonic time of the last notice
        self._trailing: threading.Timer | None = None
        self._closed = False

    def due(self, interval: float) -> bool:
        """True if the caller's append should notify itself (and it must, once it has
        committed); False if it should call ``later`` once it has committed."""
        now = time.monotonic()
        with self._lock:
            if now - self._last >= interval:
                self._last = now
                return True
            return False

    def later(self, interval: float) -> None:
        """A committed append left un-notified: make sure a notice follows by the end
        of the current interval (one timer covers every such append)."""
        with self._lock:
            if self._trailing is not None or self._closed:
                return
            delay = max(0.0, self._last + interval - time.monotonic())
            timer = threading.Timer(delay, self._send_trailing)
            timer.daemon = True
            self._trailing = timer
            timer.start()

    def _send_trailing(self) -> None:
        with self._lock:
            self._trailing = None
            if self._closed:
                return
            self._last = time.monotonic()
        self._send_quietly()

    def _send_quietly(self) -> None:
        # Best effort: readers also poll (Listener's timeout), so a lost notice delays
        # them, it loses nothing.
        with contextlib.suppress(Exception):
            self._send()

    def close(self) -> None:
        """Send a pending trailing notice now (a process that exits right after its
        last append still wakes the readers); none is sent after this."""
        with self._lock:
            self._closed = True
            pending, self._trailing = self._trailing, None
        if pending is not None:
            pending.cancel()
            self._send_quietly()
