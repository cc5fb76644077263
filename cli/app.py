"""The ``ledger`` command line (typer). Thin: parse, call the packages, print."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.exceptions import TyperException

import ledger
from cli import audit_cmd, context, forget_cmd, projections_cmd, render, replay_cmd
from cli.context import JsonFlag, RunOption, SessionOption, TenantOption, UserOption, connect
from ledger import digest as log_digest
from ledger.jsonl import append_jsonl, jsonl_lines
from projections.storage import storage_for

app = typer.Typer(
    name="ledger",
    no_args_is_help=True,
    add_completion=False,
    help="Record what AI agents do; replay, verify and audit it.",
    pretty_exceptions_enable=False,
)
app.add_typer(projections_cmd.app, name="projections")
app.add_typer(audit_cmd.app, name="audit")
app.command("replay")(replay_cmd.replay_command)
app.command("fork")(replay_cmd.fork_command)
app.command("tail")(replay_cmd.tail_command)
app.command("forget")(forget_cmd.forget_command)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="LEDGER_URL",
        help="Ledger URL: postgresql://..., sqlite:///path.db or memory:// [default: sqlite:///ledger.db]",
    ),
]


@app.callback()
def _main(
    url: UrlOption = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    context.state.url = url


@app.command()
def init() -> None:
    """Create or migrate the ledger's schema (safe to run again, and from many processes)."""
    with connect() as led:
        # The read models' tables too, so that an admin's init prepares everything (on
        # Postgres, owned by ledger_owner) before agents and runners log in.
        storage_for(led.store)
        render.out.print(f"ledger ready: {led.backend} store at {led.settings.url}")


@app.command()
def append(
    source: Annotated[str, typer.Argument(help="JSONL file, or - for standard input.")] = "-",
    json: JsonFlag = False,
) -> None:
    """Append events from JSONL: every line is validated first, then all are written or none."""
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise ledger.InvalidEvent(f"no such file: {source}")
        data = path.read_bytes()
    lines = jsonl_lines(data)
    with connect() as led:
        keyring = led.keyring if led.encrypting else None
        summary = append_jsonl(led.store, lines, led.settings.max_event_bytes, keyring)
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
    with connect() as led:
        # A row no reader can decode is shown marked, among the rest: this is where
        # an operator looks for it.
        found = (
            led.tenant(user).events(run_id, mark_unreadable=True)
            if user
            else led.auditor().events(run_id, mark_unreadable=True)
        )
    if json:
        render.print_json(found)
    else:
        render.events_table(found)


class SortKey(StrEnum):
    """How ``ledger runs`` orders its rows (``ledger.read_side.RUN_ORDERS``)."""

    created = "created"
    cost = "cost"
    tokens = "tokens"
    wall_time = "wall_time"


@app.command()
def runs(
    user: UserOption = None,
    session: SessionOption = None,
    sort: Annotated[
        SortKey,
        typer.Option(
            "--sort", help="created (oldest first), or cost / tokens / wall_time (largest first)."
        ),
    ] = SortKey.created,
    limit: Annotated[int | None, typer.Option("--limit", help="Show at most N runs.")] = None,
    json: JsonFlag = False,
) -> None:
    """List runs with tokens, cost, tools, retries, wall time: "why did this cost so much?"."""
    with connect() as led:
        found = (
            led.tenant(user).runs(session, order_by=sort.value, limit=limit)
            if user
            else led.auditor().runs_metadata(None, session, order_by=sort.value, limit=limit)
        )
    if json:
        render.print_json([m.model_dump(mode="json") for m in found])
    else:
        render.runs_table(found, user=user is None, session=session is None)


