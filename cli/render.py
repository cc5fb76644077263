"""How results are printed: rich tables for people, JSON for scripts."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from ledger import Event, Problem, VerifyReport
from projections.models import ConversationState, Memory, RunMetadata
from projections.status import ProjectorStatus

# Markup off by default: what is printed is mostly what agents stored, and text such as
# "[/INST]" or "[docs](url)" is not rich markup (it crashed or vanished when it was).
# The few styled lines pass markup=True and escape() every value they interpolate.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def show(table: Table) -> None:
    """Print ``table`` whole, never cut: run ids are copied from it into the next command.

    rich fits a table to the terminal (80 columns when piped) by cutting cells short
    with an ellipsis; a table wider than that is printed at its natural width instead,
    and a terminal narrower than it wraps its lines, as ``docker ps`` and ``kubectl``
    output does."""
    natural = Measurement.get(out, out.options.update_width(_UNBOUNDED), table).maximum
    if natural <= out.width:
        out.print(table)
        return
    wide = Console(
        file=out.file,
        width=natural,
        color_system=out.color_system,  # type: ignore[arg-type]
        highlight=False,
        soft_wrap=False,
        markup=False,
    )
    wide.print(table)


_UNBOUNDED = 1_000_000


def log_warnings() -> None:
    """Show the warnings long-running commands log (a database outage and its end) on
    stderr, one timestamped line each."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )


PREVIEW = 70


def print_json(value: Any) -> None:
    """Write ``value`` as one JSON document on stdout (datetimes as RFC 3339)."""
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _clip(text: str, width: int = PREVIEW) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def preview(event: Event) -> str:
    """One line that says what an event was about."""
    d = event.data
    if "unreadable" in d:  # ledger.tenant.readable_events, for a row no reader can decode
        return f"UNREADABLE: {d['unreadable']}"
    match event.type:
        case "message_received":
            return f"[{d.get('role')}] {_clip(str(d.get('content', '')))}"
        case "model_responded":
            calls = ", ".join(c["name"] for c in d.get("tool_calls") or [])
            usage = d.get("usage") or {}
            tokens = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
            text = _clip(str(d.get("content") or ""), 40)
            return f"{d.get('model') or ''} {tokens} tok {text}" + (f" → {calls}" if calls else "")
        case "tool_called":
            return f"{d['name']}({_clip(msgspec.json.encode(d.get('input')).decode(), 50)})"
        case "tool_returned":
            body = d.get("error") or msgspec.json.encode(d.get("output")).decode()
            return f"{d['name']} {'ERROR ' if d.get('error') else ''}{_clip(body, 50)}"
        case "retry_attempted":
            return f"{d['what']} attempt {d['attempt']}: {d.get('error') or ''}"
        case "step_completed":
            return f"{d['step']} #{d['index']}"
        case "memory_written" | "memory_forgotten":
            return f"{d['namespace']}/{d['key']}"
        case "run_started":
            return f"agent={d.get('agent')} model={d.get('model')}"
        case "run_failed":
            return _clip(str(d.get("error")))
        case _:
            return ""


def events_table(events: Sequence[Event]) -> None:
    """The events of one run, oldest first."""
    table = Table(box=None, pad_edge=False)
    for column in ("ver", "pos", "occurred_at", "type", "what"):
        table.add_column(column, no_wrap=column != "what")
    for e in events:
        table.add_row(str(e.version), str(e.position), _time(e.occurred_at), e.type, preview(e))
    show(table)


def _slowest_turn(run: RunMetadata) -> str:
    if run.slowest_turn is None:
        return "-"
    return f"#{run.slowest_turn} {run.turns[run.slowest_turn].wall_time_ms / 1000:.2f}s"


def _money(cost: float | None) -> str:
    return "?" if cost is None else f"${cost:.4f}"


