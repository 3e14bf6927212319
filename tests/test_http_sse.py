"""Agents over plain HTTP: `on_request` with the JSON / text / SSE helpers, turns over HTTP
streamed as SSE, UI message stream and text, re-attaching by request id, and WebSocket
clients watching an HTTP turn."""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient

from agents_app.agents.chat_agent import AIChatAgent
from agents_app.turns.instances import resolve_session
from agents_app.turns import stream_publisher
from agents_app.turns.registry import register_agent
from agents_app.storage import transcript
from agents_app.storage.models import TurnChunk
from agents_app.testing.fake_openai import Reply
from agents_app.transport.responses import json_response, sse_event, sse_response, text_stream_response
from tests.conftest import chunks_of, is_done
from tests.plugins.live_server import LiveServer, start_live_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


@register_agent
class HttpDemoAgent(AIChatAgent):
    """Serves its own HTTP paths with each response helper."""

    async def on_request(self, request: HttpRequest, path: str) -> HttpResponse:
        if path == "info":
            return json_response({"agent": self.record.slug, "name": self.name, "method": request.method})
        if path == "ticks":
            return sse_response(self._ticks(int(request.GET.get("n", "3"))), done_marker="[DONE]")
        if path == "words":
            return text_stream_response(self._words())
        return await super().on_request(request, path)

    @staticmethod
    async def _ticks(count: int) -> AsyncIterator[dict[str, int]]:
        for index in range(count):
            await asyncio.sleep(0.3)
            yield {"tick": index}

    @staticmethod
    async def _words() -> AsyncIterator[str]:
        for word in ("streamed ", "plain ", "text"):
            yield word


def sse_data(lines: list[str]) -> list[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


@pytest.fixture
def http_server(model: Any, transactional_db: Any) -> Iterator[LiveServer]:
    classes = "tests.agents.ScriptedAgent,tests.agents.CounterAgent,tests.test_http_sse.HttpDemoAgent"
    server = start_live_server(model.base_url, {"AGENTS_CLASSES": classes})
    yield server
    server.stop()


def test_an_sse_event_puts_every_line_of_a_string_in_its_own_data_field():
    assert sse_event("first\nsecond", event="note", event_id=7) == "event: note\nid: 7\ndata: first\ndata: second\n\n"
    assert sse_event({"a": 1}) == 'data: {"a":1}\n\n'


def test_on_request_answers_json(client, token):
    response = client.get(f"/agents/http-demo-agent/box/info?token={token}")
    assert response.status_code == 200
    assert response.json() == {"agent": "http-demo-agent", "name": "box", "method": "GET"}


async def test_on_request_streams_plain_text(token):
    response = await AsyncClient().get(f"/agents/http-demo-agent/box/words?token={token}")
    assert response["Content-Type"].startswith("text/plain")
    assert b"".join([piece async for piece in response.streaming_content]) == b"streamed plain text"


def test_an_sse_helper_stream_arrives_event_by_event_and_ends_with_done(http_server, token):
    arrivals: list[tuple[float, str]] = []
    with httpx.Client(timeout=10) as http:
        with http.stream("GET", f"{http_server.url}/agents/http-demo-agent/box/ticks?n=4", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic(), line[6:]))
    assert [data for _, data in arrivals] == ['{"tick":0}', '{"tick":1}', '{"tick":2}', '{"tick":3}', "[DONE]"]
    # Four events 0.3 s apart: the first one was read long before the last was produced.
    assert arrivals[-1][0] - arrivals[0][0] > 0.6


def test_curl_dash_n_prints_the_sse_events_and_exits(http_server, token):
    result = subprocess.run(
        ["curl", "-sN", "--max-time", "10", f"{http_server.url}/agents/http-demo-agent/box/ticks?n=2&token={token}"],
        capture_output=True, text=True, timeout=15, check=True,
    )
    assert result.stdout == 'data: {"tick":0}\n\ndata: {"tick":1}\n\ndata: [DONE]\n\n'


