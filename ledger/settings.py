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

    encrypt: bool | None = Field(
        default=None,
        description="Seal personal content with a per-user key ($LEDGER_ENCRYPT=1/0); "
        "None means on for Postgres, off for SQLite and memory.",
    )

    def encrypts(self, backend: str) -> bool:
        """Whether personal content is sealed on ``backend``."""
        return self.encrypt if self.encrypt is not None else backend == "postgres"

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        max_event_bytes: int | None = None,
        encrypt: bool | None = None,
    ) -> Settings:
        """Arguments win, then $LEDGER_URL / $LEDGER_MAX_EVENT_BYTES / $LEDGER_ENCRYPT,
        then the defaults."""
        env_limit = os.environ.get("LEDGER_MAX_EVENT_BYTES")
        env_encrypt = os.environ.get("LEDGER_ENCRYPT")
        if encrypt is None and env_encrypt:
            encrypt = env_encrypt.strip().lower() in ("1", "true", "yes", "on")
        return cls(
            url=url or os.environ.get("LEDGER_URL") or DEFAULT_URL,
            max_event_bytes=max_event_bytes
            or (int(env_limit) if env_limit else DEFAULT_MAX_EVENT_BYTES),
            encrypt=encrypt,
        )
