"""Default limits that protect a deployment, checked atomically: concurrent turns per user,
queued turns per session, frames per socket, new sessions per user, login attempts, and the
gateway's requests-per-minute under parallel calls."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import close_old_connections
from django.test import Client

from agents_app.gateway import limits as gateway_limits
from agents_app.gateway.models import RateLimit
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


async def test_a_user_over_the_concurrent_turn_limit_gets_a_clear_error(open_socket, token, settings):
    settings.AGENTS_MAX_CONCURRENT_TURNS_PER_USER = 2
    sockets = [await open_socket(f"/agents/scripted-agent/busy-{i}", token=token, wait_ready=True) for i in range(3)]
    for index, socket in enumerate(sockets[:2]):
        await socket.chat(f"busy000{index}", [user_message("slow")], words=30, delay=0.05)
        await socket.until(lambda f: '"text-delta"' in f.get("body", ""))
    await sockets[2].chat("busy0002", [user_message("one more")])
    refusal = await sockets[2].next()
    assert refusal["id"] == "busy0002" and refusal["error"] is True and "2 turns at a time" in refusal["body"]
    await sockets[0].until(is_done("busy0000"))
    await sockets[2].chat("busy0003", [user_message("now?")])
    frames = await sockets[2].until(is_done("busy0003"))
    assert not any(f.get("error") for f in frames)


async def test_a_session_refuses_turns_beyond_its_queue_limit(open_socket, token, settings):
    settings.AGENTS_MAX_QUEUED_TURNS_PER_SESSION = 1
    socket = await open_socket("/agents/scripted-agent/queue-limit", token=token, wait_ready=True)
    await socket.chat("queue001", [user_message("first", "q1")], words=20, delay=0.05)
    await socket.until(lambda f: '"text-delta"' in f.get("body", ""))
    await socket.chat("queue002", [user_message("first", "q1"), user_message("second", "q2")])
    await socket.chat("queue003", [user_message("first", "q1"), user_message("second", "q2"), user_message("third", "q3")])
    refusal = await socket.until(lambda f: f.get("id") == "queue003")
    assert refusal[-1]["error"] is True and "queued" in refusal[-1]["body"]


async def test_a_socket_sending_too_fast_gets_error_frames_and_stays_usable(open_socket, token, settings):
    settings.AGENTS_MAX_FRAMES_PER_SECOND = 5
    socket = await open_socket("/agents/scripted-agent/flood", token=token, wait_ready=True)
    for index in range(20):
        await socket.send({"type": "cf_agent_stream_resume_request", "probeId": f"flood{index}"})
    answers = [await socket.next() for _ in range(20)]
    refused = [a for a in answers if a["type"] == "cf_agent_error"]
    assert refused and all("Too many frames" in a["error"] for a in refused)
    assert len(refused) < 20


def test_new_sessions_per_user_are_rate_limited(client, token, settings):
    settings.AGENTS_MAX_NEW_SESSIONS_PER_MINUTE = 3
    statuses = [
        client.post(f"/agents/chat-agent/fresh-{i}/chat?format=json&token={token}", data={"text": "hi"}, content_type="application/json").status_code
        for i in range(4)
    ]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429


def test_login_attempts_are_throttled(user, settings):
    settings.AGENTS_MAX_LOGIN_FAILURES = 3
    client = Client()
    for _ in range(3):
        assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    refused = client.post("/login/", {"username": "alice", "password": "wonderland-42"})
    assert refused.status_code == 429 and b"Too many failed logins" in refused.content


def test_the_gateway_request_limit_holds_under_parallel_calls(user):
    RateLimit.objects.create(user=user, requests_per_minute=5)

    def attempt(_: int) -> bool:
        try:
            gateway_limits.check(user.pk, "chat-agent", reserve=True)
            return True
        except gateway_limits.LimitExceeded:
            return False
        finally:
            close_old_connections()

    # The counter's window is a fixed minute: calls on both sides of its edge would count twice.
    seconds_into_window = time.time() % 60
    if seconds_into_window > 55:
        time.sleep(60 - seconds_into_window + 0.1)
    with ThreadPoolExecutor(max_workers=10) as pool:
        admitted = sum(pool.map(attempt, range(30)))
    assert admitted == 5
