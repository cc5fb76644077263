"""How results are printed: rich tables for people, JSON for scripts."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from ledger import Event, VerifyReport
from projections.models import ConversationState, Memory, RunMetadata
from projections.status import ProjectorStatus

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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
    out.print(table)


def _money(cost: float | None) -> str:
    return "?" if cost is None else f"${cost:.4f}"


def runs_table(runs: Sequence[RunMetadata]) -> None:
    """Runs with what they cost in tokens, money and time."""
    if not runs:
        out.print("no runs")
        return
    table = Table(box=None, pad_edge=False)
    for column in (
        "run_id",
        "user_id",
        "session_id",
        "status",
        "model",
        "tokens",
        "cost",
        "tools",
        "retries",
        "wall_s",
        "slowest_turn",
    ):
        table.add_column(column, no_wrap=True)
    for r in runs:
        slowest = (
            "-"
            if r.slowest_turn is None
            else (f"#{r.slowest_turn} {r.turns[r.slowest_turn].wall_time_ms / 1000:.2f}s")
        )
        table.add_row(
            r.run_id,
            r.user_id,
            r.session_id,
            r.status,
            r.model or "-",
            str(r.total_tokens),
            _money(r.cost_usd),
            str(r.tool_calls),
            str(r.retries),
            f"{r.wall_time_ms / 1000:.2f}",
            slowest,
        )
    out.print(table)


def conversation(state: ConversationState) -> None:
    """A session's messages, then its totals."""
    for m in state.messages:
        role = m["role"]
        if role == "tool":
            body = m.get("error") or msgspec.json.encode(m.get("output")).decode()
            out.print(
                f"[bold]tool[/bold] {m.get('name')}({_clip(str(m.get('input')), 40)})"
                f" → {_clip(str(body))}",
                markup=True,
            )
        else:
            calls = ", ".join(c["name"] for c in m.get("tool_calls") or [])
            text = _clip(str(m.get("content") or ""), 100) + (f" → {calls}" if calls else "")
            out.print(f"[bold]{role}[/bold] {text}")
    meta = state.run_metadata
    out.print(
        f"\n{len(state.messages)} messages · model {meta.model} · {meta.total_tokens} "
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
    out.print(table)


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
    out.print(table)


def verify_summary(report: VerifyReport) -> None:
    """The outcome of a verification, naming each broken run and its first bad event."""
    for p in report.problems:
        err.print(
            f"[red]BROKEN[/red] run {p.run_id} (user {p.user_id}) "
            f"at version {p.version}: {p.reason}"
        )
    state = "[green]ok[/green]" if report.ok else f"[red]{len(report.problems)} broken[/red]"
    out.print(f"verified {report.runs} runs, {report.events} events: {state}")
