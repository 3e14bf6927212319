"""Operators in the admin: run a schedule now, pause and resume it, and read its run history,
with a real Celery worker running what the admin starts."""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from agents_app.protocol.messages import text_of
from agents_app.storage import transcript
from agents_app.storage.models import Schedule, ScheduleRun, Session
from agents_app.turns.instances import load_agent, resolve_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def scheduled(user: Any, name: str, seconds: float, text: str) -> tuple[Session, Schedule]:
    session = resolve_session("scripted-agent", name, user)
    agent = load_agent(session)
    info = async_to_sync(agent.schedule)(seconds, "send_scheduled_message", {"text": text})
    return session, Schedule.objects.get(pk=info["id"])


def apply_action(admin_client: Any, action: str, schedule: Schedule) -> None:
    response = admin_client.post("/admin/agents_app/schedule/", {"action": action, "_selected_action": [schedule.pk]})
    assert response.status_code == 302


def finished_runs(schedule: Schedule) -> list[ScheduleRun]:
    return list(ScheduleRun.objects.filter(schedule=schedule, finished_at__isnull=False))


def test_run_now_runs_a_future_schedule_at_once_on_a_worker(celery_processes, user, admin_client):
    celery_processes("worker")
    session, schedule = scheduled(user, "run-now", 3600, "run me now")

    apply_action(admin_client, "run_now", schedule)

    [run] = wait_for("the run started from the admin", lambda: finished_runs(schedule))
    assert run.status == "completed"
    assert [text_of(m) for m in transcript.transcript(session)][0] == "run me now"
    schedule.refresh_from_db()
    assert schedule.run_at > timezone.now() + timedelta(minutes=50)  # the one-shot time itself stays as it was


def test_a_paused_schedule_does_not_run_when_due_and_runs_once_resumed(celery_processes, user, admin_client):
    worker = celery_processes("worker")
    session, schedule = scheduled(user, "paused", 2, "after the pause")

    apply_action(admin_client, "pause", schedule)
    wait_for("the due task to reach the worker and do nothing", lambda: re.search(r"agents\.run_schedule\[[^\]]+\] succeeded", worker.output()))

    assert finished_runs(schedule) == [] and transcript.transcript(session) == []
    schedule.refresh_from_db()
    assert schedule.enabled is False and schedule.done is False

    apply_action(admin_client, "resume", schedule)

    [run] = wait_for("the run after resuming", lambda: finished_runs(schedule))
    assert run.status == "completed"
    assert [text_of(m) for m in transcript.transcript(session)][0] == "after the pause"


def test_the_schedule_page_lists_its_runs_with_a_link_to_the_produced_message(celery_processes, user, admin_client):
    celery_processes("worker")
    session, schedule = scheduled(user, "history", 3600, "for the history")
    apply_action(admin_client, "run_now", schedule)
    [run] = wait_for("the run", lambda: finished_runs(schedule))

    page = admin_client.get(f"/admin/agents_app/schedule/{schedule.pk}/change/").content.decode()

    assert run.request_id in page and run.message_uid in page
    assert f'href="/admin/agents_app/session/{session.pk}/change/"' in page  # an operator opens alice's chat in the admin
    listing = admin_client.get("/admin/agents_app/schedule/").content.decode()
    assert "completed" in listing  # the "Last run" column
