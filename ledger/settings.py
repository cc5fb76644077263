"""Settings read from arguments, then the environment, then defaults."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

DEFAULT_URL = "sqlite:///ledger.db"
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024


class Settings(BaseModel):
    """How a ``Ledger`` connects and what it accepts."""

    url: str = Field(
        default=DEFAULT_URL, description="memory://, sqlite:///path or postgresql://..."
    )
    max_event_bytes: int = Field(
        default=DEFAULT_MAX_EVENT_BYTES,
        gt=0,
        description="Largest encoded payload one event may have ($LEDGER_MAX_EVENT_BYTES).",
    )

    @classmethod
    def resolve(cls, url: str | None = None, max_event_bytes: int | None = None) -> Settings:
        """Arguments win, then $LEDGER_URL / $LEDGER_MAX_EVENT_BYTES, then the defaults."""
        env_limit = os.environ.get("LEDGER_MAX_EVENT_BYTES")
        return cls(
            url=url or os.environ.get("LEDGER_URL") or DEFAULT_URL,
            max_event_bytes=max_event_bytes
            or (int(env_limit) if env_limit else DEFAULT_MAX_EVENT_BYTES),
        )
