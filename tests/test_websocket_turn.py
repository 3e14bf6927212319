"""A full turn over the cf_agent_chat WebSocket protocol against the fake upstream (protocol §9.1)."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import resolve_session
from agents_app.storage import transcript
from agents_app.storage.models import Turn
from agents_app.testing.fake_openai import Reply
from tests.conftest import chunks_of, is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
CHAT = "/agents/chat-agent/room-1"


async def test_connect_sends_the_think_transcript_then_identity_and_empty_mcp(open_socket, token):
    socket = await open_socket(CHAT, token=token)
    first = [await socket.next() for _ in range(3)]
    assert first == [
        {"type": "cf_agent_chat_messages", "messages": []},
        {"type": "cf_agent_identity", "name": "room-1", "agent": "chat-agent"},
        {"type": "cf_agent_mcp_servers", "mcp": {"prompts": [], "resources": [], "servers": {}, "tools": []}},
    ]


async def test_a_turn_streams_chunks_then_done_and_persists_both_messages(open_socket, token, model, user):
    model.script(Reply.text("Hello there!", chunks=["Hel", "lo ", "there!"]))
    socket = await open_socket(CHAT, token=token)
    await socket.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    await socket.chat("req00001", [user_message("Hi", "u1")])
    frames = await socket.until(is_done("req00001"))
    chunks = chunks_of(frames, "req00001")
    assert [c["type"] for c in chunks][:2] == ["start", "start-step"]
    assert chunks[-1]["type"] == "finish"
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "Hello there!"
    session = await sync_to_async(resolve_session)("chat-agent", "room-1", user)
    stored = await sync_to_async(transcript.transcript)(session)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["id"] == chunks[0]["messageId"]
    assert stored[1]["parts"][-1] == {"type": "text", "text": "Hello there!", "state": "done"}
    assert model.requests[0]["messages"][-1] == {"role": "user", "content": "Hi"}
    assert model.requests[0]["stream_options"] == {"include_usage": True}


async def test_a_second_connection_sees_the_stream_and_the_final_transcript(open_socket, token, model):
    model.script(Reply.text("Shared answer"))
    sender = await open_socket(CHAT, token=token)
    observer = await open_socket(CHAT, token=token)
    for socket in (sender, observer):
        await socket.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    await sender.chat("req00002", [user_message("Hello both", "u2")])
    seen = await observer.until(lambda f: f["type"] == "cf_agent_chat_messages" and len(f["messages"]) == 2)
    assert "".join(c.get("delta", "") for c in chunks_of(seen, "req00002")) == "Shared answer"
    assert seen[-1]["messages"][1]["parts"][-1]["text"] == "Shared answer"


async def test_get_messages_returns_what_the_stream_assembled(open_socket, token, model, client):
    model.script(Reply.text("Persisted words"))
    socket = await open_socket(CHAT, token=token)
    await socket.chat("req00003", [user_message("Store this", "u3")])
    await socket.until(is_done("req00003"))
    await socket.until(lambda f: f["type"] == "cf_agent_chat_messages" and len(f["messages"]) == 2)
    response = await sync_to_async(client.get)(f"{CHAT}/get-messages?token={token}")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert [m["id"] for m in response.json()][0] == "u3"
    assert response.json()[1]["parts"][-1]["text"] == "Persisted words"


async def test_an_upstream_error_reaches_the_client_as_error_then_done(open_socket, token, model):
    model.script(Reply.error(status=500, message="upstream exploded"))
    socket = await open_socket(CHAT, token=token)
    await socket.chat("req00004", [user_message("Break", "u4")])
    frames = await socket.until(is_done("req00004"))
    errors = [f for f in frames if f.get("error")]
    assert len(errors) == 1 and errors[0]["done"] is False
    assert errors[0]["body"] == "The model service returned an error (HTTP 500): upstream exploded"
    assert "sk-test-secret" not in json.dumps(frames)
    assert frames[-1] == {"type": "cf_agent_use_chat_response", "id": "req00004", "body": "", "done": True}


async def test_cancel_aborts_the_turn_closes_the_upstream_call_and_keeps_the_partial(open_socket, token, model, user):
    model.script(Reply.text("one two three four five six seven eight", chunk_size=4, delay=0.2))
    socket = await open_socket(CHAT, token=token)
    await socket.chat("req00005", [user_message("Count slowly", "u5")])
    await socket.until(lambda f: f.get("body", "").startswith('{"type":"text-delta"'))
    await socket.send({"type": "cf_agent_chat_request_cancel", "id": "req00005"})
    frames = await socket.until(is_done("req00005"))
    assert frames[-1]["body"] == "" and not frames[-1].get("error")
    assert await sync_to_async(model.wait_for_disconnect)(5)
    session = await sync_to_async(resolve_session)("chat-agent", "room-1", user)
    turn = await sync_to_async(Turn.objects.get)(session=session, request_id="req00005")
    assert turn.status == "aborted"
    stored = await sync_to_async(transcript.transcript)(session)
    partial = stored[-1]["parts"][-1]["text"]
    assert partial and "one two three four five six seven eight".startswith(partial)


async def test_an_upstream_timeout_is_reported_as_a_readable_error(open_socket, token, model, settings):
    settings.AGENTS_MODEL_TIMEOUT = 0.5
    model.script(Reply.text("too late", first_token_delay=2))
    socket = await open_socket(CHAT, token=token)
    await socket.chat("slow0001", [user_message("Hurry", "u7")])
    frames = await socket.until(is_done("slow0001"))
    assert [f["body"] for f in frames if f.get("error")] == ["The model did not answer in time. Please try again."]


async def test_an_upstream_that_drops_the_connection_mid_answer_ends_the_turn_with_an_error(open_socket, token, model, user):
    model.script(Reply.broken("one two three four five", after=2))
    socket = await open_socket(CHAT, token=token)
    await socket.chat("drop0001", [user_message("Go", "u8")])
    frames = await socket.until(is_done("drop0001"))
    errors = [f for f in frames if f.get("error")]
    assert [e["body"] for e in errors] == ["The connection to the model service broke off mid-answer. Please try again."]
    session = await sync_to_async(resolve_session)("chat-agent", "room-1", user)
    stored = await sync_to_async(transcript.transcript)(session)
    assert stored[-1]["parts"][-1]["text"] == "one two"


async def test_cancel_ends_the_stream_with_an_abort_chunk_before_done(open_socket, token, model):
    model.script(Reply.text("a b c d e f g h i j", delay=0.2))
    socket = await open_socket(CHAT, token=token)
    await socket.chat("abort001", [user_message("Go", "u9")])
    await socket.until(lambda f: '"text-delta"' in f.get("body", ""))
    await socket.send({"type": "cf_agent_chat_request_cancel", "id": "abort001"})
    frames = await socket.until(is_done("abort001"))
    assert chunks_of(frames, "abort001")[-1] == {"type": "abort"}


async def test_a_chat_request_sent_again_with_its_id_runs_once_and_stores_nothing_new(open_socket, token, model, user):
    model.script(Reply.text("Answered once."), Reply.text("The next turn."))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    await socket.chat("req-again", [user_message("Hi", "u-again")])
    await socket.until(is_done("req-again"))
    await socket.chat("req-again", [user_message("Hi", "u-again"), user_message("Sneaked in", "u-sneaked")])
    await socket.chat("req-next", [user_message("Hi", "u-again"), user_message("And now?", "u-next")])
    await socket.until(is_done("req-next"))
    session = await sync_to_async(resolve_session)("chat-agent", "room-1", user)
    stored = await sync_to_async(transcript.transcript)(session)
    assert [m["id"] for m in stored if m["role"] == "user"] == ["u-again", "u-next"]
    assert [m["parts"][-1]["text"] for m in stored if m["role"] == "assistant"] == ["Answered once.", "The next turn."]
    assert model.request_count == 2
    assert await Turn.objects.filter(session=session).acount() == 2


async def test_a_turn_streams_while_asgirefs_shared_thread_is_busy(open_socket, token, model):
    """A socket's frames and its turns query on the database threads: a long call on asgiref's
    one shared thread (a sync view or tool elsewhere in the process) holds none of them up."""
    model.script(Reply.text("Still answering"))
    socket = await open_socket(CHAT, token=token, wait_ready=True)
    release = threading.Event()
    busy = asyncio.ensure_future(sync_to_async(release.wait)(30))
    try:
        await socket.chat("shared-busy", [user_message("Hi", "u-shared-busy")])
        frames = await socket.until(is_done("shared-busy"), timeout=10)
        assert "".join(c["delta"] for c in chunks_of(frames, "shared-busy") if c["type"] == "text-delta") == "Still answering"
        assert not busy.done()
    finally:
        release.set()
        await busy
