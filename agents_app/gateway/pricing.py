"""Cost of a call from the per-model price table (an unknown model costs 0 and says so in the admin)."""
from __future__ import annotations

from decimal import Decimal

from agents_app.gateway.models import ModelPrice
from agents_app.gateway.process_cache import TableCopy


def _load_prices() -> dict[str, ModelPrice]:
    return {price.model: price for price in ModelPrice.objects.all()}


_prices = TableCopy(_load_prices, sources=(ModelPrice,))


def cost_of(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    price = _prices.get().get(model)
    return price.cost(input_tokens, output_tokens) if price is not None else Decimal("0")
