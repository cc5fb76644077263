"""What changed between two points of a run: messages, tool calls, tokens and cost."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ledger.errors import InvalidEvent
from projections.models import RunState


class RunDiff(BaseModel):
    """From state ``before`` (at version ``from_version``) to ``after``."""

    run_id: str
    from_version: int
    to_version: int
    messages_added: list[dict[str, Any]]
    tool_calls_made: list[dict[str, Any]]
    tool_calls_returned: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    retries: int
    status_before: str
    status_after: str


def diff(before: RunState, after: RunState) -> RunDiff:
    """The difference of two states of one run (``before`` at or before ``after``;
    InvalidEvent if it is after it)."""
    if before.version > after.version:
        raise InvalidEvent(
            f"a difference goes forward in a run: version {before.version} comes after "
            f"{after.version} (swap them)"
        )
    known = len(before.messages)
    added = after.messages[known:]
    # A tool entry that existed before but has an output now was returned in between.
    returned = [
        m
        for old, m in zip(before.messages, after.messages[:known], strict=True)
        if m.get("role") == "tool" and m != old
    ] + [m for m in added if m.get("role") == "tool" and ("output" in m or "error" in m)]
    a, b = after.run_metadata, before.run_metadata
    cost = None if a.cost_usd is None or b.cost_usd is None else a.cost_usd - b.cost_usd
    return RunDiff(
        run_id=after.run_id,
        from_version=before.version,
        to_version=after.version,
        messages_added=added,
        tool_calls_made=[m for m in added if m.get("role") == "tool"],
        tool_calls_returned=returned,
        input_tokens=a.input_tokens - b.input_tokens,
        output_tokens=a.output_tokens - b.output_tokens,
        cost_usd=cost,
        retries=a.retries - b.retries,
        status_before=before.status,
        status_after=after.status,
    )
