"""Celery tasks: housekeeping that runs on a schedule in every deployment."""
from __future__ import annotations

import asyncio

from celery import shared_task

from agents_app.runtime.programmatic import send_user_message
from agents_app.storage import chunk_log


@shared_task(name="agents.sweep_stream_buffers")
def sweep_stream_buffers() -> int:
    """Delete chunk logs that can no longer be resumed (protocol §8 retention)."""
    return chunk_log.sweep()


@shared_task(name="agents.run_turn", acks_late=True)
def run_turn(agent: str, name: str, text: str, username: str | None = None) -> dict[str, str]:
    """A programmatic turn from a Celery worker; with channels-redis it streams live to browsers."""
    return asyncio.run(send_user_message(agent, name, text, username=username)).as_dict()
