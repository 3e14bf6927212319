"""Scheduled agent callbacks, the reference's `schedule()` API on Celery.

`when` is a number of seconds (delayed), a datetime (scheduled) or a five-field cron string.
One-shot schedules are Celery ETA tasks; cron schedules are django-celery-beat periodic
tasks, so operators see and edit both in the admin. The schedule row is the record of
truth: a task that fires for a paused, cancelled or already-run schedule does nothing, and
a one-shot schedule whose task was lost (worker restarted before its ETA) is caught up by
the periodic sweep.
"""
from __future__ import annotations

import inspect
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from celery import current_app
from celery.schedules import crontab
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from agents_app.turns.instances import load_agent
from agents_app.turns.types import TurnResult
from agents_app.storage.models import Schedule, ScheduleRun, Session

logger = logging.getLogger(__name__)

RUN_TASK = "agents.run_schedule"
# A one-shot schedule still pending this long after its time lost its ETA task.
OVERDUE_AFTER = timedelta(seconds=30)
_CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


class InvalidSchedule(ValueError):
    pass


def parse_cron(expression: str) -> dict[str, str]:
    """`"0 9 * * 1-5"` → crontab fields; raises InvalidSchedule for anything else."""
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidSchedule(f"A cron expression has five fields (minute hour day month weekday): {expression!r}")
    values = dict(zip(_CRON_FIELDS, fields, strict=True))
    try:
        crontab(**values)
    except (ValueError, TypeError) as error:
        raise InvalidSchedule(f"Invalid cron expression {expression!r}: {error}") from error
    return values


def describe(schedule: Schedule) -> dict[str, Any]:
    """The reference's Schedule shape: id, callback, payload, type, time (epoch seconds)."""
    info: dict[str, Any] = {"id": str(schedule.pk), "callback": schedule.callback, "payload": schedule.payload, "type": schedule.kind}
    if schedule.kind == Schedule.Kind.CRON:
        info["cron"] = schedule.cron
        info["time"] = int(_next_cron_time(schedule.cron).timestamp())
    else:
        info["time"] = int(schedule.run_at.timestamp()) if schedule.run_at else None
        if schedule.kind == Schedule.Kind.DELAYED:
            info["delayInSeconds"] = schedule.delay_seconds
    return info


def _next_cron_time(expression: str) -> datetime:
    now = timezone.now()
    return now + crontab(**parse_cron(expression)).remaining_estimate(now)


def create(session: Session, when: Any, callback: str, payload: Any = None) -> Schedule:
    schedule = Schedule(session=session, callback=callback, payload=payload)
    if isinstance(when, bool):
        raise InvalidSchedule("`when` is seconds, a datetime or a cron string")
    if isinstance(when, int | float):
        if when < 0:
            raise InvalidSchedule("A delay cannot be negative")
        schedule.kind, schedule.delay_seconds = Schedule.Kind.DELAYED, float(when)
        schedule.run_at = timezone.now() + timedelta(seconds=when)
    elif isinstance(when, datetime):
        schedule.kind = Schedule.Kind.SCHEDULED
        schedule.run_at = when if timezone.is_aware(when) else timezone.make_aware(when)
    elif isinstance(when, str):
        parse_cron(when)
        schedule.kind, schedule.cron = Schedule.Kind.CRON, when
    else:
        raise InvalidSchedule("`when` is seconds, a datetime or a cron string")
    with transaction.atomic():
        schedule.save()
        activate(schedule)
    return schedule


def activate(schedule: Schedule) -> None:
    """Make Celery run the schedule as it is now (after a create, an edit, a pause or a resume)."""
    if schedule.kind == Schedule.Kind.CRON:
        _sync_periodic_task(schedule)
    elif schedule.enabled and not schedule.done and schedule.run_at is not None:
        eta = max(schedule.run_at, timezone.now())
        transaction.on_commit(lambda: current_app.send_task(RUN_TASK, args=[schedule.pk], eta=eta))