def test_a_turn_over_sse_streams_before_the_model_finishes(http_server, model, token, user):
    model.script(Reply.text("one two three four five", delay=0.4))
    events: list[tuple[float, str]] = []
    with httpx.Client(timeout=20) as http:
        with http.stream(
            "POST", f"{http_server.url}/agents/chat-agent/sse-room/chat?format=sse",
            json={"text": "Count to five"}, headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append((time.monotonic(), line[6:]))
    texts = [json.loads(data)["text"] for _, data in events[:-1]]
    assert "".join(texts) == "one two three four five" and events[-1][1] == "[DONE]"
    # The model takes 2 s for five words; the first word reached the client well before the end.
    assert events[-1][0] - events[0][0] > 1.0
    stored = transcript.transcript(resolve_session("chat-agent", "sse-room", user))
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["parts"][-1]["text"] == "one two three four five" and request_id


def test_a_turn_over_the_ui_message_stream_sends_every_chunk_then_done(http_server, model, token):
    model.script(Reply.text("Hello over HTTP"))
    with httpx.Client(timeout=20) as http:
        response = http.post(
            f"{http_server.url}/agents/chat-agent/ui-room/chat", json={"text": "Hi"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    data = sse_data(response.text.splitlines())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert [c["type"] for c in chunks[:2]] == ["start", "start-step"] and chunks[-1]["type"] == "finish"
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "Hello over HTTP"


async def test_an_http_follower_in_the_turns_own_process_gets_each_chunk_as_it_is_broadcast(model, token, monkeypatch):
    # The chunk log is written only at the stream's end: every word before it reached the
    # client without it, those broadcast before the client began to read included.
    monkeypatch.setattr(stream_publisher, "STORE_INTERVAL", 3600)
    monkeypatch.setattr(stream_publisher, "FOLLOWED_STORE_INTERVAL", 3600)
    model.script(Reply.text("one two three", delay=0.5))
    response = await AsyncClient().post(
        f"/agents/chat-agent/live-room/chat?token={token}", {"text": "Count"}, content_type="application/json"
    )
    await asyncio.sleep(0.2)  # the turn streams before the response is read: its first words too
    events = response.streaming_content.__aiter__()
    received = []
    while not any(chunk["type"] == "text-delta" for chunk in received):
        received.extend(json.loads(data) for data in sse_data((await anext(events)).decode().splitlines()) if data != "[DONE]")
    stored = await sync_to_async(TurnChunk.objects.filter(turn__request_id=response["X-Request-Id"]).count)()
    async for piece in events:
        received.extend(json.loads(data) for data in sse_data(piece.decode().splitlines()) if data != "[DONE]")
    assert stored == 0
    assert "".join(c["delta"] for c in received if c["type"] == "text-delta") == "one two three"
    assert received[-1]["type"] == "finish"


def test_the_turn_keeps_running_after_the_client_disconnects_and_can_be_reattached(http_server, model, token, user):
    model.script(Reply.text("a slow answer that outlives its client", delay=0.25))
    with httpx.Client(timeout=20) as http:
        with http.stream(
            "POST", f"{http_server.url}/agents/chat-agent/gone-room/chat?format=text",
            json={"text": "Tell me", "requestId": "http0001"}, headers={"Authorization": f"Bearer {token}"},
        ) as response:
            first = next(response.iter_text())
        assert first and "a slow answer that outlives its client".startswith(first)
        # The client is gone mid-answer; re-attach by request id and get the whole stream.
        replay = http.get(f"{http_server.url}/agents/chat-agent/gone-room/streams/http0001", headers={"Authorization": f"Bearer {token}"})
        tail = http.get(f"{http_server.url}/agents/chat-agent/gone-room/streams/http0001?from=3", headers={"Authorization": f"Bearer {token}"})
    chunks = [json.loads(item) for item in sse_data(replay.text.splitlines())[:-1]]
    assert [json.loads(item) for item in sse_data(tail.text.splitlines())[:-1]] == chunks[3:]
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "a slow answer that outlives its client"
    assert chunks[-1]["type"] == "finish"
    stored = transcript.transcript(resolve_session("chat-agent", "gone-room", user))
    assert stored[-1]["parts"][-1]["text"] == "a slow answer that outlives its client"


def test_json_format_answers_with_the_persisted_reply(client, model, token):
    model.script(Reply.text("All done."))
    response = client.post(
        f"/agents/chat-agent/json-room/chat?format=json&token={token}", data={"text": "Finish"}, content_type="application/json"
    )
    body = response.json()
    assert response.status_code == 200 and body["status"] == "completed"
    assert body["message"]["role"] == "assistant" and body["message"]["parts"][-1]["text"] == "All done."
    assert response["X-Request-Id"] == body["requestId"]


def test_a_failed_model_call_ends_the_http_stream_with_an_error(client, model, token):
    model.script(Reply.error(500, "upstream exploded"))
    response = client.post(f"/agents/chat-agent/err-room/chat?format=json&token={token}", data={"text": "Hi"}, content_type="application/json")
    body = response.json()
    assert body["status"] == "error" and "upstream exploded" in body["error"]


def test_reattaching_to_an_unknown_request_id_is_a_404(client, token):
    assert client.get(f"/agents/chat-agent/room/streams/nope1234?token={token}").status_code == 404


def test_a_chat_request_without_text_or_messages_is_a_400(client, token):
    response = client.post(f"/agents/chat-agent/room/chat?token={token}", data={"nothing": 1}, content_type="application/json")
    assert response.status_code == 400 and "text" in response.json()["error"]


def test_cookie_authenticated_posts_need_the_csrf_token(user):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    response = browser.post("/agents/chat-agent/room/chat", data={"text": "Hi"}, content_type="application/json")
    assert response.status_code == 403


async def test_websocket_clients_of_the_session_watch_an_http_turn_live(open_socket, model, token):
    model.script(Reply.text("Seen by every tab", delay=0.05))
    socket = await open_socket("/agents/chat-agent/shared-room", token=token, wait_ready=True)
    http = AsyncClient()
    response = await http.post(
        f"/agents/chat-agent/shared-room/chat?token={token}", data={"text": "Hi", "requestId": "http0002"}, content_type="application/json"
    )
    body = b"".join([piece async for piece in response.streaming_content])
    frames = await socket.until(is_done("http0002"))
    seen = "".join(c["delta"] for c in chunks_of(frames, "http0002") if c["type"] == "text-delta")
    assert seen == "Seen by every tab" and b"Seen" in body
