"""Tools in the agentic loop: server tools, client tools, approvals, continuations
(protocol §9.2–§9.4) — ChatAgent against the scripted upstream."""
from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import resolve_session
from agents_app.storage import transcript
from agents_app.storage.models import Turn
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import chunks_of, is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
CHAT = "/agents/chat-agent/tools"


async def ready(open_socket, token):
    return await open_socket(CHAT, token=token, wait_ready=True)


async def stored(user):
    session = await sync_to_async(resolve_session)("chat-agent", "tools", user)
    return await sync_to_async(transcript.transcript)(session)


def tool_part(message, call_id):
    return next(p for p in message["parts"] if p.get("toolCallId") == call_id)


async def test_a_server_tool_runs_and_its_result_goes_back_to_the_model(open_socket, token, model, user):
    model.script(
        Reply.tool_calls([ToolCallSpec("getWeather", '{"city": "Paris"}', id="call_w")]),
        Reply.text("It is mild in Paris."),
    )
    socket = await ready(open_socket, token)
    await socket.chat("tool0001", [user_message("Weather in Paris?", "u1")])
    chunks = chunks_of(await socket.until(is_done("tool0001")), "tool0001")
    types = [c["type"] for c in chunks]
    assert types.index("tool-input-start") < types.index("tool-input-available") < types.index("tool-output-available")
    assert types.count("start-step") == 2
    output = next(c for c in chunks if c["type"] == "tool-output-available")["output"]
    assert output["city"] == "Paris"
    assert model.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "call_w", "content": json.dumps(output)}
    message = (await stored(user))[-1]
    assert tool_part(message, "call_w")["state"] == "output-available"
    assert message["parts"][-1]["text"] == "It is mild in Paris."


async def test_parallel_tool_calls_in_one_step_all_run(open_socket, token, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("getWeather", '{"city": "Oslo"}', id="c1"), ToolCallSpec("getWeather", '{"city": "Rome"}', id="c2")]),
        Reply.text("Done."),
    )
    socket = await ready(open_socket, token)
    await socket.chat("tool0002", [user_message("Two cities", "u1")])
    chunks = chunks_of(await socket.until(is_done("tool0002")), "tool0002")
    assert {c["toolCallId"] for c in chunks if c["type"] == "tool-output-available"} == {"c1", "c2"}
    assert [m["role"] for m in model.requests[1]["messages"][-2:]] == ["tool", "tool"]


async def test_invalid_tool_arguments_become_a_tool_error_the_model_sees(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("getWeather", '{"town": "Paris"}', id="bad")]), Reply.text("Sorry."))
    socket = await ready(open_socket, token)
    await socket.chat("tool0003", [user_message("Weather?", "u1")])
    chunks = chunks_of(await socket.until(is_done("tool0003")), "tool0003")
    error = next(c for c in chunks if c["type"] == "tool-output-error")
    assert error["toolCallId"] == "bad" and "city: Field required" in error["errorText"]
    assert "city: Field required" in model.requests[1]["messages"][-1]["content"]


async def test_unparseable_tool_arguments_are_reported_as_input_errors(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("getWeather", '{"city": ', id="cut")]), Reply.text("Oops."))
    socket = await ready(open_socket, token)
    await socket.chat("tool0004", [user_message("Weather?", "u1")])
    chunks = chunks_of(await socket.until(is_done("tool0004")), "tool0004")
    assert next(c for c in chunks if c["type"] == "tool-input-error")["toolCallId"] == "cut"


async def test_a_client_tool_pauses_the_turn_and_its_result_continues_it(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("getUserTimezone", "{}", id="tz")]), Reply.text("You are in Europe/Paris."))
    socket = await ready(open_socket, token)
    await socket.chat("tool0005", [user_message("What time zone am I in?", "u1")])
    await socket.until(is_done("tool0005"))
    assert tool_part((await stored(user))[-1], "tz")["state"] == "input-available"
    await socket.send({"type": "cf_agent_tool_result", "toolCallId": "tz", "toolName": "getUserTimezone", "output": "Europe/Paris", "autoContinue": True})
    updated = await socket.until(lambda f: f["type"] == "cf_agent_message_updated")
    assert tool_part(updated[-1]["message"], "tz") == {"type": "tool-getUserTimezone", "toolCallId": "tz", "state": "output-available", "input": {}, "output": "Europe/Paris", "preliminary": False}
    await socket.send({"type": "cf_agent_stream_resume_request", "probeId": "contprob"})
    pending = await socket.until(lambda f: f.get("probeId") == "contprob")
    assert pending[-1]["type"] == "cf_agent_stream_pending"
    continuation_id = pending[-1]["id"]
    assert continuation_id != "tool0005"
    await socket.until(lambda f: f == {"type": "cf_agent_stream_resuming", "id": continuation_id})
    await socket.send({"type": "cf_agent_stream_resume_ack", "id": continuation_id})
    frames = await socket.until(is_done(continuation_id))
    assert all(f.get("continuation") is True for f in frames if f.get("id") == continuation_id)
    start = next(c for c in chunks_of(frames, continuation_id) if c["type"] == "start")
    assert "messageId" not in start
    messages = await stored(user)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[-1]["parts"][-1]["text"] == "You are in Europe/Paris."
    assert model.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "tz", "content": "Europe/Paris"}


