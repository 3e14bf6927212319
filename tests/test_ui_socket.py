"""The chat page's socket (/ui/ws/…) changing a session: "always allow this tool", browser tool
results and inline edits go through the same runtime paths as the cf_agent_chat protocol, so
a protocol client on the same session (used here to drive and observe the turns) sees them.

"Always allow" ticked on an approval card is stored on the session and the model loop stops
asking for that tool, for every client."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from agents_app.turns.instances import resolve_session
from agents_app.storage import transcript
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import chunks_of, connect_page_socket, is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
CHAT = "/agents/chat-agent/always"


def turn_done_other_than(request_id: str):
    return lambda f: f.get("type") == "cf_agent_use_chat_response" and f.get("done") and f.get("id") != request_id


async def page_socket(user) -> WebsocketCommunicator:
    """The chat page's socket, authenticated by the browser session cookie."""
    return await connect_page_socket(user, "chat-agent", "always")


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
    await socket.until(turn_done_other_than("allow001"), timeout=15)
    assert await allowed_tools(user) == ["deleteFile"]

    second = await ask_to_delete(socket, "allow002", "second")
    assert not any(c["type"] == "tool-approval-request" for c in second)
    output = next(c for c in second if c["type"] == "tool-output-available" and c["toolCallId"] == "second")
    assert output["output"] == {"path": "/tmp/b", "deleted": True}
    await page.disconnect()


async def test_always_allowing_a_tool_for_the_agent_lets_the_owners_other_chats_run_it_without_asking(open_socket, token, model, user):
    model.script(
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/e"}', id="here")]),
        Reply.text("Deleted /tmp/e."),
        Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/f"}', id="elsewhere")]),
        Reply.text("Deleted /tmp/f."),
    )
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    await ask_to_delete(socket, "allow006", "here")
    await page.send_to(text_data=json.dumps({"action": "approve", "tool_call_id": "here", "scope": "agent"}))
    await socket.until(turn_done_other_than("allow006"), timeout=15)

    other_chat = await open_socket("/agents/chat-agent/elsewhere", token=token, wait_ready=True)
    elsewhere = await ask_to_delete(other_chat, "allow007", "elsewhere")
    assert not any(c["type"] == "tool-approval-request" for c in elsewhere)
    output = next(c for c in elsewhere if c["type"] == "tool-output-available" and c["toolCallId"] == "elsewhere")
    assert output["output"] == {"path": "/tmp/f", "deleted": True}
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
    await socket.until(turn_done_other_than("allow003"), timeout=15)
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
    await socket.until(turn_done_other_than("allow005"), timeout=15)
    assert await allowed_tools(user) == []
    await page.disconnect()


async def test_a_browser_tool_output_sent_by_the_page_answers_the_call_and_continues_the_turn(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("get_timezone", "{}", id="tz")]), Reply.text("You are in Tokyo."))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    await socket.chat("page0001", [user_message("Where am I?", "u-tz")])
    await socket.until(is_done("page0001"))
    await page.send_to(text_data=json.dumps({"action": "tool_result", "tool_call_id": "tz", "tool_name": "get_timezone", "output": '{"timeZone": "Asia/Tokyo"}', "error": ""}))
    updated = await socket.until(lambda f: f["type"] == "cf_agent_message_updated")
    part = next(p for p in updated[-1]["message"]["parts"] if p.get("toolCallId") == "tz")
    assert (part["state"], part["output"]) == ("output-available", {"timeZone": "Asia/Tokyo"})
    await socket.until(turn_done_other_than("page0001"), timeout=15)
    assert model.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "tz", "content": '{"timeZone": "Asia/Tokyo"}'}
    await page.disconnect()


