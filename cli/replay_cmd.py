"""``ledger replay``, ``ledger fork`` and ``ledger tail``: debugging runs."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Annotated

import typer

from cli import render, timeline
from cli.context import JsonFlag, RunOption, TenantOption, UserOption, connect
from ledger.connection import Ledger
from ledger.errors import InvalidEvent, StoreUnavailable
from ledger.personal import reveal_event
from ledger.records import LogCursor
from ledger.retry import Backoff
from ledger.tenant import readable_event
from replay.diff import diff
from replay.state import lineage, replay, resolve


def _point(at: int | None, at_time: str | None) -> int | datetime | None:
    if at is not None and at_time is not None:
        raise InvalidEvent("give --at VERSION or --at-time ISO, not both")
    if at_time is None:
        return at
    try:
        return datetime.fromisoformat(at_time.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(
            f"--at-time {at_time!r} is not an ISO 8601 time (e.g. 2025-03-15T10:22:31Z)"
        ) from None


def replay_command(
    run_id: Annotated[str, typer.Argument(help="The run to replay.")],
    user: UserOption = None,
    at: Annotated[int | None, typer.Option("--at", help="Stop at this version.")] = None,
    at_time: Annotated[
        str | None,
        typer.Option(
            "--at-time", help="Stop at the last event recorded at or before this ISO time."
        ),
    ] = None,
    from_: Annotated[
        int | None, typer.Option("--from", min=1, help="Diff: from this version.")
    ] = None,
    to: Annotated[int | None, typer.Option("--to", min=1, help="Diff: to this version.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Show whole contents.")] = False,
    json: JsonFlag = False,
) -> None:
    """Rebuild a run at any point: a timeline, then the state there ("what did it know?")."""
    with connect() as led:
        # Without --user the read crosses tenants: only as the auditor.
        store, keyring = led.reads_for(user)
        if from_ is not None or to is not None:
            if at is not None or at_time is not None:
                raise InvalidEvent(
                    "give --at or --at-time for one point, or --from and --to for what "
                    "changed between two, not both"
                )
            before = replay(store, user, run_id, from_ or 1, keyring)
            after = replay(store, user, run_id, to, keyring)
            change = diff(before, after)
            if json:
                render.print_json(change.model_dump(mode="json"))
            else:
                timeline.diff_summary(change)
            return
        point = _point(at, at_time)
        one_read = keyring.for_read()
        events = [reveal_event(e, one_read) for e in lineage(store, user, run_id)]
        cut = resolve(events, run_id, point)
        state = replay(store, user, run_id, point, one_read)
    if json:
        render.print_json(state.model_dump(mode="json"))
        return
    timeline.timeline(events, cut, full)
    timeline.summary(state)


def fork_command(
    run_id: Annotated[str, typer.Argument(help="The run to fork.")],
    at: Annotated[int, typer.Option("--at", help="Keep the parent's history up to here.")],
    user: TenantOption,
    json: JsonFlag = False,
) -> None:
    """Start a new run whose history up to --at is the parent's; the parent is untouched."""
    with connect() as led:
        child = led.tenant(user).fork(run_id, at)
    if json:
        render.print_json(
            {
                "run_id": child.run_id,
                "parent_run_id": run_id,
                "parent_version": at,
                "session_id": child.session_id,
            }
        )
    else:
        render.out.print(f"forked {run_id} at version {at} into {child.run_id}")


def tail_command(
    user: UserOption = None,
    run: RunOption = None,
    poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 0.2,
    follow_for: Annotated[
        float | None,
        typer.Option("--for", help="Stop after this many seconds (default: until Ctrl-C)."),
    ] = None,
) -> None:
    """Follow new events live, as they are committed (riding out database outages)."""
    deadline = None if follow_for is None else time.monotonic() + follow_for
    render.log_warnings()
    retry = Backoff(logging.getLogger("ledger.tail"))
    with connect() as led:
        store, keyring = led.reads_for(user)
        cursor = _head(led)
        try:
            while deadline is None or time.monotonic() < deadline:
                try:
                    records = store.read_log(cursor, 500, user_id=user)
                except StoreUnavailable as exc:
                    wait = retry.after(exc)
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.monotonic()))
                    time.sleep(wait)
                    continue
                retry.succeeded()
                batch = keyring.for_read()  # keys looked up once per batch shown
                for r in records:
                    if run is None or r.run_id == run:
                        e = readable_event(r, batch)
                        render.out.print(
                            f"{e.recorded_at:%H:%M:%S.%f} {e.user_id} "
                            f"{e.run_id}/{e.version} {e.type} {render.preview(e)}",
                            markup=False,
                        )
                if records:
                    cursor = records[-1].cursor
                else:
                    time.sleep(poll)
        except KeyboardInterrupt:
            pass


def _head(led: Ledger) -> LogCursor:
    from ledger.records import START

    head = led.store.lag(START).head
    return head if head is not None else START