async def test_the_first_tool_result_wins(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("getUserTimezone", "{}", id="tz2")]))
    socket = await ready(open_socket, token)
    await socket.chat("tool0006", [user_message("tz?", "u1")])
    await socket.until(is_done("tool0006"))
    await socket.send({"type": "cf_agent_tool_result", "toolCallId": "tz2", "output": "first", "autoContinue": False})
    await socket.until(lambda f: f["type"] == "cf_agent_message_updated")
    await socket.send({"type": "cf_agent_tool_result", "toolCallId": "tz2", "output": "second", "autoContinue": False})
    # Frames the first answer or the ended turn still sends may arrive late on a loaded machine;
    # the second answer must add no message update of its own.
    late = await socket.frames_for(0.5)
    assert [f for f in late if f["type"] == "cf_agent_message_updated"] == []
    assert tool_part((await stored(user))[-1], "tz2")["output"] == "first"


async def test_an_approval_request_pauses_and_approving_runs_the_tool_then_continues(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/tmp/a.txt"}', id="del")]), Reply.text("Deleted it."))
    socket = await ready(open_socket, token)
    await socket.chat("appr0001", [user_message("Delete /tmp/a.txt", "u1")])
    chunks = chunks_of(await socket.until(is_done("appr0001")), "appr0001")
    request = next(c for c in chunks if c["type"] == "tool-approval-request")
    assert request["toolCallId"] == "del" and request["approvalId"]
    part = tool_part((await stored(user))[-1], "del")
    assert part["state"] == "approval-requested" and part["approval"] == {"id": request["approvalId"]}
    await socket.send({"type": "cf_agent_tool_approval", "toolCallId": "del", "approved": True, "autoContinue": True})
    updated = await socket.until(lambda f: f["type"] == "cf_agent_message_updated")
    assert tool_part(updated[-1]["message"], "del")["state"] == "approval-responded"
    resuming = await socket.until(lambda f: f["type"] == "cf_agent_stream_resuming")
    await socket.send({"type": "cf_agent_stream_resume_ack", "id": resuming[-1]["id"]})
    frames = await socket.until(is_done(resuming[-1]["id"]))
    output = next(c for c in chunks_of(frames, resuming[-1]["id"]) if c["type"] == "tool-output-available")
    assert output == {"type": "tool-output-available", "toolCallId": "del", "output": {"path": "/tmp/a.txt", "deleted": True}}
    final = (await stored(user))[-1]
    assert tool_part(final, "del")["state"] == "output-available" and final["parts"][-1]["text"] == "Deleted it."


async def test_denying_an_approval_tells_the_model_and_never_runs_the_tool(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("deleteFile", '{"path": "/etc"}', id="no")]), Reply.text("Understood, I won't."))
    socket = await ready(open_socket, token)
    await socket.chat("appr0002", [user_message("Delete /etc", "u1")])
    await socket.until(is_done("appr0002"))
    await socket.send({"type": "cf_agent_tool_approval", "toolCallId": "no", "approved": False, "autoContinue": True})
    updated = await socket.until(lambda f: f["type"] == "cf_agent_message_updated")
    assert tool_part(updated[-1]["message"], "no")["state"] == "output-denied"
    session = await sync_to_async(resolve_session)("chat-agent", "tools", user)
    for _ in range(100):
        if await sync_to_async(Turn.objects.filter(session=session, is_continuation=True, status="completed").exists)():
            break
        await asyncio.sleep(0.05)
    assert model.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "no", "content": "Tool execution denied by user."}
    final = (await stored(user))[-1]
    assert tool_part(final, "no")["state"] == "output-denied" and final["parts"][-1]["text"] == "Understood, I won't."


async def test_stray_and_duplicate_tool_answers_never_start_a_model_call(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("getUserTimezone", "{}", id="tz3")]), Reply.text("You are in Europe/Paris."))
    socket = await ready(open_socket, token)
    await socket.chat("stray001", [user_message("tz?", "u1")])
    await socket.until(is_done("stray001"))
    await socket.send({"type": "cf_agent_tool_result", "toolCallId": "tz3", "output": "Europe/Paris", "autoContinue": True})
    resuming = await socket.until(lambda f: f["type"] == "cf_agent_stream_resuming")
    await socket.send({"type": "cf_agent_stream_resume_ack", "id": resuming[-1]["id"]})
    await socket.until(is_done(resuming[-1]["id"]))
    await socket.send({"type": "cf_agent_tool_result", "toolCallId": "tz3", "output": "again", "autoContinue": True})
    await socket.send({"type": "cf_agent_tool_result", "toolCallId": "nobody", "output": "stray", "autoContinue": True})
    await socket.send({"type": "cf_agent_tool_approval", "toolCallId": "nobody", "approved": True, "autoContinue": True})
    await socket.send({"type": "cf_agent_stream_resume_request", "probeId": "afterstray"})
    answer = await socket.until(lambda f: f.get("probeId") == "afterstray")
    assert answer[-1] == {"type": "cf_agent_stream_resume_none", "reason": "idle", "probeId": "afterstray"}
    assert len(model.requests) == 2
    assert await sync_to_async(Turn.objects.filter(is_continuation=True).count)() == 1
    assert (await stored(user))[-1]["parts"][-1]["text"] == "You are in Europe/Paris."
