"""Think parity (think.md §3–§6): configure_session, context blocks added and removed at run
time, unload_context, skills, per-turn tools and provider options, step types, and sub-agent
start-up, abort and deletion."""
from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from agents_app.protocol.messages import text_of
from agents_app.storage import transcript
from agents_app.storage.models import Message
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from agents_app.turns.instances import find_session, load_agent, resolve_session
from tests.agents import CoordinatorAgent, EventLog, ResearcherAgent
from tests.conftest import is_done, user_message
from tests.parity_agents import ConfiguredAgent, StartingChildAgent, TurnOptionsAgent

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fresh_records(monkeypatch):
    monkeypatch.setattr(ConfiguredAgent, "configured", [])
    monkeypatch.setattr(TurnOptionsAgent, "steps", [])
    monkeypatch.setattr(StartingChildAgent, "starts", [])


async def agent_for(user, segment, name="parity"):
    session = await sync_to_async(resolve_session)(segment, name, user)
    return await sync_to_async(load_agent)(session)


def system_of(request: dict) -> str:
    return request["messages"][0]["content"]


def offered(request: dict) -> dict[str, dict]:
    return {t["function"]["name"]: t["function"] for t in request.get("tools") or []}


# -- configure_session ------------------------------------------------------------------------------
async def test_configure_session_runs_once_not_per_turn_and_its_blocks_shape_every_turn(user, model):
    model.script(Reply.text("One."), Reply.text("Two."))
    agent = await agent_for(user, "configured-agent")
    await agent.save_messages([user_message("First", "u1")])
    await agent.save_messages([user_message("Second", "u2")])
    assert ConfiguredAgent.configured == ["parity"]
    for request in model.requests:
        assert "MEMORY (What you remember) [0% (0/50 tokens)] [writable]" in system_of(request)
        assert "GUIDES (Guides you can load) [loadable]" in system_of(request)
    assert {"set_context", "load_context", "unload_context", "search_context"} <= set(offered(model.requests[0]))
    blocks = await (await agent_for(user, "configured-agent")).get_context_blocks()
    assert [b["label"] for b in blocks] == ["memory", "guides"]
    assert ConfiguredAgent.configured == ["parity"]


async def test_compaction_set_in_configure_session_applies_to_the_agent(user):
    agent = await agent_for(user, "configured-agent")
    await agent.start()
    assert agent.compact_after_tokens == 5000


# -- context blocks at run time -----------------------------------------------------------------------
async def test_a_block_added_while_the_agent_runs_is_in_the_next_turns_system_prompt(user, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("open_topic", json.dumps({"topic": "travel"}), id="t1")]),
        Reply.text("Opened."),
        Reply.text("Travel it is."),
    )
    agent = await agent_for(user, "configured-agent")
    await agent.save_messages([user_message("Let us talk about travel", "u1")])
    await agent.save_messages([user_message("Go on", "u2")])
    assert "TRAVEL" not in system_of(model.requests[0])
    assert "TRAVEL (A topic block) [writable]\n" + "═" * 46 + "\nTopic: travel" in system_of(model.requests[2])
    assert offered(model.requests[2])["set_context"]["parameters"]["properties"]["label"]["enum"] == ["memory", "travel"]


async def test_a_removed_block_leaves_the_next_turns_system_prompt(user, model):
    model.script(Reply.text("With it."), Reply.text("Without it."))
    agent = await agent_for(user, "configured-agent")
    await agent.start()
    await agent.context.add_context("mood", content="Cheerful.")
    await agent.save_messages([user_message("Hi", "u1")])
    assert await agent.context.remove_context("mood") is True
    await agent.save_messages([user_message("Again", "u2")])
    assert "Cheerful." in system_of(model.requests[0]) and "Cheerful." not in system_of(model.requests[1])
    assert await agent.context.remove_context("mood") is False


async def test_blocks_declared_in_code_cannot_be_added_or_removed_at_run_time(user):
    agent = await agent_for(user, "configured-agent")
    await agent.start()
    with pytest.raises(ValueError, match='Block "memory" is declared in code'):
        await agent.context.add_context("memory")
    with pytest.raises(ValueError, match='Block "memory" is declared in code'):
        await agent.context.remove_context("memory")


