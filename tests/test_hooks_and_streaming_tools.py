"""Think hooks in order, preliminary tool results and data parts (think.md §5, protocol §10.8)."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import resolve_session
from agents_app.storage import transcript
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.agents import HookedAgent
from tests.conftest import chunks_of, is_done, user_message

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/agents/hooked-agent/hooks"


@pytest.fixture(autouse=True)
def fresh_events():
    HookedAgent.events.clear()


async def turn(open_socket, token, request_id, **body):
    socket = await open_socket(PATH, token=token)
    await socket.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    await socket.chat(request_id, [user_message("go", "u1")], **body)
    return chunks_of(await socket.until(is_done(request_id)), request_id)


async def test_hooks_fire_in_order_around_steps_and_tool_calls(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("slow_count", '{"steps": 2}', id="c1")]), Reply.text("Counted."))
    await turn(open_socket, token, "hook0001")
    for _ in range(250):  # on_chat_response runs after the done frame, outside the turn lock
        if HookedAgent.events[-1][0] == "on_chat_response":
            break
        await asyncio.sleep(0.02)
    names = [name for name, _ in HookedAgent.events]
    assert names == ["before_turn", "before_tool_call", "after_tool_call", "on_step_finish", "on_step_finish", "on_chat_response"]
    assert HookedAgent.events[2][1] == ("slow_count", True, {"done": 2, "of": 2})
    assert HookedAgent.events[3][1] == (0, "tool-calls", True)
    assert HookedAgent.events[-1][1] == "completed"


async def test_async_generator_tools_stream_preliminary_results_then_the_final_one(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("slow_count", '{"steps": 3}', id="c1")]), Reply.text("Done."))
    chunks = await turn(open_socket, token, "prelim01")
    outputs = [c for c in chunks if c["type"] == "tool-output-available"]
    assert outputs == [
        {"type": "tool-output-available", "toolCallId": "c1", "output": {"done": 1, "of": 3}, "preliminary": True},
        {"type": "tool-output-available", "toolCallId": "c1", "output": {"done": 2, "of": 3}, "preliminary": True},
        {"type": "tool-output-available", "toolCallId": "c1", "output": {"done": 3, "of": 3}},
    ]
    session = await sync_to_async(resolve_session)("hooked-agent", "hooks", user)
    part = next(p for p in (await sync_to_async(transcript.transcript)(session))[-1]["parts"] if p.get("toolCallId") == "c1")
    assert part["output"] == {"done": 3, "of": 3} and "preliminary" not in part


async def test_data_parts_reconcile_by_id_append_new_ones_and_never_store_transient_ones(open_socket, token, model, user):
    model.script(Reply.tool_calls([ToolCallSpec("annotate", '{"label": "Source"}', id="c1")]), Reply.text("Annotated."))
    chunks = await turn(open_socket, token, "data0001")
    streamed = [c for c in chunks if c["type"].startswith("data-")]
    assert [c["type"] for c in streamed] == ["data-progress", "data-progress", "data-citation", "data-notice"]
    assert streamed[-1]["transient"] is True
    session = await sync_to_async(resolve_session)("hooked-agent", "hooks", user)
    parts = (await sync_to_async(transcript.transcript)(session))[-1]["parts"]
    data = [p for p in parts if p["type"].startswith("data-")]
    assert data == [
        {"type": "data-progress", "id": "p1", "data": {"percent": 100}},
        {"type": "data-citation", "data": {"url": "https://example.org", "title": "Source"}},
    ]


async def test_before_tool_call_can_block_a_call_and_the_model_reads_the_reason(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("forbidden", "{}", id="c1")]), Reply.text("Okay."))
    chunks = await turn(open_socket, token, "block001")
    assert {"type": "tool-output-available", "toolCallId": "c1", "output": "Not allowed here."} in chunks
    assert model.requests[1]["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "Not allowed here."}


async def test_before_tool_call_can_substitute_the_result(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("cached", '{"key": "k1"}', id="c1")]), Reply.text("From cache."))
    chunks = await turn(open_socket, token, "subst001")
    assert {"type": "tool-output-available", "toolCallId": "c1", "output": {"cached": "k1"}} in chunks


async def test_before_turn_can_replace_the_system_prompt_and_the_step_budget(open_socket, token, model):
    model.script(Reply.tool_calls([ToolCallSpec("slow_count", '{"steps": 1}', id="c1")]), Reply.text("never asked"))
    chunks = await turn(open_socket, token, "config01", system="You are terse.", max_steps=1)
    assert model.requests[0]["messages"][0] == {"role": "system", "content": "You are terse."}
    assert model.request_count == 1 and [c["type"] for c in chunks].count("start-step") == 1
