"""Per-step control of the agentic loop (`prepare_step`, stop conditions) and model
middleware (think.md §4 step 9, §5) — asserted on what the fake upstream received."""
from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.protocol.messages import text_of
from agents_app.agents.hooks import StepConfig, TurnConfig, has_tool_call, step_count_is
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.think.middleware import ModelCall, ModelCallParams, ModelMiddleware, RedactionMiddleware
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.agents import SteppedAgent
from tests.conftest import chunks_of, is_done, user_message

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/agents/stepped-agent/steps"


@pytest.fixture(autouse=True)
def fresh_agent(monkeypatch):
    monkeypatch.setattr(SteppedAgent, "plan", {})
    monkeypatch.setattr(SteppedAgent, "seen", [])
    monkeypatch.setattr(SteppedAgent, "middleware", [])


async def run_turn(user, text="Explain agents"):
    session = await sync_to_async(resolve_session)("stepped-agent", "steps", user)
    agent = await sync_to_async(load_agent)(session)
    return await agent.save_messages([user_message(text, "u1")])


def offered_tools(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in request.get("tools", [])]


def tool_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in message["parts"] if p.get("toolCallId")]


async def test_prepare_step_changes_tools_and_tool_choice_then_model_and_system_per_step(model, user):
    SteppedAgent.plan = {
        0: StepConfig(active_tools=["lookup"], tool_choice={"type": "function", "function": {"name": "lookup"}}),
        1: StepConfig(model="summary-model", system="Summarise the lookup in one line.", active_tools=[]),
    }
    model.script(Reply.tool_calls([ToolCallSpec("lookup", '{"term": "agent"}', id="l1")]), Reply.text("Agents act."))
    result = await run_turn(user)
    assert result.status == "completed"
    first, second = model.requests
    assert offered_tools(first) == ["lookup"]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert first["model"] == "fake-model" and first["messages"][0]["content"] == SteppedAgent.system_prompt
    assert second["model"] == "summary-model" and "tools" not in second
    assert second["messages"][0] == {"role": "system", "content": "Summarise the lookup in one line."}
    assert second["messages"][-1]["role"] == "tool" and "agent means something" in second["messages"][-1]["content"]
    assert text_of(result.message) == "Agents act."


async def test_prepare_step_sees_the_previous_steps_and_can_replace_the_messages(model, user):
    SteppedAgent.plan = {1: StepConfig(messages=[{"role": "user", "content": "Only this."}])}
    model.script(Reply.tool_calls([ToolCallSpec("lookup", '{"term": "loop"}', id="l2")]), Reply.text("Done."))
    await run_turn(user)
    assert [c.step_number for c in SteppedAgent.seen] == [0, 1]
    assert SteppedAgent.seen[0].steps == [] and {"classify", "finish", "lookup", "read"} <= set(SteppedAgent.seen[0].active_tools)
    previous = SteppedAgent.seen[1].steps
    assert [call["toolName"] for call in previous[0].tool_calls] == ["lookup"]
    assert previous[0].finish_reason == "tool-calls"
    assert model.requests[1]["messages"] == [{"role": "user", "content": "Only this."}]


async def test_each_step_context_holds_the_messages_of_its_own_step_as_the_hooks_own_copy(model, user):
    model.script(Reply.tool_calls([ToolCallSpec("lookup", '{"term": "loop"}', id="l3")]), Reply.text("Done."))
    await run_turn(user)
    first, second = SteppedAgent.seen  # read after the turn: each still shows its own step
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "tool"]
    first.messages[1]["content"] = "edited by a hook"
    assert all("edited by a hook" not in str(request["messages"]) for request in model.requests)
    assert second.messages[1]["content"] != "edited by a hook"


async def test_has_tool_call_stops_the_loop_after_that_step(model, user, monkeypatch):
    monkeypatch.setattr(SteppedAgent, "stop_when", [has_tool_call("finish")])
    model.script(Reply.tool_calls([ToolCallSpec("finish", '{"answer": "42"}', id="f1")]))
    result = await run_turn(user)
    assert model.request_count == 1
    assert tool_parts(result.message) == [
        {"type": "tool-finish", "toolCallId": "f1", "state": "output-available", "input": {"answer": "42"}, "output": "42"}
    ]


async def test_step_count_is_ends_the_turn_even_when_the_model_wants_more_tools(model, user, monkeypatch):
    monkeypatch.setattr(SteppedAgent, "stop_when", [step_count_is(2)])
    model.script(
        Reply.tool_calls([ToolCallSpec("lookup", '{"term": "a"}', id="s1")]),
        Reply.tool_calls([ToolCallSpec("lookup", '{"term": "b"}', id="s2")]),
    )
    result = await run_turn(user)
    assert model.request_count == 2
    assert [p["toolCallId"] for p in tool_parts(result.message)] == ["s1", "s2"]
    assert result.message["metadata"]["usage"]["totalTokens"] > 0