def _sync_periodic_task(schedule: Schedule) -> None:
    crontab_row, _ = CrontabSchedule.objects.get_or_create(**parse_cron(schedule.cron), timezone=settings.TIME_ZONE)
    task = schedule.periodic_task or PeriodicTask(name=f"agent-schedule-{schedule.pk}", task=RUN_TASK)
    task.crontab = crontab_row
    task.args = json.dumps([schedule.pk])
    task.enabled = schedule.enabled
    task.description = f"{schedule.callback} for {schedule.session}"
    task.save()
    if schedule.periodic_task_id != task.pk:
        Schedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
        schedule.periodic_task = task


def set_enabled(schedule: Schedule, enabled: bool) -> None:
    schedule.enabled = enabled
    schedule.save(update_fields=["enabled", "updated_at"])
    activate(schedule)


def pending(session: Session) -> list[Schedule]:
    return list(Schedule.objects.filter(session=session, done=False))


def cancel(session: Session, schedule_id: Any) -> bool:
    schedule = Schedule.objects.filter(session=session, pk=_as_id(schedule_id), done=False).first()
    if schedule is None:
        return False
    delete(schedule)
    return True


def delete(schedule: Schedule) -> None:
    """Remove a schedule with its beat task; a queued ETA task finds nothing and does nothing."""
    if schedule.periodic_task is not None:
        schedule.periodic_task.delete()
    schedule.delete()


def _as_id(schedule_id: Any) -> int:
    try:
        return int(schedule_id)
    except (TypeError, ValueError):
        return -1


def run_now(schedule: Schedule) -> None:
    current_app.send_task(RUN_TASK, args=[schedule.pk], kwargs={"now": True})


def _claim(schedule_id: int, now: bool) -> Schedule | None:
    """The schedule if it should run; a one-shot schedule is claimed so it never runs twice."""
    schedule = Schedule.objects.select_related("session__agent").filter(pk=schedule_id).first()
    if schedule is None or not (schedule.enabled or now):
        return None
    if schedule.kind != Schedule.Kind.CRON:
        if not Schedule.objects.filter(pk=schedule.pk, done=False).update(done=True):
            return None
        if not now and schedule.run_at and schedule.run_at > timezone.now() + timedelta(seconds=1):
            # Fired early (the schedule was moved later after this task was queued).
            Schedule.objects.filter(pk=schedule.pk).update(done=False)
            return None
    return schedule


async def execute(schedule_id: int, *, now: bool = False) -> ScheduleRun | None:
    """Call the schedule's agent method with its payload and record the run."""
    schedule = await sync_to_async(_claim)(schedule_id, now)
    if schedule is None:
        return None
    run = await sync_to_async(ScheduleRun.objects.create)(schedule=schedule)
    agent = await sync_to_async(load_agent)(schedule.session)
    try:
        method = getattr(agent, schedule.callback)
        result = method(schedule.payload)
        if inspect.isawaitable(result):
            result = await result
    except Exception as error:
        logger.exception("schedule %s (%s) failed", schedule.pk, schedule.callback)
        run.status, run.error_text = ScheduleRun.Status.ERROR, str(error) or type(error).__name__
    else:
        run.status = ScheduleRun.Status.COMPLETED
        if isinstance(result, TurnResult):
            run.request_id = result.request_id
            run.message_uid = (result.message or {}).get("id", "")
            if result.status == "error":
                run.status, run.error_text = ScheduleRun.Status.ERROR, result.error or ""
    run.finished_at = timezone.now()
    await sync_to_async(run.save)()
    return run


def dispatch_overdue() -> int:
    """Re-send one-shot schedules whose ETA task never ran (e.g. lost with a worker)."""
    overdue = Schedule.objects.filter(
        done=False, enabled=True, run_at__lt=timezone.now() - OVERDUE_AFTER
    ).exclude(kind=Schedule.Kind.CRON)
    ids = list(overdue.values_list("pk", flat=True))
    for schedule_id in ids:
        current_app.send_task(RUN_TASK, args=[schedule_id])
    return len(ids)
