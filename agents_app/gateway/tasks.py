"""Periodic gateway housekeeping (beat runs it hourly, see CELERY_BEAT_SCHEDULE)."""
from __future__ import annotations

from celery import shared_task

from agents_app.gateway import call_log


@shared_task(name="gateway.prune_model_calls")
def prune_model_calls() -> int:
    """Drop call-log rows older than AGENTS_GATEWAY_LOG_RETENTION_DAYS."""
    return call_log.prune()
