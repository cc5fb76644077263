"""The debugging view of ``ledger replay``: a timeline a person can read at 2 a.m."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cli.render import out, preview, show
from ledger.events import Event
from projections.models import RunState
from replay.diff import RunDiff

_STYLES = {"retry_attempted": "yellow", "run_failed": "bold red", "run_completed": "green"}


def _style(event: Event) -> str:
    if event.type == "tool_returned" and event.data.get("error") is not None:
        return "red"
    return _STYLES.get(event.type, "")


def _numbers(event: Event) -> str:
    d = event.data
    if event.type == "model_responded":
        usage = d.get("usage") or {}
        latency = d.get("latency_ms")
        tokens = f"{usage.get('input_tokens', 0)}→{usage.get('output_tokens', 0)} tok"
        return tokens + (f" {latency:.0f}ms" if latency is not None else "")
    if event.type == "tool_returned" and d.get("duration_ms") is not None:
        return f"{d['duration_ms']:.0f}ms"
    if event.type == "retry_attempted" and d.get("delay_ms") is not None:
        return f"wait {d['delay_ms']:.0f}ms"
    return ""


def timeline(events: Sequence[Event], cut: int, full: bool) -> None:
    """Every event of the run's history; those after the chosen point are dimmed."""
    table = Table(box=None, pad_edge=False)
    for column in ("", "+s", "run/ver", "type", "what", "tokens/latency"):
        table.add_column(column, no_wrap=column != "what", overflow="fold")
    start = events[0].occurred_at if events else None
    for i, event in enumerate(events):
        offset = (event.occurred_at - start).total_seconds() if start else 0.0
        what = preview(event) if not full else str(event.data)
        style = _style(event) if i < cut else "dim"
        mark = "▶" if i == cut - 1 else ""
        table.add_row(
            mark,
            f"{offset:7.3f}",
            f"{event.run_id[-6:]}/{event.version}",
            event.type,
            Text(what),
            _numbers(event),
            style=style,
        )
    show(table)


def summary(state: RunState) -> None:
    """The state at the chosen point, in a few lines."""
    m = state.run_metadata
    cost = "?" if m.cost_usd is None else f"${m.cost_usd:.4f}"
    out.print(
        f"\n[bold]at version {state.version}[/bold] ({state.at.isoformat()}): "
        f"status {state.status} · {len(state.messages)} messages · "
        f"{m.total_tokens} tokens · {cost} · {m.tool_calls} tool calls · "
        f"{m.retries} retries · {m.wall_time_ms / 1000:.2f}s",
        markup=True,
    )
    if state.parent_run_id:
        out.print(f"forked from {state.parent_run_id} at version {state.parent_version}")
    for call in state.pending_tool_calls:
        out.print(
            f"[yellow]pending[/yellow] tool call {escape(call.call_id)}: "
            f"{escape(call.name)}({escape(str(call.input))})",
            markup=True,
        )
    if state.completed_steps:
        steps = ", ".join(f"{s.step}#{s.index}" for s in state.completed_steps)
        out.print(f"completed steps: {steps}")


def diff_summary(change: RunDiff) -> None:
    """What happened between two points."""
    cost = "?" if change.cost_usd is None else f"${change.cost_usd:.4f}"
    out.print(
        f"[bold]{escape(change.run_id)}: version {change.from_version} → {change.to_version}"
        f"[/bold]  status {change.status_before} → {change.status_after}",
        markup=True,
    )
    out.print(
        f"+{change.input_tokens} input / +{change.output_tokens} output tokens, "
        f"{cost}, +{change.retries} retries"
    )
    for m in change.messages_added:
        calls = ", ".join(c["name"] for c in m.get("tool_calls") or [])
        body = m.get("content") or (f"→ {calls}" if calls else m.get("input"))
        out.print(f"  + {m['role']}: {m.get('name') or ''}{body}", markup=False)
    for m in change.tool_calls_returned:
        out.print(f"  ✓ {m['name']} {m['call_id']} returned", markup=False)
