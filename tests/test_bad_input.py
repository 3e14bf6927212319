"""Bad input gets a clear error frame; the connection and other sessions keep working."""
from __future__ import annotations

import json

import pytest

from tests.conftest import user_message

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = "/agents/chat-agent/bad-input"


async def connected(open_socket, token, path=CHAT):
    return await open_socket(path, token=token, wait_ready=True)


async def assert_still_usable(socket):
    await socket.send({"type": "cf_agent_stream_resume_request", "probeId": "probe001"})
    assert await socket.next() == {"type": "cf_agent_stream_resume_none", "reason": "idle", "probeId": "probe001"}


async def test_non_json_text_gets_an_error_frame_and_the_socket_stays_open(open_socket, token):
    socket = await connected(open_socket, token)
    await socket.send_raw("this is not json")
    assert await socket.next() == {"type": "cf_agent_error", "error": "Frames must be JSON objects with a string 'type'."}
    await assert_still_usable(socket)


async def test_unknown_message_type_is_named_in_the_error(open_socket, token):
    socket = await connected(open_socket, token)
    await socket.send({"type": "cf_agent_teleport"})
    frame = await socket.next()
    assert frame["type"] == "cf_agent_error" and "cf_agent_teleport" in frame["error"]
    await assert_still_usable(socket)


async def test_chat_request_with_invalid_json_body_fails_that_request_only(open_socket, token):
    socket = await connected(open_socket, token)
    await socket.send({"type": "cf_agent_use_chat_request", "id": "bad00001", "init": {"method": "POST", "body": "{oops"}})
    frame = await socket.next()
    assert frame["id"] == "bad00001" and frame["done"] is True and frame["error"] is True
    assert "not valid JSON" in frame["body"]
    await assert_still_usable(socket)


async def test_chat_request_with_an_invalid_message_stores_nothing(open_socket, token, client):
    socket = await connected(open_socket, token)
    body = json.dumps({"messages": [{"id": "x", "role": "wizard", "parts": []}]})
    await socket.send({"type": "cf_agent_use_chat_request", "id": "bad00002", "init": {"method": "POST", "body": body}})
    frame = await socket.next()
    assert frame["error"] is True and "invalid role" in frame["body"]
    from asgiref.sync import sync_to_async

    response = await sync_to_async(client.get)(f"{CHAT}/get-messages?token={token}")
    assert response.json() == []


async def test_missing_required_fields_are_reported(open_socket, token):
    socket = await connected(open_socket, token)
    await socket.send({"type": "cf_agent_stream_resume_ack"})
    frame = await socket.next()
    assert frame == {"type": "cf_agent_error", "error": "cf_agent_stream_resume_ack needs a non-empty string 'id'", "frameType": "cf_agent_stream_resume_ack"}


async def test_oversized_frames_are_refused(open_socket, token, settings):
    settings.AGENTS_MAX_FRAME_BYTES = 1000
    socket = await connected(open_socket, token)
    await socket.chat("big00001", [user_message("x" * 2000)])
    frame = await socket.next()
    assert frame == {"type": "cf_agent_error", "error": "Frame too large: the limit is 1000 bytes."}
    await assert_still_usable(socket)


async def test_binary_frames_are_refused(open_socket, token):
    socket = await connected(open_socket, token)
    await socket.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await socket.next())["type"] == "cf_agent_error"
    await assert_still_usable(socket)


async def test_unknown_agent_is_refused_with_a_terminal_close_code(open_socket, token):
    socket = await open_socket("/agents/no-such-agent/room", token=token)
    assert await socket.next() == {"type": "cf_agent_error", "error": "Unknown agent 'no-such-agent'."}
    assert (await socket.communicator.receive_output(timeout=2))["code"] == 4004


async def test_unauthenticated_sockets_are_refused(open_socket):
    socket = await open_socket(CHAT)
    assert "Authentication required" in (await socket.next())["error"]
    assert (await socket.communicator.receive_output(timeout=2))["code"] == 4001


async def test_a_wrong_token_is_unauthenticated(open_socket):
    socket = await open_socket(CHAT, token="agt_not-a-real-token")
    assert "Authentication required" in (await socket.next())["error"]


async def test_anonymous_use_when_allowed(open_socket, settings):
    settings.AGENTS_ALLOW_ANONYMOUS = True
    socket = await open_socket(CHAT)
    assert (await socket.next())["type"] == "cf_agent_chat_messages"


async def test_a_foreign_origin_cannot_open_a_socket(open_socket, token):
    await open_socket(CHAT, token=token, headers=[(b"origin", b"https://evil.example")], expect_connected=False)


async def test_bad_frames_on_one_session_leave_another_session_untouched(open_socket, token):
    noisy = await connected(open_socket, token)
    quiet = await connected(open_socket, token, "/agents/chat-agent/quiet-room")
    await noisy.send_raw("garbage")
    await noisy.next()
    assert await quiet.no_frame()
    await assert_still_usable(quiet)
