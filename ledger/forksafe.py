"""Locks a forked child must not inherit held.

``os.fork`` copies only the calling thread: a lock another thread held at that instant
stays held in the child for good, and the child's first use of it hangs. The ledger's
in-process caches (keys, opened tokens) guard their dicts with a lock held for
microseconds at a time, so this is rare, not impossible; a preloading server or a
forking worker pool forks whenever it likes. Objects that hold such a lock in
``_lock`` register here and get a new one in every child.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

_holders: weakref.WeakSet[Any] = weakref.WeakSet()


def fresh_lock(holder: Any) -> threading.Lock:
    """A lock for ``holder._lock``, replaced with a new one in every forked child."""
    _holders.add(holder)
    return threading.Lock()


def shares_lock(holder: Any) -> None:
    """``holder`` (a copy of a registered object) keeps using the lock it copied: in a
    child it gets the same new lock as every other holder of that lock."""
    _holders.add(holder)


class Lock:
    """A lock to hold with ``with`` (a module's, say) that every forked child gets new."""

    def __init__(self) -> None:
        self._lock = fresh_lock(self)

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _renew() -> None:
    renewed: dict[int, threading.Lock] = {}  # by the inherited lock: who shared, shares
    for holder in list(_holders):
        holder._lock = renewed.setdefault(id(holder._lock), threading.Lock())


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork either
    os.register_at_fork(after_in_child=_renew)
