"""``ledger projections``: run the projectors, rebuild a read model, show where they stand."""

from __future__ import annotations

import signal
import threading
from functools import partial
from types import FrameType
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn

from cli import render
from cli.context import JsonFlag, connect
from ledger.records import START
from projections.catalog import default_projectors, projector_named
from projections.runner import ProjectorRunner
from projections.status import status as projector_status

app = typer.Typer(
    help="Run, rebuild and inspect the projectors that keep the read models.", no_args_is_help=True
)


@app.command()
def run(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Only these read models (default: all); e.g. a runner of its own for "
            "the conversation that agents read on every call."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Events per committed batch.")] = 1000,
    poll: Annotated[float, typer.Option(help="Seconds between polls (SQLite).")] = 0.5,
) -> None:
    """Keep the read models up to date until stopped (Ctrl-C or SIGTERM: clean shutdown).

    Rides out database outages: it says so on stderr, retries, and carries on."""
    render.log_warnings()
    chosen = default_projectors() if not names else [projector_named(n) for n in names]
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del frame
        render.err.print(f"stopping ({signal.Signals(signum).name}) …")
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with connect() as led:
        runner = ProjectorRunner(led, chosen, batch_size=batch_size)
        projected = ", ".join(p.name for p in chosen)
        render.err.print(f"projecting {projected} of {led.settings.url} as {runner.owner}")
        runner.run(stop, poll_seconds=poll)
    render.err.print("stopped cleanly")


@app.command()
def rebuild(
    name: Annotated[str | None, typer.Argument(help="One read model (default: all).")] = None,
) -> None:
    """Rebuild read models from the log beside the live ones, then swap them in whole."""
    with connect() as led:
        chosen = default_projectors() if name is None else [projector_named(name)]
        runner = ProjectorRunner(led, chosen)
        total = led.store.lag(START).pending
        columns = (
            *Progress.get_default_columns()[:1],
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        names = ", ".join(p.name for p in chosen)
        bar = Progress(*columns, console=render.err, transient=False)
        task = bar.add_task(f"rebuild {names}", total=total)
        try:
            # One pass over the log for all of them (not one per read model). The bar
            # shows once the builds are ours: a refusal (RebuildInProgress) is one line.
            read = runner.rebuild_all(chosen, progress=partial(_advance, bar, task))
            bar.update(task, completed=read, total=max(read, 1))
        finally:
            bar.stop()
        for projector in chosen:
            render.out.print(f"{projector.name}: rebuilt from {read} events and swapped in")


def _advance(bar: Progress, task: TaskID, events: int) -> None:
    """Show ``bar`` (from the rebuild's first report on) and count ``events`` in it."""
    if not bar.live.is_started:
        bar.start()
    bar.advance(task, events)


@app.command()
def status(json: JsonFlag = False) -> None:
    """Each projector's position, the log's head, and the lag in events and seconds."""
    with connect() as led:
        rows = projector_status(led, default_projectors())
    if json:
        render.print_json([r.model_dump(mode="json") for r in rows])
        return
    render.projector_table(rows)
