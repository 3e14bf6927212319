"""Turns run by real Celery worker processes: schedules, webhooks, recovery after kill -9,
and one turn at a time per session across workers (think.md §8–9, protocol §9.9, §9.14)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from agents_app.protocol.messages import text_of
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.turns.registry import agent_record
from agents_app.storage import chunk_log, transcript
from agents_app.storage.models import ScheduleRun, Session, Turn
from agents_app.testing.fake_openai import Reply
from tests.plugins.celery_worker import FAST_RECOVERY

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def production_mode_only() -> None:
    if not django_settings.REDIS_URL:
        pytest.skip("workers reach browser connections only through channels-redis (production mode)")


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def agent_for(user: Any, name: str, segment: str = "scripted-agent") -> Any:
    session = await sync_to_async(resolve_session)(segment, name, user)
    return await sync_to_async(load_agent)(session)


def stored_text_contains(request_id: str, text: str) -> bool:
    turn = Turn.objects.filter(request_id=request_id).first()
    return turn is not None and any(text in body for _, body in chunk_log.read_bodies(turn.pk) if body)


def finished_run(schedule_id: str) -> ScheduleRun | None:
    return ScheduleRun.objects.filter(schedule_id=schedule_id, finished_at__isnull=False).first()


async def test_a_countdown_schedule_runs_on_a_worker_and_records_its_run(celery_processes, user):
    await sync_to_async(celery_processes)("worker")
    agent = await agent_for(user, "countdown")
    info = await agent.schedule(1, "send_scheduled_message", {"text": "ping"})
    assert info["type"] == "delayed" and info["delayInSeconds"] == 1 and info["payload"] == {"text": "ping"}
    assert [s["id"] for s in await agent.get_schedules()] == [info["id"]]
    run = await sync_to_async(wait_for)("the scheduled run", lambda: finished_run(info["id"]))
    assert run.status == "completed"
    messages = await agent.get_messages()
    assert [m["role"] for m in messages] == ["user", "assistant"] and text_of(messages[0]) == "ping"
    assert messages[-1]["id"] == run.message_uid
    assert await agent.get_schedules() == []


async def test_a_cancelled_schedule_never_runs(celery_processes, user):
    worker = await sync_to_async(celery_processes)("worker")
    agent = await agent_for(user, "cancelled")
    info = await agent.schedule(1, "send_scheduled_message", {"text": "never"})
    assert await agent.cancel_schedule(info["id"]) is True
    # The queued ETA task still fires; it finds no schedule and reports that it ran nothing.
    await sync_to_async(worker.wait_for_output)(": 'not-run'", timeout=30)
    assert await agent.get_messages() == []
    assert await agent.cancel_schedule(info["id"]) is False


async def test_scheduling_rejects_unknown_callbacks_and_bad_cron(user):
    agent = await agent_for(user, "invalid")
    with pytest.raises(ValueError, match="no method"):
        await agent.schedule(5, "not_a_method")
    with pytest.raises(ValueError, match="five fields"):
        await agent.schedule("every day", "send_scheduled_message", {"text": "x"})
    assert await agent.get_schedules() == []


async def test_a_cron_schedule_fires_from_beat_and_streams_to_a_connected_tab(celery_processes, user, token, open_socket):
    production_mode_only()
    await sync_to_async(celery_processes)("worker")
    await sync_to_async(celery_processes)("beat")
    tab = await open_socket("/agents/scripted-agent/cron", token=token, wait_ready=True)
    agent = await agent_for(user, "cron")
    info = await agent.schedule("* * * * *", "send_scheduled_message", {"text": "every minute"})
    assert info["type"] == "cron" and info["cron"] == "* * * * *"
    frames = await tab.until(lambda f: f["type"] == "cf_agent_use_chat_response" and f["done"], timeout=75)
    assert any('"text-delta"' in f.get("body", "") for f in frames)
    run = await sync_to_async(wait_for)("the cron run", lambda: finished_run(info["id"]))
    assert run.status == "completed" and run.message_uid
    assert [s["id"] for s in await agent.get_schedules()] == [info["id"]]  # cron schedules keep running


def post_webhook(client: Any, path: str, body: Any, key: str | None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


def test_a_webhook_with_the_agent_key_queues_a_turn_that_a_worker_answers(celery_processes, user, client):
    celery_processes("worker")
    key = agent_record("scripted-agent").issue_webhook_key()
    response = post_webhook(client, "/hooks/scripted-agent/inbox", {"text": "from a webhook", "user": "alice"}, key)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    request_id = response.json()["requestId"]
    wait_for("the webhook turn", lambda: Turn.objects.filter(request_id=request_id, status="completed").exists())
    messages = transcript.transcript(resolve_session("scripted-agent", "inbox", user))
    assert [m["role"] for m in messages] == ["user", "assistant"] and text_of(messages[0]) == "from a webhook"


@pytest.mark.parametrize(
    ("body", "key", "status", "error"),
    [
        ({"text": "hi"}, None, 401, "webhook key"),
        ({"text": "hi"}, "whk_wrong", 401, "webhook key"),
        ("not an object", "valid", 400, "JSON object"),
        ({"text": ""}, "valid", 400, '"text"'),
        ({"text": "hi", "user": "nobody"}, "valid", 400, "Unknown user"),
    ],
)
def test_a_webhook_with_a_bad_key_or_body_is_refused_and_starts_nothing(client, user, body, key, status, error):
    valid = agent_record("scripted-agent").issue_webhook_key()
    response = post_webhook(client, "/hooks/scripted-agent/inbox", body, valid if key == "valid" else key)
    assert response.status_code == status and error in response.json()["error"]
    assert not Session.objects.exists() and not Turn.objects.exists()


def test_a_webhook_for_an_unknown_agent_is_not_found(client):
    response = post_webhook(client, "/hooks/no-such-agent/inbox", {"text": "hi"}, "whk_x")
    assert response.status_code == 404


async def test_a_worker_killed_mid_stream_is_recovered_and_the_tab_ends_with_one_complete_answer(
    celery_processes, model, user, token, open_socket, settings
):
    from agents_app.tasks import run_turn

    production_mode_only()
    settings.AGENTS_TURN_STALE_SECONDS = 2
    story = " ".join(f"w{i}" for i in range(80))
    model.script(Reply.text(story, delay=0.1), Reply.text(" and the rest."))
    doomed = await sync_to_async(celery_processes)("worker", **FAST_RECOVERY)
    tab = await open_socket("/agents/chat-agent/crash", token=token, wait_ready=True)
    await sync_to_async(run_turn.delay)("chat-agent", "crash", "Tell me a long story", "alice")
    frames = await tab.until(lambda f: f["type"] == "cf_agent_use_chat_response" and "w5" in f.get("body", ""), timeout=30)
    request_id = frames[-1]["id"]
    # What was stored survives a kill -9; the last batch broadcast (≤0.1 s) may not have been.
    await sync_to_async(wait_for)("w5 in the stored chunks", lambda: stored_text_contains(request_id, "w5"))
    await sync_to_async(doomed.kill_hard)()
    await sync_to_async(celery_processes)("worker", **FAST_RECOVERY)

    recovered = await tab.until(lambda f: f == {"type": "cf_agent_chat_recovering", "recovering": False, "id": request_id}, timeout=60)
    assert {"type": "cf_agent_chat_recovering", "recovering": True, "id": request_id} in recovered
    continuation = [f for f in recovered if f["type"] == "cf_agent_use_chat_response" and f["id"] != request_id]
    assert continuation and continuation[-1]["done"] and all(f.get("continuation") for f in continuation)
    session = await sync_to_async(resolve_session)("chat-agent", "crash", user)
    messages = await sync_to_async(transcript.transcript)(session)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    answer = text_of(messages[-1])
    assert answer.startswith("w0 w1 w2 w3 w4 w5") and answer.endswith("and the rest.")
    assert await sync_to_async(lambda: Turn.objects.get(request_id=request_id).status)() == "interrupted"


def test_two_workers_never_run_one_sessions_turns_at_the_same_time(celery_processes, model, user):
    from agents_app.tasks import run_turn

    production_mode_only()
    model.script(*[Reply.text("one two three four", delay=0.1) for _ in range(4)])
    workers = [celery_processes("worker"), celery_processes("worker")]
    for index in range(4):
        run_turn.delay("chat-agent", "busy", f"message {index}", "alice")
    session = resolve_session("chat-agent", "busy", user)
    wait_for("four answered turns", lambda: Turn.objects.filter(session=session, status="completed").count() == 4, timeout=60)
    turns = list(Turn.objects.filter(session=session).order_by("started_at"))
    for earlier, later in zip(turns, turns[1:], strict=False):
        assert earlier.finished_at <= later.started_at
    assert all("succeeded" in worker.output() for worker in workers)
