"""The error hierarchy of CONTRACT.md: callers catch meaning, not strings."""

from __future__ import annotations

import os


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class ConcurrencyError(LedgerError):
    """An append stated a version that is no longer the run's head; nothing was written."""


class NotFound(LedgerError):
    """No such run, session or event for this tenant (also for another tenant's ids)."""


class InvalidEvent(LedgerError):
    """Bad input at the boundary: names the field (and line, for JSONL); nothing was written."""


class IntegrityError(LedgerError):
    """The hash chain does not verify: names the run and version of the first bad event."""

    def __init__(self, message: str, *, run_id: str | None = None, version: int | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.version = version


class StoreUnavailable(LedgerError):
    """The store could not be reached or its schema could not be prepared.

    ``in_doubt``: the connection was lost with a request on the wire, so a write may
    have been stored (the append API settles that itself: ``ledger.settle``)."""

    def __init__(self, message: str, *, in_doubt: bool = False) -> None:
        super().__init__(message)
        self.in_doubt = in_doubt


class AccessDenied(LedgerError):
    """The database refused: the login role may not do this (e.g. act as the auditor
    without being granted ``ledger_auditor``). Names the role to grant."""


class KeyErased(LedgerError):
    """An append was sealed with a key that has been destroyed (the user was forgotten
    meanwhile); nothing was written. ``Run`` retries once with the user's new key."""


class NotErasable(LedgerError):
    """``forget`` cannot make a user's content unrecoverable: it is stored in the clear
    (written with encryption off; no key covers it), or a destroyed key's old bytes are
    still in a SQLite WAL another connection is reading, or (Postgres) a transaction
    that began before the keys were destroyed is still running, so the erasure cannot
    yet be recorded after it. Says what was done and what to do."""


class InvalidSetting(LedgerError, ValueError):
    """A setting (an argument of ``connect`` or its environment variable) has a value
    it cannot take: names the setting, the value and what it accepts."""


class RunIdTaken(InvalidEvent):
    """A new run asked for a run_id that is already registered to another tenant."""


class RunEnded(InvalidEvent):
    """An event for a run that has ended (``run_completed`` or ``run_failed`` is its last
    event): a run records nothing after it ends; nothing was written."""


class RebuildInProgress(LedgerError):
    """Another live runner holds the lease on this read model's rebuild (or took it
    over from this one): nothing was changed. Wait for it to finish, or for its lease to
    run out if it was killed."""


class ProjectorOutdated(LedgerError):
    """This code's projector is of an earlier version than the read model stored (a
    runner of an earlier release, during a rolling deploy): it neither applies to it nor
    rebuilds it back; nothing was changed. Upgrade that runner, or stop it."""


class ReadModelCorrupt(LedgerError):
    """A stored read-model document (or one of its pages) does not decode: names the
    read model and the document, and the command that rebuilds it from the log."""


def shown(text: str | os.PathLike[str]) -> str:
    """``text`` (a path, say) as a message shows it on one line: as it is when every
    character of it prints, else in Python's escaped form (quoted, with ``\\n``,
    ``\\x1b``, ...), as a name the user gave or a file holds must never split an error
    into lines nor send escape codes to the terminal it is printed on."""
    plain = os.fspath(text)
    return plain if plain.isprintable() else repr(plain)
