"""Conversations of any length (issue #15): context windows, older tool outputs truncated for
the model, compaction by default, compact-and-retry on context_length_exceeded, authors'
prune_messages, and a 2,000-message conversation with big tool outputs."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from django.test import Client

from agents_app.think.context_blocks import estimate_tokens
from agents_app.think.context_window import context_window, estimate_request_tokens, fit_to_window
from agents_app.think.model_loop import CONTEXT_OVERFLOW_TEXT
from agents_app.think.pruning import prune_messages
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.storage.models import Compaction
from agents_app.testing.fake_openai import Reply, ToolCallSpec, prompt_tokens
from tests.conftest import is_done, user_message
from tests.long_agents import REPORT_CHARS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
ARTIFACT = Path(__file__).resolve().parents[1] / "test-artifacts" / "long-conversation.json"
SUMMARY_PROMPT = "Summarise the conversation excerpt"
SUMMARY_TEXT = "Summary: the user asked many things; reports were read in full."


@pytest.fixture(autouse=True)
def _long_agents() -> None:
    import tests.long_agents  # noqa: F401 - registers the agents


async def agent_for(user, segment="report-agent", name="long"):
    session = await sync_to_async(resolve_session)(segment, name, user)
    return await sync_to_async(load_agent)(session)


def asked(index: int, text: str) -> dict:
    return {"id": f"u{index}", "role": "user", "parts": [{"type": "text", "text": text}]}


def report_answer(index: int, number: int) -> dict:
    """A past answer that read a report: a settled tool call with the whole report, then text."""
    output = f"Report {number}: " + ("figures " * REPORT_CHARS)[:REPORT_CHARS]
    return {
        "id": f"a{index}",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "tool-read_report", "toolCallId": f"call_{index}", "state": "output-available", "input": {"number": number}, "output": output},
            {"type": "step-start"},
            {"type": "text", "text": f"Report {number} is read."},
        ],
    }


def exchanges(count: int, start: int = 0) -> list[dict]:
    messages = []
    for index in range(start, start + count):
        messages += [asked(index, f"Read report {index}"), report_answer(index, index)]
    return messages


def reads_reports(request: dict) -> Reply:
    """The upstream's side: summaries when asked for one, a read_report call for a new question,
    a short answer once the report came back."""
    last = request["messages"][-1]
    if last["role"] == "user" and str(last["content"]).startswith(SUMMARY_PROMPT):
        return Reply.text(SUMMARY_TEXT)
    numbers = re.findall(r"\d+", str(last["content"]))
    if last["role"] == "user" and numbers:
        return Reply.tool_calls([ToolCallSpec("read_report", json.dumps({"number": int(numbers[-1])}))])
    return Reply.text("Read it.")


def tool_contents(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


# -- context windows ----------------------------------------------------------------------------
def test_models_have_known_windows_which_settings_and_agents_override(settings):
    settings.AGENTS_MODEL_CONTEXT_WINDOWS = {"house-model": 65_536}
    settings.AGENTS_CONTEXT_WINDOW = 20_000
    assert context_window("gpt-4o-mini") == 128_000 and context_window("openai/gpt-4.1") == 1_047_576
    assert context_window("gpt-4") == 8_192 and context_window("gpt-4o") == 128_000
    assert context_window("house-model") == 65_536 and context_window("unheard-of") == 20_000

    class Small:
        context_window = 4_000

    assert context_window("gpt-4o", Small()) == 4_000


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=12), _json_values, min_size=1, max_size=4), max_size=6))
def test_a_requests_tools_count_as_their_json_does_however_often_they_are_offered(tools):
    """The tools' part of the estimate is that of the list's JSON, the first time a schema
    is seen and every time after (their sizes are remembered per schema object)."""
    messages = [{"role": "user", "content": "What is the weather?"}]
    expected = estimate_request_tokens(messages) + (estimate_tokens(json.dumps(tools)) if tools else 0)
    assert estimate_request_tokens(messages, tools) == expected
    assert estimate_request_tokens(messages, tools) == expected


def test_a_request_over_budget_loses_old_tool_output_first_then_old_exchanges_never_the_question():
    big = "x" * 8_000
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read_report", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": big},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "second " * 200},
    ]
    fitted = fit_to_window(messages, 800)
    assert fitted[3]["content"].startswith("x" * 500) and "Call read_report again if you need the full output." in fitted[3]["content"]
    assert messages[3]["content"] == big  # the caller's list is untouched
    tight = fit_to_window(messages, 300)
    assert tight[0]["role"] == "system" and tight[-1] == messages[-1]
    assert estimate_request_tokens(tight) <= 300 or len(tight) == 2


# -- pruning what the model reads ---------------------------------------------------------------
async def test_older_big_tool_outputs_reach_the_model_truncated_while_get_messages_keeps_them_whole(user, model, token):
    agent = await agent_for(user)
    await agent.persist_messages(exchanges(4))
    model.script(Reply.text("Noted."))
    result = await agent.save_messages([user_message("Thanks", "u9")])
    assert result.status == "completed"
    sent = tool_contents(model.requests[0])
    old, recent = sent[:2], sent[2:]
    assert all(len(content) < 1_000 and "Output truncated to save context: 6010 characters originally. Call read_report again" in content for content in old)
    # Within the last four messages outputs stay whole.
    assert recent == [f"Report {n}: {('figures ' * REPORT_CHARS)[:REPORT_CHARS]}" for n in (2, 3)]
    response = await sync_to_async(Client().get)(f"/agents/report-agent/long/get-messages?token={token}")
    outputs = [p["output"] for m in response.json() for p in m["parts"] if p.get("type") == "tool-read_report"]
    assert [len(o) for o in outputs] == [len("Report 0: ") + REPORT_CHARS] * 4


# -- compaction on by default -------------------------------------------------------------------
async def test_think_agents_compact_by_default_near_the_window(user, model):
    agent = await agent_for(user)
    talk = []
    for index in range(40):  # ~14,000 estimated tokens of plain talk: over 75% of 12,000
        talk += [asked(index, f"Question {index}: " + "words " * 120), {"id": f"a{index}", "role": "assistant", "parts": [{"type": "text", "text": "Answer " * 120}]}]
    await agent.persist_messages(talk)
    model.responder = reads_reports
    result = await agent.save_messages([user_message("One more", "u99")])
    assert result.status == "completed"
    *summaries, answer = model.requests
    assert summaries and all(r["messages"][-1]["content"].startswith(SUMMARY_PROMPT) for r in summaries)
    assert max(prompt_tokens(r) for r in summaries) <= 16_000  # a long range is summarised piece by piece
    assert SUMMARY_TEXT in [m["content"] for m in answer["messages"]]
    assert prompt_tokens(answer) < 16_000 * 0.75
    assert await sync_to_async(Compaction.objects.filter(session=agent.session).count)() == 1
    assert len(await agent.get_messages()) == 82


async def test_compaction_can_be_turned_off_with_zero(user, model, settings):
    settings.AGENTS_COMPACTION_THRESHOLD = 0
    agent = await agent_for(user)
    await agent.persist_messages([asked(i, "words " * 600) for i in range(20)])
    model.script(Reply.text("Fine."))
    await agent.save_messages([user_message("Go", "u99")])
    assert not model.requests[0]["messages"][-1]["content"].startswith(SUMMARY_PROMPT)
    assert prompt_tokens(model.requests[0]) <= 12_000  # still fitted to the window


# -- context overflow from the upstream ---------------------------------------------------------
async def test_context_length_exceeded_compacts_and_retries_the_step_once(user, model):
    agent = await agent_for(user)
    await agent.persist_messages(exchanges(6))
    model.script(Reply.context_length_exceeded(), Reply.text("Summary of six reports."), Reply.text("All six are read."))
    result = await agent.save_messages([user_message("Summarise them", "u9")])
    assert result.status == "completed"
    refused, summary, retried = model.requests
    assert summary["messages"][-1]["content"].startswith(SUMMARY_PROMPT)
    assert "Summary of six reports." in [m["content"] for m in retried["messages"]]
    assert prompt_tokens(retried) < prompt_tokens(refused)
    messages = await agent.get_messages()
    assert messages[-1]["parts"][-1]["text"] == "All six are read." and len(messages) == 14


async def test_a_second_overflow_ends_the_turn_with_a_clear_error_frame(user, model, token, open_socket):
    agent = await agent_for(user)
    await agent.persist_messages(exchanges(6))
    model.script(Reply.context_length_exceeded(), Reply.text("Summary."), Reply.context_length_exceeded())
    socket = await open_socket("/agents/report-agent/long", token=token, wait_ready=True)
    await socket.chat("long0001", [user_message("Summarise them", "u9")])
    frames = await socket.until(is_done("long0001"))
    errors = [f for f in frames if f.get("id") == "long0001" and f.get("error")]
    assert errors == [{"type": "cf_agent_use_chat_response", "id": "long0001", "body": CONTEXT_OVERFLOW_TEXT, "done": False, "error": True}]
    assert frames[-1] == {"type": "cf_agent_use_chat_response", "id": "long0001", "body": "", "done": True}
    assert len(model.requests) == 3


# -- prune_messages for AIChatAgent authors ---------------------------------------------------------
async def test_an_ai_chat_agent_prunes_old_tool_calls_before_calling_the_model(user, model):
    agent = await agent_for(user, "pruning-chat-agent", "prune")
    weather = {"type": "tool-fetch_weather", "toolCallId": "w1", "state": "output-available", "input": {"city": "Oslo"}, "output": {"temperatureC": 3}}
    await agent.persist_messages([
        asked(1, "Weather in Oslo?"),
        {"id": "a1", "role": "assistant", "parts": [{"type": "reasoning", "text": "Look it up."}, weather, {"type": "text", "text": "3 degrees."}]},
        asked(2, "And tomorrow?"),
        {"id": "a2", "role": "assistant", "parts": [{"type": "reasoning", "text": "Guess."}, {"type": "text", "text": "Similar."}]},
    ])
    model.script(Reply.text("Fine."))
    await agent.save_messages([user_message("Thanks", "u3")])
    sent = model.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert not any(m.get("tool_calls") for m in sent) and sent[2]["content"] == "3 degrees."


def test_prune_messages_follows_the_ai_sdk_options():
    ui = [
        asked(1, "Hi"),
        {"id": "a1", "role": "assistant", "parts": [{"type": "reasoning", "text": "r1"}, {"type": "tool-fetch_weather", "toolCallId": "c1", "state": "output-available", "input": {}, "output": 1}]},
        asked(2, "Again"),
        {"id": "a2", "role": "assistant", "parts": [{"type": "reasoning", "text": "r2"}, {"type": "tool-read_report", "toolCallId": "c2", "state": "output-available", "input": {}, "output": 2}]},
    ]
    no_reasoning = prune_messages(ui, reasoning="before-last-message")
    assert [p["type"] for p in no_reasoning[1]["parts"]] == ["tool-fetch_weather"] and no_reasoning[3]["parts"][0]["type"] == "reasoning"
    emptied = prune_messages(ui, reasoning="all", tool_calls="all")
    assert [m["id"] for m in emptied] == ["u1", "u2"]
    kept = prune_messages(ui, reasoning="all", tool_calls="all", empty_messages="keep")
    assert [m["id"] for m in kept] == ["u1", "a1", "u2", "a2"]
    only_weather = prune_messages(ui, tool_calls=[{"type": "all", "tools": ["fetch_weather"]}])
    assert [p["type"] for m in only_weather for p in m["parts"] if p["type"].startswith("tool-")] == ["tool-read_report"]
    assert ui[1]["parts"][0] == {"type": "reasoning", "text": "r1"}  # the input is not changed
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "fetch_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "Again"},
    ]
    assert prune_messages(chat, tool_calls="before-last-2-messages") == [chat[0], {"role": "assistant", "content": "Done."}, chat[4]]
    with pytest.raises(ValueError, match="Unknown prune option"):
        prune_messages(chat, tool_calls="sometimes")


# -- 2,000 messages -------------------------------------------------------------------------------
async def test_a_two_thousand_message_conversation_with_big_tool_outputs_keeps_working(user, model, token):
    """1,980 stored messages (each answer read a 6,000-character report), then ten more
    turns of the same through the real loop: every turn completes, no request the upstream
    receives exceeds the 16,000-token window it enforces, and get-messages returns all 2,000
    messages with every report whole."""
    agent = await agent_for(user)
    started = time.monotonic()
    await agent.persist_messages(exchanges(990))
    seeded = time.monotonic() - started
    model.responder = reads_reports
    model.context_window = 16_000
    durations = []
    for index in range(990, 1000):
        begun = time.monotonic()
        result = await agent.save_messages([asked(index, f"Read report {index}")])
        durations.append(round(time.monotonic() - begun, 3))
        assert result.status == "completed", result
    assert max(prompt_tokens(request) for request in model.requests) <= 16_000
    answers = [r for r in model.requests if not str(r["messages"][-1]["content"]).startswith(SUMMARY_PROMPT)]
    assert len(answers) == 20  # a tool call and an answer per turn, none refused
    response = await sync_to_async(Client().get)(f"/agents/report-agent/long/get-messages?token={token}")
    stored = response.json()
    assert len(stored) == 2_000 and [m["id"] for m in stored[:4]] == ["u0", "a0", "u1", "a1"]
    reports = [p["output"] for m in stored for p in m["parts"] if p.get("type") == "tool-read_report"]
    assert len(reports) == 1_000 and all(len(r) >= REPORT_CHARS for r in reports)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps({
        "seed_seconds": round(seeded, 2), "turn_seconds": durations, "model_requests": len(model.requests),
        "largest_request_tokens": max(prompt_tokens(r) for r in model.requests),
    }, indent=2))
