"""Interrupted tool calls (protocol §11.5, think.md §8.4, conformance 148 and 188): a tool part
whose process died before its output is repaired before the next model call, per part, and
no longer holds back the continuation after a client tool's result."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from agents_app.providers.convert import DENIED_TOOL_TEXT
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.turns.repair import INTERRUPTED_TOOL_TEXT
from agents_app.testing.fake_openai import Reply
from tests.conftest import is_done, user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


@pytest.fixture(autouse=True)
def _long_agents() -> None:
    import tests.long_agents  # noqa: F401 - registers the agents


async def agent_for(user, segment="report-agent", name="repair"):
    session = await sync_to_async(resolve_session)(segment, name, user)
    return await sync_to_async(load_agent)(session)


def call(call_id: str, state: str, tool: str = "fetch_weather", **fields) -> dict:
    return {"type": f"tool-{tool}", "toolCallId": call_id, "state": state, "input": {"city": "Oslo"}, **fields}


def parts_by_call(message: dict) -> dict:
    return {p["toolCallId"]: p for p in message["parts"] if "toolCallId" in p}


def tool_results(request: dict) -> dict:
    return {m["tool_call_id"]: m["content"] for m in request["messages"] if m["role"] == "tool"}


async def test_a_dead_server_call_does_not_block_the_continuation_after_a_client_tools_result(user, model, token, open_socket):
    agent = await agent_for(user)
    await agent.persist_messages([
        user_message("Weather, and pick a colour", "u1"),
        {"id": "a1", "role": "assistant", "parts": [{"type": "step-start"}, call("w1", "input-available"), call("pc", "input-available", "pick_colour", input={})]},
    ])
    model.script(Reply.text("Blue it is; the weather lookup was interrupted."))
    socket = await open_socket("/agents/report-agent/repair", token=token, wait_ready=True)
    await socket.send({"type": "cf_agent_tool_result", "toolCallId": "pc", "toolName": "pick_colour", "output": "blue", "autoContinue": True})
    # The continuation is offered to the tab that answered, as a stream to resume.
    offered = await socket.until(lambda f: f["type"] == "cf_agent_stream_resuming")
    await socket.send({"type": "cf_agent_stream_resume_ack", "id": offered[-1]["id"]})
    frames = offered + await socket.until(is_done(offered[-1]["id"]))
    assert tool_results(model.requests[0]) == {"w1": INTERRUPTED_TOOL_TEXT, "pc": "blue"}
    repaired = [f["message"] for f in frames if f["type"] == "cf_agent_message_updated" and parts_by_call(f["message"])["w1"]["state"] == "output-error"]
    assert repaired, "every tab is shown the repaired call"
    stored = parts_by_call((await agent.get_messages())[1])
    assert stored["w1"] == {**call("w1", "output-error"), "errorText": INTERRUPTED_TOOL_TEXT}
    assert stored["pc"]["state"] == "output-available"


async def test_repair_before_a_new_message_settles_each_dead_part_and_leaves_the_rest(user, model):
    agent = await agent_for(user)
    await agent.persist_messages([
        user_message("Many things", "u1"),
        {"id": "a1", "role": "assistant", "parts": [
            {"type": "step-start"},
            call("w1", "input-available"),
            call("w2", "input-streaming", input="{\"ci"),
            call("w3", "approval-requested", approval={"id": "ap3"}),
            call("w4", "output-error", input="[1, 2]", errorText="boom"),
            call("w5", "output-denied", approval={"id": "ap5", "approved": False}),
            call("pc", "input-available", "pick_colour", input={}),
            {"type": "tool-fetch_weather", "toolCallId": "w6", "state": "output-available", "output": "mild"},
        ]},
    ])
    model.script(Reply.text("Sorry about those."))
    result = await agent.save_messages([user_message("What happened?", "u2")])
    assert result.status == "completed"
    parts = parts_by_call((await agent.get_messages())[1])
    assert {k: (p["state"], p.get("errorText")) for k, p in parts.items()} == {
        "w1": ("output-error", INTERRUPTED_TOOL_TEXT),
        "w2": ("output-error", INTERRUPTED_TOOL_TEXT),
        "w3": ("approval-requested", None),
        "w4": ("output-error", "boom"),
        "w5": ("output-denied", None),
        "pc": ("input-available", None),
        "w6": ("output-available", None),
    }
    assert parts["w2"]["input"] == {} and parts["w4"]["input"] == {} and parts["w6"]["input"] == {}
    assert tool_results(model.requests[0]) == {"w1": INTERRUPTED_TOOL_TEXT, "w2": INTERRUPTED_TOOL_TEXT, "w4": "boom", "w5": DENIED_TOOL_TEXT, "w6": "mild"}


async def test_an_agent_may_repair_an_interrupted_call_into_other_content(user, model):
    agent = await agent_for(user, "lost-call-agent")
    await agent.persist_messages([
        user_message("Weather?", "u1"),
        {"id": "a1", "role": "assistant", "parts": [{"type": "step-start"}, call("w1", "input-available")]},
    ])
    model.script(Reply.text("Let me try again."))
    await agent.save_messages([user_message("Well?", "u2")])
    assert (await agent.get_messages())[1]["parts"] == [{"type": "step-start"}, {"type": "text", "text": "(A fetch_weather call was lost.)"}]
    assert {"role": "assistant", "content": "(A fetch_weather call was lost.)"} in model.requests[0]["messages"]
