"""Cost of a call from the per-model price table (an unknown model costs 0 and says so in the admin)."""
from __future__ import annotations

from decimal import Decimal

from agents_app.gateway.models import ModelPrice


def cost_of(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    price = ModelPrice.objects.filter(model=model).first()
    return price.cost(input_tokens, output_tokens) if price is not None else Decimal("0")
