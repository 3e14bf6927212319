"""Every message is validated at the door (protocol §10.1-10.3): a malformed message, a NUL
character or JSON nested deeper than the limit gets a clear error and stores nothing, so the
session keeps working — over WebSocket, HTTP, setMessages and save_messages alike."""
from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.protocol.messages import InvalidMessage
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.storage import transcript
from agents_app.storage.models import Turn
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
SCRIPTED = "/agents/scripted-agent/door"


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"next": value}
    return value


BAD_MESSAGES = {
    "nul-in-text": ({"id": "m1", "role": "user", "parts": [{"type": "text", "text": "a\u0000b"}]}, "NUL"),
    "deep-metadata": ({"id": "m1", "role": "user", "parts": [], "metadata": nested(600)}, "nested deeper than 64"),
    "metadata-not-object": ({"id": "m1", "role": "user", "parts": [], "metadata": "hello"}, "metadata"),
    "text-not-string": ({"id": "m1", "role": "user", "parts": [{"type": "text", "text": {"x": 1}}]}, "'text'"),
    "tool-without-call-id": (
        {"id": "m1", "role": "assistant", "parts": [{"type": "tool-getWeather", "state": "input-available", "input": {}}]},
        "toolCallId",
    ),
    "tool-with-unknown-state": (
        {"id": "m1", "role": "assistant", "parts": [{"type": "tool-x", "toolCallId": "c1", "state": "exploded"}]},
        "state",
    ),
    "nul-in-key": ({"id": "m1", "role": "user", "parts": [], "metadata": {"k\u0000": 1}}, "NUL"),
}


async def stored_messages(user: Any, name: str = "door") -> list[dict[str, Any]]:
    session = await sync_to_async(resolve_session)("scripted-agent", name, user)
    return await sync_to_async(transcript.transcript)(session)


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
async def test_a_malformed_chat_request_is_refused_and_the_session_keeps_working(case, open_socket, token, user):
    message, expected = BAD_MESSAGES[case]
    socket = await open_socket(SCRIPTED, token=token, wait_ready=True)
    await socket.chat("badreq01", [message])
    frame = await socket.next()
    assert frame["id"] == "badreq01" and frame["error"] is True and frame["done"] is True
    assert expected in frame["body"]
    assert await stored_messages(user) == []
    assert not await sync_to_async(Turn.objects.filter(request_id="badreq01").exists)()
    await socket.chat("goodreq1", [user_message("Still there?", "ok1")])
    frames = await socket.until(is_done("goodreq1"))
    assert not any(f.get("error") for f in frames)
    assert [m["id"] for m in await stored_messages(user)][0] == "ok1"


@pytest.mark.parametrize("case", ["nul-in-text", "deep-metadata", "metadata-not-object", "tool-without-call-id"])
async def test_set_messages_refuses_a_malformed_message_and_stores_nothing(case, open_socket, token, user):
    message, expected = BAD_MESSAGES[case]
    socket = await open_socket(SCRIPTED, token=token, wait_ready=True)
    await socket.send({"type": "cf_agent_chat_messages", "messages": [message]})
    frame = await socket.next()
    assert frame["type"] == "cf_agent_error" and expected in frame["error"]
    assert await stored_messages(user) == []


@pytest.mark.parametrize("case", ["nul-in-text", "deep-metadata", "text-not-string"])
def test_the_http_chat_endpoint_answers_400_for_a_malformed_message(case, client, token, user):
    message, expected = BAD_MESSAGES[case]
    response = client.post(
        f"/agents/chat-agent/door/chat?format=json&token={token}", data=json.dumps({"messages": [message]}), content_type="application/json"
    )
    assert response.status_code == 400 and expected in response.json()["error"]
    assert not Turn.objects.exists()


def test_an_http_body_with_a_nul_character_is_refused(client, token):
    payload = {"text": "hello", "body": {"note": "x\u0000y"}}
    response = client.post(f"/agents/chat-agent/door/chat?format=json&token={token}", data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 400 and "NUL" in response.json()["error"]
    assert not Turn.objects.exists()


@pytest.mark.parametrize("case", ["nul-in-text", "metadata-not-object", "tool-without-call-id"])
async def test_save_messages_refuses_a_malformed_message_before_admitting_a_turn(case, user):
    message, expected = BAD_MESSAGES[case]
    session = await sync_to_async(resolve_session)("scripted-agent", "door", user)
    agent = await sync_to_async(load_agent)(session)
    with pytest.raises(InvalidMessage, match=expected):
        await agent.save_messages([message])
    assert not await sync_to_async(Turn.objects.exists)()
    assert await stored_messages(user) == []


async def test_a_frame_nested_a_thousand_levels_gets_an_error_frame(open_socket, token):
    socket = await open_socket(SCRIPTED, token=token, wait_ready=True)
    await socket.send_raw("[" * 1000 + "]" * 1000)
    frame = await socket.next()
    assert frame["type"] == "cf_agent_error" and "nested deeper than 64" in frame["error"]
    await socket.send({"type": "cf_agent_stream_resume_request", "probeId": "p1"})
    assert (await socket.next())["type"] == "cf_agent_stream_resume_none"
