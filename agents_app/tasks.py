"""Celery tasks: programmatic and scheduled turns, recovery of interrupted turns, housekeeping.

Each task runs its coroutine, and the turn listeners it started, to completion on a fresh
event loop; the turn streams to browsers through the channel layer (channels-redis in
production) like any other turn.
"""
from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from celery import Task, shared_task
from celery.signals import worker_ready
from django.conf import settings

from agents_app.turns import recovery, scheduling, turn_listeners
from agents_app.turns.programmatic import send_user_message
from agents_app.storage import chunk_log, connections

T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a task's coroutine and the turn listeners it started on a fresh loop, after
    dropping database connections that died since the last task (the ORM runs on asgiref's
    worker thread, which Celery's own per-task cleanup does not reach)."""

    async def main() -> T:
        await sync_to_async(connections.drop_dead)()
        return await coroutine

    return turn_listeners.run_to_end(main())


@shared_task(name="agents.sweep_stream_buffers")
def sweep_stream_buffers() -> int:
    """Delete chunk logs that can no longer be resumed (protocol §8 retention)."""
    return chunk_log.sweep()


@shared_task(name="agents.run_turn", bind=True, acks_late=True)
def run_turn(self: Task, agent: str, name: str, text: str, username: str | None = None) -> dict[str, Any]:
    """A programmatic turn. The task id is the request id, so a redelivered task (acks_late
    after a worker died) neither stores the message again nor runs the turn twice."""
    result = _run(send_user_message(agent, name, text, username=username, request_id=self.request.id))
    return result.as_dict()


@shared_task(name=scheduling.RUN_TASK, acks_late=True)
def run_schedule(schedule_id: int, now: bool = False) -> str:
    run = _run(scheduling.execute(schedule_id, now=now))
    return run.status if run is not None else "not-run"


@shared_task(name="agents.recover_interrupted_turns")
def recover_interrupted_turns() -> dict[str, int]:
    """Find turns whose process died and recover each in its own task; re-send lost one-shot schedules."""
    turn_ids = recovery.interrupted_turn_ids()
    for turn_id in turn_ids:
        recover_turn.delay(turn_id)
    return {"interrupted": len(turn_ids), "overdue_schedules": scheduling.dispatch_overdue()}


@shared_task(name="agents.recover_turn", acks_late=True)
def recover_turn(turn_id: int) -> str:
    result = _run(recovery.recover(turn_id))
    return result.status if result is not None else "not-recovered"


@worker_ready.connect
def _recover_after_start(**_: Any) -> None:
    """A restarted worker looks for turns its predecessor left behind, once they are stale."""
    recover_interrupted_turns.apply_async(countdown=settings.AGENTS_TURN_STALE_SECONDS)
