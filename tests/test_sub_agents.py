"""Sub-agents (issue #4 point 8): `sub_agent()` and `chat()` run full turns on another
session through the runner — persisted there, visible to its clients, observable, abortable."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from agents_app.protocol.messages import text_of
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.agents.tools import tool
from agents_app.storage import transcript
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.agents import CoordinatorAgent, EventLog, ResearcherAgent
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


@pytest.fixture(autouse=True)
def fresh_delegations(monkeypatch):
    monkeypatch.setattr(CoordinatorAgent, "delegations", [])


async def coordinator(user, name="lead"):
    session = await sync_to_async(resolve_session)("coordinator-agent", name, user)
    return await sync_to_async(load_agent)(session)


async def child_messages(user, name):
    session = await sync_to_async(resolve_session)("researcher-agent", name, user)
    return await sync_to_async(transcript.transcript)(session)


async def test_a_parent_tool_delegates_to_a_child_session_and_returns_its_answer(open_socket, token, model, user):
    watcher = await open_socket("/agents/researcher-agent/lead-research", token=token, wait_ready=True)
    model.script(
        Reply.tool_calls([ToolCallSpec("research", '{"question": "Capital of France?"}', id="d1")]),
        Reply.text("Paris is the capital of France."),
        Reply.text("The researcher says: Paris."),
    )
    parent = await coordinator(user)
    result = await parent.save_messages([user_message("Find the capital of France", "u1")])
    delegated = next(p for p in result.message["parts"] if p.get("toolCallId") == "d1")
    assert delegated["output"] == "Paris is the capital of France."
    assert text_of(result.message) == "The researcher says: Paris."
    assert model.requests[1]["messages"][0]["content"] == ResearcherAgent.system_prompt
    assert model.requests[1]["messages"][-1] == {"role": "user", "content": "Capital of France?"}
    child = await child_messages(user, "lead-research")
    assert [m["role"] for m in child] == ["user", "assistant"] and text_of(child[1]) == "Paris is the capital of France."
    log = CoordinatorAgent.delegations[0]
    assert [e["type"] for e in log.events][0] == "start" and log.events[-1]["type"] == "finish"
    assert "".join(e["delta"] for e in log.events if e["type"] == "text-delta") == "Paris is the capital of France."
    assert [r.status for r in log.done] == ["completed"] and log.errors == []
    frames = await watcher.until(lambda f: f["type"] == "cf_agent_chat_messages" and len(f["messages"]) == 2)
    assert any(f["type"] == "cf_agent_use_chat_response" for f in frames)
    assert frames[-1]["messages"] == child


async def test_sub_agent_returns_the_same_child_session_every_time(user):
    parent = await coordinator(user)
    first = await parent.sub_agent(ResearcherAgent, "helper")
    again = await parent.sub_agent(ResearcherAgent, "helper")
    assert isinstance(first, ResearcherAgent) and first.session.pk == again.session.pk
    assert first.session.owner_id == parent.session.owner_id


async def test_setting_the_signal_aborts_the_child_turn_and_keeps_the_partial_answer(model, user):
    model.script(Reply.text("one two three four five six seven eight nine ten", delay=0.15))
    child = await (await coordinator(user)).sub_agent(ResearcherAgent, "slow")
    stop = asyncio.Event()

    class StopAfterTwoWords(EventLog):
        async def on_event(self, chunk):
            await super().on_event(chunk)
            if sum(e["type"] == "text-delta" for e in self.events) == 2:
                stop.set()

    log = StopAfterTwoWords()
    result = await child.chat("Count slowly", log, signal=stop)
    assert result.status == "aborted" and [r.status for r in log.done] == ["aborted"]
    stored = await child_messages(user, "slow")
    assert [m["role"] for m in stored] == ["user", "assistant"]
    partial = text_of(stored[-1])
    assert partial.startswith("one two") and not partial.endswith("ten")


@tool("Cite a source for a claim.")
def cite(claim: str) -> str:
    return f"[1] a source for {claim}"


async def test_tools_given_to_chat_are_offered_to_the_child_for_that_turn_only(model, user):
    model.script(Reply.tool_calls([ToolCallSpec("cite", '{"claim": "sky is blue"}', id="c1")]), Reply.text("Cited."), Reply.text("Plain."))
    child = await (await coordinator(user)).sub_agent(ResearcherAgent, "citer")
    result = await child.chat("Why is the sky blue?", EventLog(), tools={"cite": cite})
    cited = next(p for p in result.message["parts"] if p.get("toolCallId") == "c1")
    assert cited["output"] == "[1] a source for sky is blue"
    await child.chat("And now?", EventLog())
    assert "cite" not in [t["function"]["name"] for t in model.requests[2]["tools"]]


async def test_a_failing_child_turn_reports_on_error(model, user):
    model.script(Reply.error(500, "upstream exploded"))
    child = await (await coordinator(user)).sub_agent(ResearcherAgent, "broken")
    log = EventLog()
    result = await child.chat("Anything", log)
    assert result.status == "error"
    assert log.errors == ["The model service returned an error (HTTP 500): upstream exploded"] and log.done == []
