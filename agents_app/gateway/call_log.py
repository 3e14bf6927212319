"""Writing the call log, and pruning it after the retention period."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents_app.gateway.models import ModelCall
from agents_app.gateway.pricing import cost_of
from agents_app.storage import row_writes

logger = logging.getLogger(__name__)


@dataclass
class CallRecord:
    """Filled in while a call runs; saved once when it ends."""

    started_at: datetime
    agent: str = ""
    session_id: int | None = None
    request_id: str = ""
    user_id: int | None = None
    provider: str = ""
    model: str = ""
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    latency_ms: int = 0
    ttft_ms: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hit: bool = False
    status: str = ModelCall.Status.OK
    error: str = ""


def save(record: CallRecord) -> ModelCall | None:
    """Never lets a logging failure break the call it describes."""
    try:
        cost = Decimal("0") if record.cache_hit else cost_of(record.model, record.input_tokens, record.output_tokens)
        values: dict[str, Any] = {name: getattr(record, name) for name in CallRecord.__dataclass_fields__ if name != "started_at"}
        call = ModelCall(created_at=record.started_at, cost=cost, **values)
        row_writes.insert(call)
        return call
    except Exception:
        logger.exception("could not record a model call")
        return None


def prune(now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.AGENTS_GATEWAY_LOG_RETENTION_DAYS)
    deleted, _ = ModelCall.objects.filter(created_at__lt=cutoff).delete()
    return deleted
