"""``ledger audit export`` and ``ledger verify --export``: one person's events, checkable
offline; and the progress bar that long audit work shows."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from cli import render
from cli.context import JsonFlag, connect, identifier
from ledger.errors import shown
from ledger.export import ExportReport, export_user, verify_export

app = typer.Typer(
    help="An auditor's tools: export one person's events for checking without the database.",
    no_args_is_help=True,
)


class ProgressBar:
    """Rich progress bars on stderr, shown only to a person watching a terminal.

    Disabled (every callback is None, nothing is printed) when stderr is not a TTY or
    the output is JSON, so scripts and logs never get escape codes or partial lines.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.shown = enabled and sys.stderr.isatty()
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=render.err,
                transient=True,
            )
            if self.shown
            else None
        )

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def tracker(self, description: str) -> Callable[[int, int], None] | None:
        """A new bar and the ``update(done, total)`` that moves it (None if not shown)."""
        progress = self._progress
        if progress is None:
            return None
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=max(done, total))

        return update

    def counter(self, description: str, total: int) -> Callable[[int], None] | None:
        """A new bar of ``total`` and the ``advance(n)`` that moves it (None if not shown)."""
        progress = self._progress
        if progress is None:
            return None
        task = progress.add_task(description, total=total)
        return lambda n: progress.advance(task, n)


@app.command("export")
def export_command(
    user: Annotated[
        str,
        typer.Option(
            "--user",
            help="The person (user_id) whose events to export.",
            callback=identifier("--user"),
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="A new or empty directory for events.jsonl and manifest.json.",
        ),
    ],
    json: JsonFlag = False,
) -> None:
    """Export every stored event of one user, all runs, with a manifest, for an auditor.

    The export is checked later with 'ledger verify --export DIR', without the database.
    Keep the printed digest somewhere else: it proves the export was not rewritten.
    """
    with connect() as led, ProgressBar(not json) as bars:
        manifest = export_user(led.auditor(), user, out, progress=bars.tracker("exporting"))
    if json:
        render.print_json({"directory": str(out), "manifest": manifest})
        return
    render.out.print(
        f"exported {manifest.counts.events} events of {manifest.counts.runs} runs of user "
        f"{manifest.user_id} to {shown(out)}",
        markup=False,
    )
    render.out.print("digest (keep it outside the export; 'ledger verify --export DIR --against'):")
    render.out.print(manifest.digest, soft_wrap=True, markup=False)


def verify_export_command(directory: Path, against: str | None, json: bool) -> None:
    """``ledger verify --export DIR``: check an export offline; exit 1 if anything is off."""
    with ProgressBar(not json) as bars:
        report = verify_export(directory, against=against, progress=bars.tracker("verifying"))
    if json:
        result: dict[str, object] = {
            "ok": report.ok,
            "export": str(directory),
            "user_id": report.user_id,
            "runs": report.runs,
            "events": report.events,
            "problems": report.problems,
            "issues": report.issues,
            "digest": report.digest,
        }
        render.print_json(result)
    else:
        _export_summary(directory, report, against is not None)
    if not report.ok:
        raise typer.Exit(1)


def _export_summary(directory: Path, report: ExportReport, kept: bool) -> None:
    for p in report.problems:
        render.broken(p)
    for issue in report.issues:
        render.err.print(f"[red]EXPORT[/red] {escape(issue)}", markup=True)
    state = (
        "[green]ok[/green]"
        if report.ok
        else f"[red]{len(report.problems)} broken, {len(report.issues)} export issues[/red]"
    )
    render.out.print(
        f"verified export {escape(shown(directory))} of user {escape(report.user_id)}: "
        f"{report.runs} runs, {report.events} events, offline: {state}",
        soft_wrap=True,
        markup=True,
    )
    if kept and report.ok:
        render.out.print(
            "digest matches the one kept: the exported events and their payloads are "
            "unchanged (docs/compliance.md says what this proves)"
        )