async def test_unload_context_replaces_a_loaded_document_in_later_turns(user, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("load_context", json.dumps({"label": "guides", "key": "packing"}), id="l1")]),
        Reply.text("Loaded."),
        Reply.tool_calls([ToolCallSpec("unload_context", json.dumps({"label": "guides", "key": "packing"}), id="x1")]),
        Reply.text("Unloaded."),
        Reply.text("Fresh."),
    )
    agent = await agent_for(user, "configured-agent")
    await agent.start()
    await agent.context.add_entry("guides", "packing", "Pack light and roll your clothes.")
    await agent.save_messages([user_message("How do I pack?", "u1")])
    await agent.save_messages([user_message("Done with that", "u2")])
    await agent.save_messages([user_message("Next", "u3")])
    assert model.requests[1]["messages"][-1]["content"] == "Pack light and roll your clothes."
    assert offered(model.requests[0])["unload_context"]["description"].endswith("Loaded now: none.")
    assert offered(model.requests[2])["unload_context"]["description"].endswith("Loaded now: guides:packing.")
    assert model.requests[3]["messages"][-1]["content"] == 'Unloaded "packing" from guides. Context reclaimed.'
    later = json.dumps(model.requests[4]["messages"])
    assert "Pack light" not in later and "[skill unloaded: packing]" in later


async def test_unloading_a_document_that_is_not_loaded_says_so(user, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("unload_context", json.dumps({"label": "guides", "key": "packing"}), id="x1")]),
        Reply.text("Nothing to unload."),
    )
    agent = await agent_for(user, "configured-agent")
    await agent.save_messages([user_message("Unload packing", "u1")])
    assert model.requests[1]["messages"][-1]["content"].startswith('"packing" is not loaded from guides')


# -- skills -------------------------------------------------------------------------------------------
async def test_skills_are_listed_in_the_system_prompt_and_activated_and_read_by_tools(user, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("activate_skill", json.dumps({"name": "haiku"}), id="s1")]),
        Reply.tool_calls([ToolCallSpec("read_skill_resource", json.dumps({"name": "haiku", "path": "examples.md"}), id="s2")]),
        Reply.text("Here is a haiku."),
    )
    agent = await agent_for(user, "skilled-agent")
    await agent.save_messages([user_message("Write a haiku", "u1")])
    system = system_of(model.requests[0])
    assert "- haiku: Write haiku\n- limerick: Write limericks" in system
    tools = offered(model.requests[0])
    assert tools["activate_skill"]["parameters"]["properties"]["name"]["enum"] == ["haiku", "limerick"]
    assert "read_skill_resource" in tools and "run_skill_script" not in tools
    assert model.requests[1]["messages"][-1]["content"] == "Use 5-7-5 syllables.\n\nResources (read_skill_resource): examples.md"
    assert model.requests[2]["messages"][-1]["content"] == "An old silent pond"


async def test_an_agent_without_skills_gets_no_skill_tools(user, model):
    model.script(Reply.text("Hi."))
    agent = await agent_for(user, "configured-agent")
    await agent.save_messages([user_message("Hi", "u1")])
    assert not {"activate_skill", "read_skill_resource"} & set(offered(model.requests[0]))
    assert "Skills available" not in system_of(model.requests[0])


# -- TurnConfig.tools, provider_options, step types ---------------------------------------------------------
async def test_turn_config_tools_are_offered_on_top_for_that_turn_and_run(user, model):
    model.script(Reply.tool_calls([ToolCallSpec("roll", "{}", id="r1")]), Reply.text("You rolled 4."))
    agent = await agent_for(user, "turn-options-agent")
    result = await agent.save_messages([user_message("Roll", "u1")])
    assert "roll" in offered(model.requests[0]) and "read" in offered(model.requests[0])
    rolled = next(p for p in result.message["parts"] if p.get("toolCallId") == "r1")
    assert rolled["output"] == 4 and text_of(result.message) == "You rolled 4."


async def test_turn_config_provider_options_reach_every_model_request_of_the_turn(user, model):
    model.script(Reply.tool_calls([ToolCallSpec("roll", "{}", id="r1")]), Reply.text("4."))
    agent = await agent_for(user, "turn-options-agent")
    await agent.save_messages([user_message("Roll", "u1")])
    assert len(model.requests) == 2
    for request in model.requests:
        assert request["reasoning_effort"] == "low" and request["metadata"] == {"origin": "test"}


