"""A turn that fails in any way ends for everyone (README "Failure behaviour").

Each stage of a turn is made to raise in turn (agents_app/testing/faults.py), for a turn
started by a WebSocket client, an HTTP/SSE client and an OpenAI-compatible /v1 client (streamed
and not). Whatever the stage, the client that started the turn and another tab watching the
session get the protocol's error outcome within seconds, the Turn row ends in `error` with the
reason, the session's turn lock is released, what streamed before the fault is kept, and the
next turn of the session works. A fault after the outcome was delivered (releasing the lock,
`on_chat_response`) leaves that outcome alone and is logged.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from agents_app.turns.instances import resolve_session
from agents_app.turns.runner import ADMISSION_FAILED
from agents_app.storage import transcript
from agents_app.storage.models import Session, Turn
from agents_app.testing import faults
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import is_done, user_message
from tests.plugins.live_server import start_live_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]

PATH = "/agents/chat-agent/faulty"
ANSWER = "Paris is sunny today, enjoy the walk."
# Faults after the outcome was delivered: the turn stays completed, the failure is logged.
AFTER_OUTCOME = ("lock_release", "on_chat_response")
# Stages reached once something with content streamed: that content is kept as the partial.
PARTIAL_KEPT = {"model_stream": "text", "tool": "tool-getWeather", "reply_write": "text"}
UNTIL = 15  # seconds: "within a bound", far below any client timeout


def weather_then_answer(request: dict[str, Any]) -> Reply:
    """Every turn calls a server tool, then answers: one turn passes every stage."""
    if request["messages"][-1]["role"] == "tool":
        return Reply.text(ANSWER)
    return Reply.tool_calls([ToolCallSpec("getWeather", '{"city": "Paris"}')])


@dataclass
class Seen:
    """What the client that started the turn observed."""

    request_id: str
    failed: bool
    error: str = ""


@dataclass
class Clients:
    open_socket: Any
    token: str


async def over_websocket(clients: Clients) -> Seen:
    socket = await clients.open_socket(PATH, token=clients.token, wait_ready=True)
    request_id = f"ws-{uuid.uuid4().hex[:10]}"
    await socket.chat(request_id, [user_message("Weather in Paris?")])
    seen = await socket.until(is_done(request_id), timeout=UNTIL)
    errors = [f for f in seen if f.get("id") == request_id and f.get("error")]
    await socket.close()
    return Seen(request_id, bool(errors), errors[-1]["body"] if errors else "")


def _sse_data(body: bytes) -> list[str]:
    return [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]


async def _read(response: Any) -> bytes:
    return b"".join([piece async for piece in response.streaming_content])


async def over_sse(clients: Clients) -> Seen:
    """POST …/chat: the AI SDK's UI message stream."""
    response = await AsyncClient().post(
        f"{PATH}/chat?token={clients.token}", data={"text": "Weather in Paris?"}, content_type="application/json"
    )
    if response.status_code != 200:
        return Seen("", True, json.loads(response.content)["error"])
    events = _sse_data(await asyncio.wait_for(_read(response), UNTIL))
    assert events[-1] == "[DONE]"
    errors = [json.loads(e)["errorText"] for e in events[:-1] if json.loads(e).get("type") == "error"]
    return Seen(response["X-Request-Id"], bool(errors), errors[-1] if errors else "")


async def _v1(clients: Clients, stream: bool) -> Any:
    return await AsyncClient().post(
        "/v1/chat/completions",
        data={"model": "chat-agent/faulty", "messages": [{"role": "user", "content": "Weather in Paris?"}], "stream": stream},
        content_type="application/json",
        headers={"Authorization": f"Bearer {clients.token}"},
    )


async def over_v1_stream(clients: Clients) -> Seen:
    response = await _v1(clients, stream=True)
    if response.status_code != 200:
        return Seen("", True, json.loads(response.content)["error"]["message"])
    events = _sse_data(await asyncio.wait_for(_read(response), UNTIL))
    assert events[-1] == "[DONE]"
    errors = [json.loads(e)["error"]["message"] for e in events[:-1] if "error" in json.loads(e)]
    return Seen(response["X-Request-Id"], bool(errors), errors[-1] if errors else "")