async def test_before_turn_can_add_stop_conditions_and_a_step_budget_for_one_turn(model, user, monkeypatch):
    async def before_turn(self, context):
        return TurnConfig(max_steps=3, stop_when=[has_tool_call("finish")])

    monkeypatch.setattr(SteppedAgent, "before_turn", before_turn)
    model.script(
        Reply.tool_calls([ToolCallSpec("lookup", '{"term": "x"}', id="b1")]),
        Reply.tool_calls([ToolCallSpec("finish", '{"answer": "x"}', id="b2")]),
    )
    result = await run_turn(user)
    assert model.request_count == 2
    assert [p["toolCallId"] for p in tool_parts(result.message)] == ["b1", "b2"]


async def test_redaction_middleware_removes_a_secret_split_across_deltas(open_socket, token, model, user):
    SteppedAgent.middleware = [RedactionMiddleware(r"sk-[A-Za-z0-9]{8}", max_match_length=11)]
    model.script(Reply.text("Your key is sk-ABCD1234, keep it safe.", chunks=["Your key is sk-AB", "CD12", "34, keep it safe."]))
    socket = await open_socket(PATH, token=token, wait_ready=True)
    await socket.chat("redact01", [user_message("What is my key?", "u1")])
    chunks = chunks_of(await socket.until(is_done("redact01")), "redact01")
    deltas = [c["delta"] for c in chunks if c["type"] == "text-delta"]
    assert "".join(deltas) == "Your key is [redacted], keep it safe."
    assert not any("sk-" in delta or "1234" in delta for delta in deltas)
    messages = await socket.until(lambda f: f["type"] == "cf_agent_chat_messages")
    assert text_of(messages[-1]["messages"][-1]) == "Your key is [redacted], keep it safe."


async def test_redacted_text_is_also_what_the_model_reads_back_on_the_next_step(model, user):
    SteppedAgent.middleware = [RedactionMiddleware(r"\d{4}-\d{4}")]
    model.script(
        Reply.tool_calls([ToolCallSpec("lookup", '{"term": "card"}', id="r1")], text="Card 1234-5678 noted."),
        Reply.text("Done."),
    )
    await run_turn(user)
    assistant = next(m for m in model.requests[1]["messages"] if m["role"] == "assistant")
    assert assistant["content"] == "Card [redacted] noted."


class Recorder(ModelMiddleware):
    """Appends `suffix` to the model id and applies `rewrite` to every text delta."""

    def __init__(self, suffix: str, rewrite: Any) -> None:
        self.suffix = suffix
        self.rewrite = rewrite

    async def transform_params(self, params: ModelCallParams) -> ModelCallParams:
        return dataclasses.replace(params, model=params.model + self.suffix)

    async def wrap_stream(self, params: ModelCallParams, call_next: ModelCall) -> AsyncIterator[dict[str, Any]]:
        async for chunk in call_next(params):
            yield {**chunk, "delta": self.rewrite(chunk["delta"])} if chunk["type"] == "text-delta" else chunk


async def test_middlewares_compose_outermost_first_for_params_and_last_for_the_stream(model, user):
    outer = Recorder("+outer", str.upper)
    inner = Recorder("+inner", lambda text: text.replace("cat", "dog"))
    SteppedAgent.middleware = [outer, inner]
    model.script(Reply.text("a cat sat"))
    result = await run_turn(user)
    assert model.requests[0]["model"] == "fake-model+outer+inner"
    assert text_of(result.message) == "A DOG SAT"


class CannedAnswer(ModelMiddleware):
    """A cache hit: answers without calling the model."""

    async def wrap_stream(self, params: ModelCallParams, call_next: ModelCall) -> AsyncIterator[dict[str, Any]]:
        for chunk in ({"type": "text-start", "id": "c"}, {"type": "text-delta", "id": "c", "delta": "From the cache."}, {"type": "text-end", "id": "c"}):
            yield chunk


async def test_a_middleware_can_answer_without_calling_the_model(model, user):
    SteppedAgent.middleware = [CannedAnswer()]
    result = await run_turn(user)
    assert model.request_count == 0
    assert text_of(result.message) == "From the cache."


class DescriptionEditor(ModelMiddleware):
    """Edits the first tool's description in place (the params are its own to change)."""

    async def transform_params(self, params: ModelCallParams) -> ModelCallParams:
        for schema in params.tools or []:
            schema["function"]["description"] += " (edited)"
        return params


async def test_a_middleware_editing_a_tool_schema_in_place_changes_only_its_own_call(model, user):
    model.script(Reply.text("First."), Reply.text("Second."))
    SteppedAgent.middleware = [DescriptionEditor()]
    await run_turn(user)
    SteppedAgent.middleware = []
    await run_turn(user, "Again")
    edited, plain = ({t["function"]["name"]: t["function"]["description"] for t in r["tools"]} for r in model.requests)
    assert edited["lookup"] == plain["lookup"] + " (edited)"
    assert not plain["lookup"].endswith("(edited)")
