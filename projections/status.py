"""Where each projector stands: its position, the log's head, and the lag between them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from ledger.connection import Ledger
from ledger.records import START
from projections.projector import Projector
from projections.storage import storage_for
from projections.storage.base import BUILD_SUFFIX


class ProjectorStatus(BaseModel):
    """One projector, as ``ledger projections status`` shows it."""

    name: str
    version: int  # the version this code projects
    stored_version: int | None  # the version its read model was built with
    generation: int | None
    position: int  # global position of the last event applied (0: none yet)
    tx_id: int
    head_position: int | None  # the last committed event of the log
    lag_events: int
    lag_seconds: float | None  # age of the oldest event not applied yet
    owner: str | None  # the runner that holds or last held its lease
    lease_until: datetime | None
    leased: bool = False  # a runner holds its lease now (False: none, or it expired)
    updated_at: datetime | None
    needs_rebuild: bool  # its read model is of an earlier version: the runner rebuilds it
    #: Its read model is of a later version (a later release's) than this code's
    #: projector: runners of this release leave it alone (upgrade them).
    outdated: bool = False
    skipped: int = 0  # stored events it could not fold since it was built (in the log)
    # A rebuild under way (its build row leased now): the position it has reached, and
    # who runs it. None: no rebuild is running (a killed one's row does not count).
    rebuild_position: int | None = None
    rebuild_owner: str | None = None


def status(ledger: Ledger, projectors: Sequence[Projector[Any]]) -> list[ProjectorStatus]:
    """The status of every projector in ``projectors``."""
    storage = storage_for(ledger.store)
    log, _ = ledger.reads_for(None)  # the whole log's head and lag: read across tenants
    now = datetime.now(UTC)
    out = []
    for projector in projectors:
        row = storage.projector(projector.name)
        build = storage.projector(projector.name + BUILD_SUFFIX)
        building = build if build is not None and build.held(now) else None
        cursor = row.cursor if row is not None else START
        lag = log.lag(cursor)
        out.append(
            ProjectorStatus(
                name=projector.name,
                version=projector.version,
                stored_version=None if row is None else row.version,
                generation=None if row is None else row.generation,
                position=cursor.position,
                tx_id=cursor.tx_id,
                head_position=None if lag.head is None else lag.head.position,
                lag_events=lag.pending,
                lag_seconds=(
                    None
                    if lag.oldest_pending_at is None
                    else max(0.0, (now - lag.oldest_pending_at).total_seconds())
                ),
                owner=None if row is None else row.owner,
                lease_until=None if row is None else row.lease_until,
                leased=row is not None and row.held(now),
                updated_at=None if row is None else row.updated_at,
                needs_rebuild=row is not None and row.version < projector.version,
                outdated=row is not None and row.version > projector.version,
                skipped=0 if row is None else row.skipped,
                rebuild_position=None if building is None else building.cursor.position,
                rebuild_owner=None if building is None else building.owner,
            )
        )
    return out