def runs_table(runs: Sequence[RunMetadata], *, user: bool = True, session: bool = True) -> None:
    """Runs with what they cost in tokens, money and time (``user``/``session``: with
    those columns; not when the listing was narrowed to one)."""
    if not runs:
        out.print("no runs")
        return
    columns: dict[str, Callable[[RunMetadata], str]] = {
        "run_id": lambda r: r.run_id,
        "user_id": lambda r: r.user_id,
        "session_id": lambda r: r.session_id,
        "status": lambda r: r.status,
        "model": lambda r: r.model or "-",
        "tokens": lambda r: str(r.total_tokens),
        "cost": lambda r: _money(r.cost_usd),
        "tools": lambda r: str(r.tool_calls),
        "retries": lambda r: str(r.retries),
        "wall_s": lambda r: f"{r.wall_time_ms / 1000:.2f}",
        "slowest_turn": _slowest_turn,
    }
    if not user:
        del columns["user_id"]
    if not session:
        del columns["session_id"]
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for r in runs:
        table.add_row(*(cell(r) for cell in columns.values()))
    show(table)


def conversation(state: ConversationState, last: int | None = None) -> None:
    """A session's messages (its ``last`` ones, if the read was cut), then its totals."""
    for m in state.messages:
        role = m["role"]
        if role == "tool":
            body = m.get("error") or msgspec.json.encode(m.get("output")).decode()
            out.print(
                f"[bold]tool[/bold] {escape(str(m.get('name')))}"
                f"({escape(_clip(str(m.get('input')), 40))}) → {escape(_clip(str(body)))}",
                markup=True,
            )
        else:
            calls = ", ".join(c["name"] for c in m.get("tool_calls") or [])
            text = _clip(str(m.get("content") or ""), 100) + (f" → {calls}" if calls else "")
            out.print(f"[bold]{escape(role)}[/bold] {escape(text)}", markup=True)
    meta = state.run_metadata
    count = len(state.messages)
    noun = "message" if count == 1 else "messages"
    shown = f"{count} {noun}" if last is None else f"the last {count} {noun} of the session"
    out.print(
        f"\n{shown} · model {meta.model or '-'} · {meta.total_tokens} "
        f"tokens · {meta.tool_calls} tool calls · {meta.retries} retries · "
        f"{meta.wall_time_ms / 1000:.2f}s"
    )


def memories_table(items: Sequence[Memory]) -> None:
    """Current memories and where they came from."""
    if not items:
        out.print("no memories")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("namespace", "key", "value", "run_id", "written_at"):
        table.add_column(column, no_wrap=column != "value")
    for m in items:
        table.add_row(
            m.namespace,
            m.key,
            _clip(msgspec.json.encode(m.value).decode()),
            m.run_id,
            _time(m.written_at),
        )
    show(table)


def projector_table(rows: Sequence[ProjectorStatus]) -> None:
    """Projectors with their position, the log's head and the lag."""
    table = Table(box=None, pad_edge=False)
    for column in ("projector", "version", "position", "head", "lag", "lag_s", "owner", "note"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        lag_s = "-" if r.lag_seconds is None else f"{r.lag_seconds:.1f}"
        notes = (
            ["needs rebuild"]
            if r.needs_rebuild
            else (["never ran"] if r.generation is None else [])
        )
        if r.outdated:
            notes.append(
                f"built by a later release (version {r.stored_version}): runners of this "
                "release leave it alone; upgrade them"
            )
        if r.owner is not None and not r.leased:
            notes.append("no live runner (its lease expired)")
        if r.rebuild_position is not None:
            notes.append(f"rebuilding: at position {r.rebuild_position} ({r.rebuild_owner})")
        if r.skipped:
            notes.append(
                f"skipped {r.skipped} unfoldable event{'s' if r.skipped != 1 else ''} (see its log)"
            )
        note = "; ".join(notes)
        table.add_row(
            r.name,
            str(r.version),
            str(r.position),
            str(r.head_position or 0),
            str(r.lag_events),
            lag_s,
            r.owner or "-",
            note,
        )
    show(table)


def broken(problem: Problem) -> None:
    """One line on stderr naming a broken run and its first bad event."""
    err.print(
        f"[red]BROKEN[/red] run {escape(problem.run_id)} (user {escape(problem.user_id)}) "
        f"at version {problem.version}: {escape(problem.reason)}",
        markup=True,
    )


def verify_summary(report: VerifyReport) -> None:
    """The outcome of a verification, naming each broken run and its first bad event."""
    for p in report.problems:
        broken(p)
    state = "[green]ok[/green]" if report.ok else f"[red]{len(report.problems)} broken[/red]"
    out.print(f"verified {report.runs} runs, {report.events} events: {state}", markup=True)
