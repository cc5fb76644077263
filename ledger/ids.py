"""Identifiers: validation at the boundary and generation of new run ids."""

from __future__ import annotations

import os
import time

from ledger.errors import InvalidEvent

MAX_ID_LENGTH = 200


def check_id(field: str, value: object) -> str:
    """``value`` if it is a usable identifier, else InvalidEvent naming ``field``."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{field} must be a string, got {type(value).__name__}")
    if not value or not value.strip():
        raise InvalidEvent(f"{field} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{field} is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidEvent(f"{field} must not contain control characters (NUL, newline, ...)")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidEvent(
                f"{field} must be valid Unicode (no lone surrogates such as \\ud800)"
            ) from None
    return value


def new_run_id() -> str:
    """A fresh run id: ``run_`` + 48-bit millisecond time + 80 random bits (sorts by time)."""
    return f"run_{int(time.time() * 1000):012x}{os.urandom(10).hex()}"
