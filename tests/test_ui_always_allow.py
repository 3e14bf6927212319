""""Always allow this tool in this session": ticked on an approval card in the chat page, it
is stored on the session and the model loop stops asking for that tool, for every client —
shown here with the protocol socket (cf_agent_chat) driving the turns."""
from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from agents_app.runtime.instances import resolve_session
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import chunks_of, is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
CHAT = "/agents/chat-agent/always"


async def page_socket(user) -> WebsocketCommunicator:
    """The chat page's socket, authenticated by the browser session cookie."""
    from chatproject.asgi import application

    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(application, "/ui/ws/chat-agent/always/", headers=[(b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def allowed_tools(user) -> list[str]:
    session = await sync_to_async(resolve_session)("chat-agent", "always", user)
    return session.allowed_tools


async def ask_to_delete(socket, request_id: str, call_id: str) -> list[dict]:
    await socket.chat(request_id, [user_message(f"Delete {call_id}", f"u-{call_id}")])
    return chunks_of(await socket.until(is_done(request_id)), request_id)


async def test_always_allowing_a_tool_on_the_page_lets_later_protocol_turns_run_it_without_asking(open_socket, token, model, user):
    model.script(
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/a"}', id="first")]),
        Reply.text("Deleted /tmp/a."),
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/b"}', id="second")]),
        Reply.text("Deleted /tmp/b."),
    )
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    first = await ask_to_delete(socket, "allow001", "first")
    assert any(c["type"] == "tool-approval-request" for c in first)

    await page.send_to(text_data=json.dumps({"action": "approve", "tool_call_id": "first", "always": "true"}))
    await socket.until(lambda f: f.get("type") == "cf_agent_use_chat_response" and f.get("done") and f.get("id") != "allow001", timeout=15)
    assert await allowed_tools(user) == ["deleteFile"]

    second = await ask_to_delete(socket, "allow002", "second")
    assert not any(c["type"] == "tool-approval-request" for c in second)
    output = next(c for c in second if c["type"] == "tool-output-available" and c["toolCallId"] == "second")
    assert output["output"] == {"path": "/tmp/b", "deleted": True}
    await page.disconnect()


async def test_a_plain_approval_still_asks_again_next_time(open_socket, token, model, user):
    model.script(
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/c"}', id="once")]),
        Reply.text("Deleted /tmp/c."),
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/d"}', id="again")]),
    )
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    await ask_to_delete(socket, "allow003", "once")
    await page.send_to(text_data=json.dumps({"action": "approve", "tool_call_id": "once"}))
    await socket.until(lambda f: f.get("type") == "cf_agent_use_chat_response" and f.get("done") and f.get("id") != "allow003", timeout=15)
    assert await allowed_tools(user) == []
    again = await ask_to_delete(socket, "allow004", "again")
    assert any(c["type"] == "tool-approval-request" and c["toolCallId"] == "again" for c in again)
    await page.disconnect()


async def test_always_allow_on_a_rejection_allows_nothing(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/etc"}', id="no")]), Reply.text("Not deleted."))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    await ask_to_delete(socket, "allow005", "no")
    await page.send_to(text_data=json.dumps({"action": "reject", "tool_call_id": "no", "always": "true"}))
    await socket.until(lambda f: f.get("type") == "cf_agent_message_updated")
    assert await allowed_tools(user) == []
    await page.disconnect()
