"""Per answer, from the gateway's call log: which model answered, tokens, cost and time to
first token. An answer is the message of one or more turns (a continuation adds to it);
each turn's model calls are logged under its request id."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from agents_app.gateway.models import ModelCall, ModelPrice, RouteEntry
from agents_app.providers.openai_chat import default_model
from agents_app.storage.models import Session, Turn


@dataclass
class AnswerStats:
    models: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal("0")
    ttft_ms: int | None = None
    calls: int = 0

    @property
    def cost_text(self) -> str:
        return f"${self.cost:.4f}" if self.cost else "$0"


def answer_stats(session: Session, message_ids: list[str]) -> dict[str, AnswerStats]:
    """Two queries for a whole conversation."""
    by_request = dict(
        Turn.objects.filter(session=session, message_uid__in=message_ids).values_list("request_id", "message_uid")
    )
    stats: dict[str, AnswerStats] = {}
    calls = ModelCall.objects.filter(session_id=session.pk, request_id__in=list(by_request)).order_by("id")
    for call in calls.only("request_id", "model", "input_tokens", "output_tokens", "cost", "ttft_ms"):
        entry = stats.setdefault(by_request[call.request_id], AnswerStats())
        if call.model and call.model not in entry.models:
            entry.models.append(call.model)
        entry.input_tokens += call.input_tokens
        entry.output_tokens += call.output_tokens
        entry.cost += call.cost
        entry.calls += 1
        if entry.ttft_ms is None and call.ttft_ms is not None:
            entry.ttft_ms = call.ttft_ms
    return stats


def model_choices() -> list[str]:
    """The models the regenerate menu offers (and the page socket accepts): those the
    gateway routes to or prices, and the default."""
    routed = RouteEntry.objects.exclude(model="").values_list("model", flat=True)
    priced = ModelPrice.objects.values_list("model", flat=True)
    return sorted({default_model(), *routed, *priced})
