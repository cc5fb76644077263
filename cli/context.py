"""What every command shares: the ledger URL option, common flags, and connecting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

import ledger
from ledger.ids import check_id


def identifier(option: str) -> Callable[[str | None], str | None]:
    """A typer callback for an option naming a tenant, session or run: its value if it
    is a usable id (``ledger.ids.check_id``), else InvalidEvent naming the option (exit
    2). Checked when parsed, so an empty ``--user ""`` (an unset shell variable) is an
    error, never read as "no --user", which would mean every tenant."""

    def check(value: str | None) -> str | None:
        return None if value is None else check_id(option, value)

    return check


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
UserOption = Annotated[
    str | None,
    typer.Option("--user", help="Only this tenant (user_id).", callback=identifier("--user")),
]
TenantOption = Annotated[
    str, typer.Option("--user", help="The tenant (user_id).", callback=identifier("--user"))
]
SessionOption = Annotated[
    str | None,
    typer.Option("--session", help="Only this session.", callback=identifier("--session")),
]
RunOption = Annotated[
    str | None, typer.Option("--run", help="Only this run.", callback=identifier("--run"))
]


class State:
    """Options given before the command (``ledger --url ... COMMAND``)."""

    url: str | None = None


state = State()


def connect() -> ledger.Ledger:
    """The ledger named by ``--url``, ``$LEDGER_URL`` or the SQLite default."""
    return ledger.connect(state.url)
