"""``ledger forget --user U``: erasure by crypto-shredding (see ledger.erasure)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import render
from cli.context import JsonFlag, connect, identifier


def forget_command(
    user: Annotated[
        str,
        typer.Option("--user", help="The user (tenant) to forget.", callback=identifier("--user")),
    ],
    reason: Annotated[
        str | None, typer.Option(help="Why (kept in the erasure record, e.g. a ticket id).")
    ] = None,
    json: JsonFlag = False,
) -> None:
    """Erase a user's personal content by destroying their keys; the log stays verifiable."""
    with connect() as led:
        erasure = led.forget(user, reason)
    if json:
        render.print_json(erasure)
        return
    keys = len(erasure.destroyed_keys)
    render.out.print(
        f"forgot {erasure.user_id}: destroyed {keys} key{'s' if keys != 1 else ''}; "
        f"the erasure is recorded in run {erasure.run_id}",
        markup=False,
    )
    if not keys:
        render.out.print(
            "no live key: nothing of this user was stored encrypted since the last erasure "
            "(with encryption off, content is stored in the clear and cannot be shredded)",
            markup=False,
        )
