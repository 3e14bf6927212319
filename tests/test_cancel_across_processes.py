"""A stop reaches a turn wherever it runs: the turn streams in a daphne process and the cancel
is asked for from this one, as from a tab connected to another server (through Redis)."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
from django.conf import settings
from websockets.sync.client import connect

from agents_app.protocol.messages import text_of
from agents_app.storage.models import Session
from agents_app.testing.fake_openai import Reply
from agents_app.turns import runner

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends, pytest.mark.timeout(120)]

ANSWER = " ".join(f"w{index}" for index in range(60))


def test_a_cancel_from_another_process_stops_the_turn_and_keeps_the_partial_answer(live_server_process, token, model):
    if not settings.REDIS_URL:
        pytest.skip("processes reach each other's turns through Redis (production mode)")
    model.script(Reply.text(ANSWER, delay=0.1))
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Count slowly"}]}
    body = json.dumps({"messages": [message], "trigger": "submit-message"})
    url = f"ws://{live_server_process.host}/agents/chat-agent/far-stop?token={token}&_pk={uuid.uuid4()}"
    with connect(url, open_timeout=60) as socket:
        socket.send(json.dumps({"type": "cf_agent_use_chat_request", "id": "req-far", "init": {"method": "POST", "body": body}}))
        deadline = time.monotonic() + 60
        cancelled = False
        while True:
            assert time.monotonic() < deadline, "the turn never ended"
            frame = json.loads(socket.recv(timeout=deadline - time.monotonic()))
            if frame.get("type") != "cf_agent_use_chat_response" or frame.get("id") != "req-far":
                continue
            if not cancelled and '"text-delta"' in frame.get("body", ""):
                session = Session.objects.get(name="far-stop")
                asyncio.run(runner.cancel(session.pk, "req-far"))
                cancelled = True
            if frame.get("done"):
                break
    assert cancelled
    assert model.wait_for_disconnect(5)
    messages = httpx.get(f"{live_server_process.url}/agents/chat-agent/far-stop/get-messages?token={token}", timeout=30).json()
    partial = text_of(messages[-1])
    assert messages[-1]["role"] == "assistant" and partial and ANSWER.startswith(partial) and partial != ANSWER
