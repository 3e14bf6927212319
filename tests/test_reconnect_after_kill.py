"""A client that reconnects right after the server streaming its answer was killed (kill -9)
gets the recovery at once, not after the dead turn's heartbeat goes stale (issue #14, item 5)."""
from __future__ import annotations

import json
import os
import signal
import time
import uuid
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from agents_app.protocol.messages import text_of
from agents_app.storage.models import Turn
from agents_app.testing.fake_openai import Reply
from tests.plugins.live_server import LiveServer, start_live_server
from tests.test_recovery import streaming_turn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends, pytest.mark.timeout(300)]

# Far longer than the test waits: only the owner's death can explain a recovery.
SLOW_STALE = {"AGENTS_TURN_STALE_SECONDS": "600"}
RECOVERY_WAIT_SECONDS = 60


def open_chat(server: LiveServer, token: str, name: str) -> ClientConnection:
    return connect(f"ws://{server.host}/agents/chat-agent/{name}?token={token}&_pk={uuid.uuid4()}", open_timeout=60)


def frames_until(socket: ClientConnection, wanted: dict[str, Any], deadline: float) -> list[dict[str, Any]]:
    """Every frame up to and including `wanted`; fails when it has not come by `deadline`."""
    seen: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {wanted} by the deadline; got {seen}"
        try:
            frame = json.loads(socket.recv(timeout=remaining))
        except TimeoutError:
            continue
        seen.append(frame)
        if frame == wanted:
            return seen


def start_long_answer(server: LiveServer, token: str) -> Turn:
    """Ask `server` for a long answer; returns its turn once part of it is in the chunk log."""
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Tell me a long story"}]}
    body = json.dumps({"messages": [message], "trigger": "submit-message"})
    with open_chat(server, token, "orphan") as socket:
        socket.send(json.dumps({"type": "cf_agent_use_chat_request", "id": "req-orphan", "init": {"method": "POST", "body": body}}))
        deadline = time.monotonic() + 60
        while (turn := streaming_turn()) is None:
            assert time.monotonic() < deadline, "the turn never started streaming"
            time.sleep(0.1)
    return turn


def kill_hard(server: LiveServer) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


def assert_recovered(socket: ClientConnection, server: LiveServer, token: str, model: Any, turn: Turn) -> None:
    """The client sees the dead stream end and the recovery run; the transcript holds the
    partial answer continued by the recovery turn."""
    deadline = time.monotonic() + RECOVERY_WAIT_SECONDS
    frames = frames_until(socket, {"type": "cf_agent_chat_recovering", "recovering": False, "id": turn.request_id}, deadline)
    assert {"type": "cf_agent_chat_recovering", "recovering": True, "id": turn.request_id} in frames
    assert any(f.get("id") == turn.request_id and f.get("done") for f in frames), "the dead stream never ended"
    messages = httpx.get(f"{server.url}/agents/chat-agent/orphan/get-messages?token={token}", timeout=30).json()
    assert [m["role"] for m in messages] == ["user", "assistant"]
    answer = text_of(messages[-1])
    assert answer.startswith("w0 w1 w2 w3 w4 w5") and answer.endswith("and the rest.")
    assert len(model.requests) == 2 and model.requests[1]["messages"][-1]["role"] == "assistant"


def resume(socket: ClientConnection, turn: Turn) -> None:
    frames_until(socket, {"type": "cf_agent_stream_resuming", "id": turn.request_id}, time.monotonic() + 60)
    socket.send(json.dumps({"type": "cf_agent_stream_resume_ack", "id": turn.request_id}))


def test_a_reconnect_after_the_streaming_server_was_killed_gets_the_recovery_at_once(model, token):
    model.script(Reply.text(" ".join(f"w{i}" for i in range(200)), delay=0.1), Reply.text(" and the rest."))
    doomed = start_live_server(model.base_url, SLOW_STALE)
    try:
        turn = start_long_answer(doomed, token)
    finally:
        kill_hard(doomed)
    successor = start_live_server(model.base_url, SLOW_STALE)
    try:
        with open_chat(successor, token, "orphan") as socket:
            resume(socket, turn)
            assert_recovered(socket, successor, token, model, turn)
    finally:
        successor.stop()


def test_a_client_resumed_on_another_server_gets_the_recovery_when_the_streaming_server_dies(model, token):
    model.script(Reply.text(" ".join(f"w{i}" for i in range(300)), delay=0.1), Reply.text(" and the rest."))
    doomed = start_live_server(model.base_url, SLOW_STALE)
    watcher = start_live_server(model.base_url, SLOW_STALE)
    try:
        turn = start_long_answer(doomed, token)
        with open_chat(watcher, token, "orphan") as socket:
            resume(socket, turn)
            frames_until(socket, {"type": "cf_agent_use_chat_response", "id": turn.request_id, "body": "", "done": False, "replay": True, "replayComplete": True}, time.monotonic() + 60)
            kill_hard(doomed)
            assert_recovered(socket, watcher, token, model, turn)
    finally:
        if doomed.process.poll() is None:
            kill_hard(doomed)
        watcher.stop()
