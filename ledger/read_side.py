"""The seam between the write side and the read side.

``Tenant.conversation()``, ``run_metadata()``, ``runs()`` and ``memories()`` are part of
the embedded API, but the read models live in ``projections``, which depends on
``ledger`` and not the other way round. The read side registers itself under the entry
point group ``ledger.read_side`` (see pyproject.toml); the ledger finds it there, so the
dependency direction of DESIGN.md holds without a single import of ``projections``.
"""

from __future__ import annotations

from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from ledger.errors import InvalidEvent, LedgerError

if TYPE_CHECKING:
    from ledger.connection import Ledger
    from ledger.personal import Keyring
    from ledger.store import EventStore
    from ledger.tenant import Tenant

GROUP = "ledger.read_side"

#: How a listing of runs may be ordered: ``created`` oldest first (the default order of
#: registration, by the first event's time when asked for), the others largest first.
RUN_ORDERS = ("created", "cost", "tokens", "wall_time")


def check_listing(order_by: str | None, limit: int | None) -> None:
    """InvalidEvent unless ``order_by`` is one of RUN_ORDERS (or None) and ``limit`` a
    count (or None)."""
    if order_by is not None and order_by not in RUN_ORDERS:
        raise InvalidEvent(f"order_by must be one of {', '.join(RUN_ORDERS)}; got {order_by!r}")
    check_count("limit", limit)


def check_count(name: str, value: int | None) -> None:
    """InvalidEvent unless ``value`` is a whole number >= 0 (or None)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InvalidEvent(f"{name} must be a whole number >= 0; got {value!r}")


REPLAY_GROUP = "ledger.replay"


class ReadSide(Protocol):
    """What the tenant handle asks of the read models (all scoped to ``tenant``), as
    the tenant may read them: sealed content opened with the ledger's keyring."""

    def conversation(self, tenant: Tenant, session_id: str, last: int | None = None) -> Any:
        """The ConversationState of one session (its ``last`` messages, if given)."""

    def run_metadata(self, tenant: Tenant, run_id: str) -> Any:
        """The RunMetadata of one run."""

    def runs(
        self,
        tenant: Tenant,
        session_id: str | None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """RunMetadata of the tenant's runs, oldest first (or by ``order_by``), the
        first ``limit`` of them."""

    def memories(self, tenant: Tenant, namespace: str | None) -> list[Any]:
        """The tenant's current memories."""

    def runs_across(
        self,
        store: EventStore,
        keyring: Keyring,
        user_id: str | None,
        session_id: str | None,
        order_by: str | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """RunMetadata of every tenant's runs (or one's), read through ``store``,
        opened with ``keyring``; ordered and limited as ``runs``."""


class Replayer(Protocol):
    """What the tenant and run handles ask of the replay engine."""

    def replay(self, user_id: str | None, run_id: str, at: int | datetime | None) -> Any:
        """RunState of a run at a version or time (None: its head), personal content
        opened with the user's key (or shown as erased)."""

    def fork(self, tenant: Tenant, run_id: str, at: int) -> Any:
        """A new run in the same session whose history up to ``at`` is the parent's."""


def _load(group: str, ledger: Ledger) -> Any:
    found = entry_points(group=group, name="default")
    if not found:
        raise LedgerError(
            f"nothing is installed for entry point group {group!r}; "
            "reinstall the run-ledger package: pip install -e ."
        )
    return next(iter(found)).load()(ledger)


def load_read_side(ledger: Ledger) -> ReadSide:
    """The installed read side, bound to ``ledger``."""
    read_side: ReadSide = _load(GROUP, ledger)
    return read_side


def load_replayer(ledger: Ledger) -> Replayer:
    """The installed replay engine, bound to ``ledger``."""
    replayer: Replayer = _load(REPLAY_GROUP, ledger)
    return replayer
