"""``ledger forget --user U``: erasure by crypto-shredding (see ledger.erasure)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli import render
from cli.context import JsonFlag, connect, identifier
from ledger.errors import NotErasable

if TYPE_CHECKING:
    from ledger.erasure import Erasure


def forget_command(
    user: Annotated[
        str,
        typer.Option("--user", help="The user (tenant) to forget.", callback=identifier("--user")),
    ],
    reason: Annotated[
        str | None,
        typer.Option(
            help="Why (kept in the erasure record in the clear, for good: a ticket id, "
            "never personal data)."
        ),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """Erase a user's personal content by destroying their keys; the log stays verifiable."""
    with connect() as led:
        erasure = led.forget(user, reason)
    if json:
        render.print_json(erasure)
    else:
        _summary(erasure)
    if erasure.plain_events:
        raise NotErasable(
            f"user {erasure.user_id!r} is only partly erased: {erasure.plain_events} of their "
            "events hold personal content stored in the clear (written with encryption off, "
            "before errors and metadata were sealed, or aggregate state stored through the "
            "eventsourcing recorder), which no key covers. Remove it "
            "with the ledger's data; keep encryption on so new content can be forgotten"
        )


def _summary(erasure: Erasure) -> None:
    keys = len(erasure.destroyed_keys)
    forgot = "partly forgot" if erasure.plain_events else "forgot"
    render.out.print(
        f"{forgot} {erasure.user_id}: destroyed {keys} key{'s' if keys != 1 else ''}; "
        f"the erasure is recorded in run {erasure.run_id}",
        markup=False,
    )
    if not keys and not erasure.plain_events:
        render.out.print(
            "no live key: nothing of this user was stored encrypted since the last erasure",
            markup=False,
        )
