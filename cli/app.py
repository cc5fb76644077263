"""The ``ledger`` command line (typer). Thin: parse, call the packages, print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import ledger
from cli import render
from ledger.jsonl import append_jsonl

app = typer.Typer(
    name="ledger",
    no_args_is_help=True,
    add_completion=False,
    help="Record what AI agents do; replay, verify and audit it.",
    pretty_exceptions_enable=False,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="LEDGER_URL",
        help="Ledger URL: postgresql://..., sqlite:///path.db or memory:// [default: sqlite:///ledger.db]",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
UserOption = Annotated[str | None, typer.Option("--user", help="Only this tenant (user_id).")]


class State:
    url: str | None = None


state = State()


@app.callback()
def _main(
    url: UrlOption = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    state.url = url


def _connect() -> ledger.Ledger:
    return ledger.connect(state.url)


@app.command()
def init() -> None:
    """Create or migrate the ledger's schema (safe to run again, and from many processes)."""
    with _connect() as led:
        render.out.print(f"ledger ready: {led.backend} store at {led.settings.url}")


@app.command()
def append(
    source: Annotated[str, typer.Argument(help="JSONL file, or - for standard input.")] = "-",
    json: JsonFlag = False,
) -> None:
    """Append events from JSONL: every line is validated first, then all are written or none."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if not path.is_file():
            raise ledger.InvalidEvent(f"no such file: {source}")
        lines = path.read_text(encoding="utf-8").splitlines()
    with _connect() as led:
        summary = append_jsonl(led.store, lines, led.settings.max_event_bytes)
    if json:
        render.print_json(summary)
    else:
        render.out.print(f"appended {summary.events} events to {len(summary.runs)} runs")


@app.command()
def events(
    run_id: Annotated[str, typer.Argument(help="The run to show.")],
    user: UserOption = None,
    json: JsonFlag = False,
) -> None:
    """Show a run's stored events in order."""
    with _connect() as led:
        found = led.tenant(user).events(run_id) if user else led.auditor().events(run_id)
    if json:
        render.print_json(found)
    else:
        render.events_table(found)


@app.command()
def runs(
    user: UserOption = None,
    session: Annotated[str | None, typer.Option("--session", help="Only this session.")] = None,
    json: JsonFlag = False,
) -> None:
    """List runs, oldest first."""
    with _connect() as led:
        found = led.tenant(user).runs(session) if user else led.auditor().runs(None, session)
    if json:
        render.print_json(found)
    else:
        render.runs_table(found)


@app.command()
def verify(
    user: UserOption = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    json: JsonFlag = False,
) -> None:
    """Recompute every hash chain in scope; exit 1 naming the first bad event of each bad run."""
    with _connect() as led:
        report = led.auditor().verify(user, run)
    if json:
        render.print_json(
            {
                "ok": report.ok,
                "runs": report.runs,
                "events": report.events,
                "problems": report.problems,
            }
        )
    else:
        render.verify_summary(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Record a sample agent run (from recorded model/tool fixtures) and print it back."""
    from cli.demo import record_demo_run

    with _connect() as led:
        run_id = record_demo_run(led)
        found = led.auditor().events(run_id)
    render.out.print(f"recorded run {run_id} in {led.settings.url}\n")
    render.events_table(found)
    render.out.print(f"\nnext: ledger events {run_id} --json   |   ledger runs   |   ledger verify")


def exit_code(exc: ledger.LedgerError) -> int:
    """CONTRACT.md exit codes: 2 for bad input, 1 for everything that failed."""
    return 2 if isinstance(exc, ledger.InvalidEvent) else 1


def main() -> None:
    """Entry point of the ``ledger`` console script: one clear line per error, no traceback."""
    debug = "--debug" in sys.argv
    try:
        app()  # standalone: usage errors print help and exit 2
    except ledger.LedgerError as exc:
        if debug:
            raise
        render.err.print(f"error: {exc}", markup=False)
        sys.exit(exit_code(exc))
