"""Settings read from arguments, then the environment, then defaults."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from ledger.errors import InvalidSetting

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
        then the defaults; InvalidSetting names a value none of them can take."""
        if max_event_bytes is None:
            max_event_bytes = _env_int("LEDGER_MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES)
        if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int):
            raise InvalidSetting(
                f"max_event_bytes must be a whole number of bytes, got {max_event_bytes!r}"
            )
        if max_event_bytes <= 0:
            raise InvalidSetting(f"max_event_bytes must be > 0, got {max_event_bytes}")
        if encrypt is None:
            encrypt = _env_bool("LEDGER_ENCRYPT")
        if url is not None and not url.strip():
            # An empty variable given as the URL: never read as "the default", which
            # would quietly write to ./ledger.db instead of the store meant.
            raise InvalidSetting(
                "the ledger URL is empty (an unset variable?): give postgresql://..., "
                "sqlite:///path.db or memory://, or none at all for $LEDGER_URL, else "
                "sqlite:///ledger.db"
            )
        return cls(
            url=url or os.environ.get("LEDGER_URL") or DEFAULT_URL,
            max_event_bytes=max_event_bytes,
            encrypt=encrypt,
        )


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise InvalidSetting(f"${name} must be a whole number, got {text!r}") from None
    if value <= 0:
        raise InvalidSetting(f"${name} must be > 0, got {value}")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _env_bool(name: str) -> bool | None:
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidSetting(f"${name} must be 1 or 0 (true/false, yes/no, on/off), got {text!r}")