async def test_a_browser_tool_error_reaches_the_model_as_the_calls_error(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("get_location", "{}", id="geo")]), Reply.text("No location then."))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    await socket.chat("page0002", [user_message("Where am I?", "u-geo")])
    await socket.until(is_done("page0002"))
    refusal = "The user did not allow access to their location."
    await page.send_to(text_data=json.dumps({"action": "tool_result", "tool_call_id": "geo", "tool_name": "get_location", "output": "", "error": refusal}))
    updated = await socket.until(lambda f: f["type"] == "cf_agent_message_updated")
    part = next(p for p in updated[-1]["message"]["parts"] if p.get("toolCallId") == "geo")
    assert (part["state"], part["errorText"]) == ("output-error", refusal)
    await socket.until(turn_done_other_than("page0002"), timeout=15)
    assert refusal in model.requests[1]["messages"][-1]["content"]
    await page.disconnect()


async def test_an_edit_from_the_page_answers_anew_and_keeps_the_original_as_a_sibling(open_socket, token, model, user):
    model.script(Reply.text("Paris."), Reply.text("Rome."))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    await page.send_to(text_data=json.dumps({"action": "send", "message": "Capital of France?"}))
    await socket.until(lambda f: f.get("type") == "cf_agent_use_chat_response" and f.get("done"), timeout=15)
    session = await sync_to_async(resolve_session)("chat-agent", "always", user)
    question = (await sync_to_async(transcript.transcript)(session))[0]
    await page.send_to(text_data=json.dumps({"action": "edit", "message_id": question["id"], "message": "Capital of Italy?"}))
    await socket.until(lambda f: f.get("type") == "cf_agent_use_chat_response" and f.get("done"), timeout=15)
    edited = await sync_to_async(transcript.transcript)(session)
    assert [(m["role"], m["parts"][-1]["text"]) for m in edited] == [("user", "Capital of Italy?"), ("assistant", "Rome.")]
    branch = edited[0]["metadata"]["branch"]
    assert (branch["index"], branch["count"]) == (1, 2)
    original = await sync_to_async(transcript.history)(session, branch["siblings"][0])
    assert [m["parts"][-1]["text"] for m in original] == ["Capital of France?"]
    assert await sync_to_async(transcript.children)(session, branch["siblings"][0])
    await page.disconnect()


async def test_the_pages_stop_button_aborts_the_running_answer_and_keeps_what_was_said(open_socket, token, model, user):
    model.script(Reply.text(" ".join(f"w{i}" for i in range(200)), delay=0.05))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    await socket.chat("stop0001", [user_message("Count slowly", "u-stop")])
    await socket.until(lambda f: "w3" in f.get("body", ""))

    await page.send_to(text_data=json.dumps({"action": "stop"}))

    await socket.until(is_done("stop0001"), timeout=15)
    said = "".join(c.get("delta", "") for c in chunks_of(socket.received, "stop0001") if c.get("type") == "text-delta")
    assert said.startswith("w0 w1 w2 w3") and "w199" not in said
    session = await sync_to_async(resolve_session)("chat-agent", CHAT.rsplit("/", 1)[-1], user)
    stored = (await sync_to_async(transcript.transcript)(session))[-1]
    assert stored["role"] == "assistant" and "w199" not in str(stored)
    await page.disconnect()


async def test_an_approval_from_the_page_is_applied_while_asgirefs_shared_thread_is_busy(open_socket, token, model, user):
    """The page's frames and the tool-state writes they cause run on the database threads: a
    long call on asgiref's one shared thread elsewhere in the process holds none of them up."""
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/c"}', id="busy")]), Reply.text("Deleted /tmp/c."))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    page = await page_socket(user)
    assert any(c["type"] == "tool-approval-request" for c in await ask_to_delete(socket, "busy001", "busy"))
    release = threading.Event()
    busy = asyncio.ensure_future(sync_to_async(release.wait)(30))
    try:
        await page.send_to(text_data=json.dumps({"action": "approve", "tool_call_id": "busy"}))
        frames = await socket.until(turn_done_other_than("busy001"), timeout=10)
        said = "".join(json.loads(f["body"]).get("delta", "") for f in frames if f.get("type") == "cf_agent_use_chat_response" and f.get("body"))
        assert said == "Deleted /tmp/c."
        assert not busy.done()
    finally:
        release.set()
        await busy