async def test_on_step_end_sees_the_initial_step_then_tool_result_steps(user, model):
    model.script(
        Reply.tool_calls([ToolCallSpec("roll", "{}", id="r1")]),
        Reply.tool_calls([ToolCallSpec("roll", "{}", id="r2")]),
        Reply.text("Rolled twice."),
    )
    agent = await agent_for(user, "turn-options-agent")
    await agent.save_messages([user_message("Roll twice", "u1")])
    assert [(s.step_number, s.step_type) for s in TurnOptionsAgent.steps] == [(0, "initial"), (1, "tool-result"), (2, "tool-result")]


# -- sub-agents -----------------------------------------------------------------------------------------
async def test_a_sub_agents_on_start_runs_once_before_its_first_use(user, model):
    model.script(Reply.text("Hello from the child."), Reply.text("Again."))
    parent = await agent_for(user, "coordinator-agent", "lead")
    child = await parent.sub_agent(StartingChildAgent, "kid")
    assert StartingChildAgent.starts == ["kid"]
    assert await parent.sub_agent(StartingChildAgent, "kid") is child
    await child.chat("Hi", EventLog())
    await child.chat("Hi again", EventLog())
    assert StartingChildAgent.starts == ["kid"]
    assert "Started by on_start." in system_of(model.requests[0])


async def test_a_chats_first_turn_sees_what_its_instances_on_start_stored(open_socket, token, model):
    """Admission reads the session's stored features with its row, before the instance's
    first start: an on_start that stores some is not answered with the row's stale view."""
    model.script(Reply.text("Hello."))
    socket = await open_socket("/agents/starting-child-agent/first-chat", token=token, wait_ready=True)
    await socket.chat("start-first", [user_message("Hi", "u1")])
    await socket.until(is_done("start-first"))
    assert StartingChildAgent.starts == ["first-chat"]
    assert "Started by on_start." in system_of(model.requests[0])


async def test_abort_sub_agent_stops_its_running_turn_and_keeps_the_partial_answer(user, model):
    model.script(Reply.text("one two three four five six seven eight nine ten", delay=0.15))
    parent = await agent_for(user, "coordinator-agent", "lead")
    child = await parent.sub_agent(ResearcherAgent, "slow")
    streaming = asyncio.Event()

    class Watch(EventLog):
        async def on_event(self, chunk):
            await super().on_event(chunk)
            if chunk["type"] == "text-delta":
                streaming.set()

    turn = asyncio.create_task(child.chat("Count slowly", Watch()))
    await asyncio.wait_for(streaming.wait(), 10)
    assert await parent.abort_sub_agent(ResearcherAgent, "slow") is True
    result = await asyncio.wait_for(turn, 10)
    assert result.status == "aborted"
    session = await sync_to_async(resolve_session)("researcher-agent", "slow", user)
    stored = await sync_to_async(transcript.transcript)(session)
    assert [m["role"] for m in stored] == ["user", "assistant"] and not text_of(stored[-1]).endswith("ten")


async def test_abort_or_delete_of_a_sub_agent_that_never_existed_returns_false(user):
    parent = await agent_for(user, "coordinator-agent", "lead")
    assert await parent.abort_sub_agent(ResearcherAgent, "nobody") is False
    assert await parent.delete_sub_agent(ResearcherAgent, "nobody") is False
    assert await sync_to_async(find_session)("researcher-agent", "nobody", user) is None


async def test_delete_sub_agent_removes_it_and_its_stored_messages(user, model):
    model.script(Reply.text("Remembered."))
    parent = await agent_for(user, "coordinator-agent", "lead")
    child = await parent.sub_agent(ResearcherAgent, "temp")
    await child.chat("Remember this", EventLog())
    session_id = child.session.pk
    assert await parent.delete_sub_agent(ResearcherAgent, "temp") is True
    assert await sync_to_async(find_session)("researcher-agent", "temp", user) is None
    assert await sync_to_async(Message.objects.filter(session_id=session_id).count)() == 0
    fresh = await parent.sub_agent(ResearcherAgent, "temp")
    assert fresh is not child and await fresh.get_messages() == []


def test_the_memory_panel_shows_the_blocks_configure_session_set_up(user):
    client = Client()
    client.force_login(user)
    resolve_session("configured-agent", "panel", user)
    response = client.get("/chat/configured-agent/panel/memory/")
    assert response.status_code == 200 and 'id="memory-panel"' in response.content.decode()
    assert "What you remember" in response.content.decode()