@app.command()
def state(
    session_id: Annotated[str, typer.Argument(help="The session to show.")],
    user: TenantOption,
    last: Annotated[
        int | None,
        typer.Option("--last", min=0, help="Only the last N messages (totals stay whole)."),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """The conversation state an agent reads on every LLM call, for one session."""
    with connect() as led:
        conversation = led.tenant(user).conversation(session_id, last=last)
    if json:
        render.print_json(conversation.model_dump(mode="json"))
    else:
        render.conversation(conversation, last)


@app.command()
def memory(
    user: TenantOption,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Only this one.")] = None,
    json: JsonFlag = False,
) -> None:
    """A user's current long-term memories, with the run that wrote each."""
    with connect() as led:
        items = led.tenant(user).memories(namespace)
    if json:
        render.print_json([m.model_dump(mode="json") for m in items])
    else:
        render.memories_table(items)


@app.command()
def verify(
    user: UserOption = None,
    run: RunOption = None,
    digest: Annotated[
        bool, typer.Option("--digest", help="Also print a digest of the whole log to keep.")
    ] = False,
    against: Annotated[
        str | None,
        typer.Option("--against", help="Prove the log (or export) a digest covered is unchanged."),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Check an export of 'ledger audit export' offline instead (no database).",
        ),
    ] = None,
    json: JsonFlag = False,
) -> None:
    """Recompute every hash chain in scope; exit 1 naming the first bad event of each bad run.

    With --export DIR, check an export the same way, from its files alone.
    """
    if export is not None:
        if user is not None or run is not None or digest:
            raise ledger.InvalidEvent(
                "--export checks an export offline; it takes no --user, --run or --digest"
            )
        audit_cmd.verify_export_command(export, against, json)
        return
    expected = None if against is None else log_digest.Digest.parse(against)
    with connect() as led, audit_cmd.ProgressBar(not json) as bars:
        report = led.auditor().verify(user, run, progress=bars.tracker("verifying"))
        taken = (
            log_digest.take(led.store, bars.counter("digest", report.events)) if digest else None
        )
        differs = (
            None
            if expected is None
            else log_digest.mismatch(led.store, expected, bars.counter("digest", expected.events))
        )
    matches = None if expected is None else differs is None
    result: dict[str, object] = {
        "ok": report.ok and matches is not False,
        "runs": report.runs,
        "events": report.events,
        "problems": report.problems,
    }
    if taken is not None:
        result["digest"] = str(taken)
    if matches is not None:
        result["digest_matches"] = matches
    if json:
        render.print_json(result)
    else:
        render.verify_summary(report)
        if taken is not None:
            render.out.print("digest (keep it outside the database):")
            render.out.print(str(taken), soft_wrap=True, markup=False)
        if matches is False:
            render.err.print(
                f"[red]DIGEST MISMATCH[/red]: {escape(str(differs))}", markup=True, soft_wrap=True
            )
        elif matches:
            render.out.print(
                f"digest matches: the {expected.events} events it covers "  # type: ignore[union-attr]
                "are unchanged"
            )
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Record a sample agent run (from recorded model/tool fixtures) and print it back."""
    from cli.demo import record_demo_run

    with connect() as led:
        run_id = record_demo_run(led)
        found = led.auditor().events(run_id)
    render.out.print(f"recorded run {run_id} in {led.settings.url}\n")
    render.events_table(found)
    render.out.print(f"\nnext: ledger events {run_id} --json   |   ledger runs   |   ledger verify")


#: The exit status of a command stopped by SIGINT (128 + 2, as shells report it).
INTERRUPTED = 130


def exit_code(exc: ledger.LedgerError) -> int:
    """CONTRACT.md exit codes: 2 for bad input, 1 for everything that failed."""
    return 2 if isinstance(exc, ledger.InvalidEvent | ledger.InvalidSetting) else 1


def usage_error_line(exc: TyperException) -> str:
    """CONTRACT.md's one line for bad usage: what is wrong, and where the usage is."""
    context = getattr(exc, "ctx", None)
    where = "" if context is None else f" (see '{context.command_path} --help')"
    return f"error: {exc.format_message()}{where}"


def _quiet_pipeline_aftermath(record: logging.LogRecord) -> bool:
    """Drop psycopg's warning that a pipeline could not be closed cleanly: it follows an
    error inside the pipeline, which the command already reports as its one line."""
    return not str(record.msg).startswith("error ignored terminating")


def main() -> None:
    """Entry point of the ``ledger`` console script: one clear line per error, no traceback."""
    debug = "--debug" in sys.argv
    if not debug:
        logging.getLogger("psycopg").addFilter(_quiet_pipeline_aftermath)
    try:
        code = app(standalone_mode=False)  # the parser's errors come here, not as a box
    except TyperException as exc:  # bad usage: an unknown option, a missing --user, ...
        if exc.format_message():  # (empty: the help was printed, for a bare group)
            render.err.print(usage_error_line(exc), markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        render.err.print("error: aborted")
        sys.exit(1)
    except (ledger.LedgerError, OSError) as exc:  # OSError: the disk (full, read-only, gone)
        if debug:
            raise
        render.err.print(f"error: {exc}", markup=False)
        sys.exit(exit_code(exc) if isinstance(exc, ledger.LedgerError) else 1)
    if code == INTERRUPTED:  # typer turns Ctrl-C (KeyboardInterrupt) into a silent 130
        render.err.print(
            "error: interrupted (Ctrl-C) before the command finished; what it was doing "
            "is not done (a verify proved nothing)",
            markup=False,
            soft_wrap=True,
        )
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(n) comes back as n