async def over_v1(clients: Clients) -> Seen:
    response = await asyncio.wait_for(_v1(clients, stream=False), UNTIL)
    body = json.loads(response.content)
    if response.status_code != 200:
        request_id = response.headers.get("X-Request-Id", "")
        return Seen(request_id, True, body["error"]["message"])
    assert body["choices"][0]["message"]["content"] == ANSWER
    return Seen(response["X-Request-Id"], False)


CLIENTS: dict[str, Callable[[Clients], Awaitable[Seen]]] = {
    "websocket": over_websocket,
    "sse": over_sse,
    "v1-stream": over_v1_stream,
    "v1": over_v1,
}


async def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await sync_to_async(condition)():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("stage", faults.STAGES)
async def test_a_fault_at_any_stage_ends_the_turn_for_every_waiter(stage, client, settings, model, open_socket, token, user, caplog):
    model.responder = weather_then_answer
    clients = Clients(open_socket, token)
    other_tab = await open_socket(PATH, token=token, wait_ready=True)
    session = await sync_to_async(resolve_session)("chat-agent", "faulty", user)
    settings.AGENTS_FAULT_INJECTION = stage

    seen = await CLIENTS[client](clients)

    fails = stage not in AFTER_OUTCOME
    assert seen.failed is fails
    if stage == "admission":
        # Nothing was recorded: the requester is told, nobody else was waiting.
        assert seen.error == ADMISSION_FAILED
        assert not await sync_to_async(Turn.objects.filter(session=session).exists)()
    else:
        if fails:
            assert f"Injected fault at {stage}." in seen.error
        if not seen.request_id:  # the non-streamed /v1 error body names no request id
            seen.request_id = await sync_to_async(lambda: Turn.objects.filter(session=session).latest("id").request_id)()
        watched = await other_tab.until(is_done(seen.request_id), timeout=UNTIL)
        assert any(f.get("error") for f in watched if f.get("id") == seen.request_id) is fails
        turn = await sync_to_async(Turn.objects.get)(session=session, request_id=seen.request_id)
        assert turn.status == ("error" if fails else "completed")
        assert (f"Injected fault at {stage}." in turn.error_text) is fails
        await eventually(lambda: Session.objects.get(pk=session.pk).turn_lock == "")
        if stage in PARTIAL_KEPT:
            kept = (await sync_to_async(transcript.transcript)(session))[-1]
            assert kept["role"] == "assistant" and kept["id"] == turn.message_uid
            assert PARTIAL_KEPT[stage] in [part["type"] for part in kept["parts"]]
    if not fails:
        await eventually(lambda: any(f"Injected fault at {stage}." in str(r.exc_info and r.exc_info[1]) for r in caplog.records))

    settings.AGENTS_FAULT_INJECTION = ""
    again = await CLIENTS[client](clients)
    assert not again.failed
    answered = (await sync_to_async(transcript.transcript)(session))[-1]
    assert answered["parts"][-1] == {"type": "text", "text": ANSWER, "state": "done"}


@pytest.mark.parametrize("stage", ["agent_load", "model_stream", "reply_write"])
def test_a_live_server_with_a_fault_armed_by_the_environment_answers_with_an_error_then_serves(stage, model, token, transactional_db):
    """`stage:1` fails the first turn that reaches it in the daphne process, not the next."""
    model.responder = weather_then_answer
    server = start_live_server(model.base_url, {"AGENTS_FAULT_INJECTION": f"{stage}:1"})
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0, timeout=UNTIL) as sdk:
            ask = {"model": "chat-agent/live", "messages": [{"role": "user", "content": "Weather in Paris?"}]}
            with pytest.raises(openai.APIError, match=f"Injected fault at {stage}"):
                list(sdk.chat.completions.create(**ask, stream=True))
            assert sdk.chat.completions.create(**ask).choices[0].message.content == ANSWER
    finally:
        server.stop()
