"""What every command shares: the ledger URL option, common flags, and connecting."""

from __future__ import annotations

from typing import Annotated

import typer

import ledger

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
UserOption = Annotated[str | None, typer.Option("--user", help="Only this tenant (user_id).")]


class State:
    """Options given before the command (``ledger --url ... COMMAND``)."""

    url: str | None = None


state = State()


def connect() -> ledger.Ledger:
    """The ledger named by ``--url``, ``$LEDGER_URL`` or the SQLite default."""
    return ledger.connect(state.url)
