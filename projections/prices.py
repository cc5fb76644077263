"""What model calls cost: a price table per model, shipped with defaults, overridable.

Prices are USD per million tokens. ``input_tokens`` is taken to include the
``cache_read_input_tokens`` (as OpenAI reports them), which are charged at the
``cache_read`` price. A model the table does not know costs ``None``, never 0: an
unknown cost must not look like a free one.
"""

from __future__ import annotations

import functools
import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import msgspec

from ledger.errors import InvalidSetting

USD = Annotated[float, msgspec.Meta(ge=0)]

#: What may follow a known model's name in a release of that same model: a date or
#: snapshot number (gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, gpt-3.5-turbo-0125,
#: gemini-1.5-pro-002, Vertex's @20240620), "-latest", a preview or experimental tag
#: (gemini-2.5-flash-preview-05-20). Nothing else: o1-pro, gpt-5-pro or
#: gpt-4o-realtime-preview are other products at other prices, so they are unknown
#: (their cost None) until the table lists them.
_RELEASE = re.compile(
    r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{3,4}|@\d{8}|-latest)?"
    r"(?:-(?:preview|exp)(?:-\d{2}-\d{2}|-\d{4})?)?"
)


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """USD per million tokens for one model."""

    input: USD
    output: USD
    cache_read: USD | None = None


class PriceTable:
    """Prices by model name; a dated release of a known model costs what it does."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = dict(prices)
        self._by_length = sorted(self._prices, key=len, reverse=True)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """A table from a JSON file ``{"model": {"input": .., "output": .., ...}}`` (keys
        starting with ``_`` are comments); InvalidSetting naming the file and the model."""
        where = f"price table {path}"
        try:
            data = msgspec.json.decode(Path(path).read_bytes())
        except OSError as exc:
            raise InvalidSetting(f"{where}: cannot be read ({exc.strerror})") from None
        except msgspec.DecodeError as exc:
            raise InvalidSetting(f"{where}: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidSetting(
                f'{where}: expected a JSON object of model names, each {{"input": .., '
                f'"output": .., "cache_read": ..}} in USD per million tokens, got '
                f"{type(data).__name__}"
            )
        prices = {}
        for name, entry in data.items():
            if name.startswith("_"):
                continue
            try:
                prices[name] = msgspec.convert(entry, Price)
            except msgspec.ValidationError as exc:
                raise InvalidSetting(f"{where}: model {name!r}: {exc}") from None
        return cls(prices)

    @classmethod
    def default(cls) -> PriceTable:
        """$LEDGER_PRICES if set, else the table shipped with the package."""
        override = os.environ.get("LEDGER_PRICES")
        if override:
            return cls.load(override)
        return _shipped()

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None

    def price(self, model: str | None) -> Price | None:
        """The price of ``model``: its exact name's, else that of the longest known name
        it is a release of (``_RELEASE``), else None."""
        if not model:
            return None
        found = self._prices.get(model)
        if found is not None:
            return found
        for name in self._by_length:
            if model.startswith(name) and _RELEASE.fullmatch(model, len(name)):
                return self._prices[name]
        return None

    def cost(
        self, model: str | None, input_tokens: int, output_tokens: int, cache_read: int = 0
    ) -> float | None:
        """USD for one call, or None when the model's price is unknown."""
        price = self.price(model)
        if price is None:
            return None
        cached = min(cache_read, input_tokens)
        cached_price = price.input if price.cache_read is None else price.cache_read
        return (
            (input_tokens - cached) * price.input
            + cached * cached_price
            + output_tokens * price.output
        ) / 1_000_000


@functools.cache
def _shipped() -> PriceTable:
    """The table shipped with the package (read once per process)."""
    return PriceTable.load(str(files("projections").joinpath("prices.json")))
