"""Celery tasks: housekeeping that runs on a schedule in every deployment."""
from __future__ import annotations

from celery import shared_task

from agents_app.storage import chunk_log


@shared_task(name="agents.sweep_stream_buffers")
def sweep_stream_buffers() -> int:
    """Delete chunk logs that can no longer be resumed (protocol §8 retention)."""
    return chunk_log.sweep()
