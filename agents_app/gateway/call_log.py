"""Writing the call log, and pruning it after the retention period."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
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
    """Never lets a logging failure break the call it describes. Inside a transaction (a
    turn's ending) the row is written under a savepoint, so that a failure here leaves the
    rest of that transaction to commit."""
    try:
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            cost = Decimal("0") if record.cache_hit else cost_of(record.model, record.input_tokens, record.output_tokens)
            values: dict[str, Any] = {name: getattr(record, name) for name in CallRecord.__dataclass_fields__ if name != "started_at"}
            call = ModelCall(created_at=record.started_at, cost=cost, **values)
            row_writes.insert(call)
        return call
    except Exception:
        logger.exception("could not record a model call")
        return None


def save_all(records: list[CallRecord]) -> None:
    for record in records:
        save(record)


class HeldCalls:
    """A turn's call-log lines, held to be written with the turn's ending (one database call
    and commit: storage/turn_ending.py) instead of each by a call of its own when its model
    call ends, which is on the stream's path: the turn's last words wait for it. The turn's
    next model call (after a tool ran) writes the lines held before it: before its limits
    are checked, so that a limit counts every earlier call of the turn, or beside its request
    when none applies. Once `close`d, a call (an `on_chat_response` hook's) writes its own
    line again."""

    def __init__(self) -> None:
        self._records: list[CallRecord] = []
        self._open = True

    def hold(self, record: CallRecord) -> bool:
        """Keep `record` for the turn's ending; False once closed (write it now)."""
        if self._open:
            self._records.append(record)
        return self._open

    def pending(self) -> list[CallRecord]:
        return list(self._records)

    def take(self) -> list[CallRecord]:
        records, self._records = self._records, []
        return records

    def close(self) -> None:
        self._open = False


def prune(now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.AGENTS_GATEWAY_LOG_RETENTION_DAYS)
    deleted, _ = ModelCall.objects.filter(created_at__lt=cutoff).delete()
    return deleted
