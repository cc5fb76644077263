"""The append notifications' throttle (``ledger/store/pg_notify.py``), on its own."""

from __future__ import annotations

import threading
import time

from ledger.store.pg_notify import NoticeThrottle


class _Sent:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.event = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self.event.set()


def test_the_first_append_notifies_itself_and_a_burst_gets_one_trailing_notice() -> None:
    sent = _Sent()
    throttle = NoticeThrottle(sent)
    start = time.monotonic()
    assert throttle.due(0.3)  # the caller notifies
    for _ in range(5):  # inside the interval: covered by one notice at its end
        assert not throttle.due(0.3)
        throttle.later(0.3)
    assert sent.event.wait(2.0)
    time.sleep(0.4)
    assert len(sent.times) == 1
    assert 0.25 <= sent.times[0] - start < 2.0  # at the interval's end, not before
    assert throttle.due(0.3)  # the trailing notice started a new interval, now over
    throttle.close()


def test_close_sends_a_pending_notice_and_nothing_after() -> None:
    sent = _Sent()
    throttle = NoticeThrottle(sent)
    assert throttle.due(10.0)
    assert not throttle.due(10.0)
    throttle.later(10.0)
    throttle.close()
    assert len(sent.times) == 1  # flushed at once, not after 10 s
    throttle.later(0.0)
    time.sleep(0.2)
    assert len(sent.times) == 1


def test_a_failing_send_is_not_raised_in_the_timer_thread() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise OSError("server gone")

    throttle = NoticeThrottle(broken)
    assert throttle.due(0.05)
    throttle.later(0.05)
    time.sleep(0.3)
    assert calls == [1]
    throttle.later(0.05)  # the next interval schedules again
    time.sleep(0.3)
    assert calls == [1, 1]
    throttle.close()
