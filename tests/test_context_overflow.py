"""Context-window overflow as a configurable surface (think.md §5, §9.4): `classify_chat_error`
names a failure, `on_chat_error` sees that name as `ctx.classification`, and
`context_overflow` sets how often a refused step is compacted and retried (reactive) and when
the conversation is compacted before the next step from the usage the upstream reported
(proactive)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

import pytest
from asgiref.sync import sync_to_async

from agents_app.agents import (
    AIChatAgent,
    ChatErrorClassification,
    ChatErrorContext,
    ChatOptions,
    ChatResponse,
    classify_error,
    register_agent,
)
from agents_app.storage.models import Compaction
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from agents_app.think.context_window import OverflowPolicy, overflow_policy
from agents_app.think.model_loop import CONTEXT_OVERFLOW_TEXT
from tests.conftest import user_message
from tests.long_agents import ReportAgent
from tests.test_long_conversations import SUMMARY_PROMPT, agent_for, exchanges

pytestmark = [pytest.mark.django_db(transaction=True)]
BUDGET_REFUSAL = "Request exceeds this deployment's token budget."


class _RecordsErrors(ReportAgent):
    """Keeps what on_chat_error was given (agents are built per turn: the record is the class's)."""

    seen: ClassVar[list[tuple[str, ChatErrorContext]]] = []

    def on_chat_error(self, error: BaseException, ctx: ChatErrorContext) -> BaseException:
        self.seen.append((str(error), ctx))
        return error


@register_agent
class BudgetAwareAgent(_RecordsErrors):
    """Its provider words an overflow in a way no ready-made classifier knows."""

    context_overflow = {"reactive": True, "maxRetries": 1}

    def classify_chat_error(self, error: BaseException | str, ctx: ChatErrorContext) -> ChatErrorClassification | None:
        return "context_overflow" if "token budget" in str(error) else None


@register_agent
class StubbornRetryAgent(_RecordsErrors):
    context_overflow = {"reactive": True, "max_retries": 2}


@register_agent
class NoRetryAgent(_RecordsErrors):
    context_overflow = {"reactive": False}


@register_agent
class ProactiveAgent(_RecordsErrors):
    context_overflow = {"proactive": {"maxInputTokens": 10_000, "headroom": 0.9}}


@register_agent
class QuotaChatAgent(AIChatAgent):
    """Writes its own turn, which fails on a quota its own classifier knows to be final."""

    seen: ClassVar[list[ChatErrorContext]] = []

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        raise RuntimeError("monthly quota spent")

    def classify_chat_error(self, error: BaseException | str, ctx: ChatErrorContext) -> ChatErrorClassification | None:
        return "fatal" if "quota" in str(error) else None

    def on_chat_error(self, error: BaseException, ctx: ChatErrorContext) -> BaseException:
        self.seen.append(ctx)
        return RuntimeError("This month's quota is spent.")


@pytest.fixture(autouse=True)
def _fresh_records() -> None:
    _RecordsErrors.seen.clear()
    QuotaChatAgent.seen.clear()


def with_usage(reply: Reply, input_tokens: int) -> Reply:
    return dataclasses.replace(reply, usage={"prompt_tokens": input_tokens, "completion_tokens": 10, "total_tokens": input_tokens + 10})


async def compactions(agent: Any) -> int:
    return await sync_to_async(Compaction.objects.filter(session=agent.session).count)()


# -- the configuration -------------------------------------------------------------------------
def test_context_overflow_none_keeps_compact_and_retry_once_and_dicts_read_both_spellings():
    assert overflow_policy(None) == OverflowPolicy(reactive=True, max_retries=1, proactive_at=None, max_compactions=1)
    camel = {"reactive": False, "maxRetries": 3, "proactive": {"maxInputTokens": 1000, "headroom": 0.5, "maxCompactions": 2}}
    snake = {"reactive": False, "max_retries": 3, "proactive": {"max_input_tokens": 1000, "headroom": 0.5, "max_compactions": 2}}
    assert overflow_policy(camel) == overflow_policy(snake) == OverflowPolicy(False, 3, 500, 2)


def test_the_ready_made_classifier_knows_common_provider_phrases():
    assert classify_error("prompt is too long: 210000 tokens > 200000 maximum") == "context_overflow"
    assert classify_error("This model's maximum context length is 8192 tokens") == "context_overflow"
    assert classify_error("Error code: context_length_exceeded") == "context_overflow"
    assert classify_error("Rate limit reached for gpt-4o on tokens per min") == "rate_limit"
    assert classify_error("The model service returned an error (HTTP 429): Too Many Requests") == "rate_limit"
    assert classify_error("The model service is overloaded") == "transient"
    assert classify_error("Something odd happened") is None


# -- reactive --------------------------------------------------------------------------------------
async def test_a_custom_classifier_turns_an_unknown_refusal_into_a_compacted_retry(user, model):
    agent = await agent_for(user, "budget-aware-agent", "budget")
    await agent.persist_messages(exchanges(6))
    model.script(Reply.error(400, BUDGET_REFUSAL), Reply.text("Summary of six reports."), Reply.text("All six are read."))
    result = await agent.save_messages([user_message("Summarise them", "u9")])
    assert result.status == "completed"
    refused, summary, retried = model.requests
    assert summary["messages"][-1]["content"].startswith(SUMMARY_PROMPT)
    assert "Summary of six reports." in [m["content"] for m in retried["messages"]]
    assert BudgetAwareAgent.seen == []


async def test_the_custom_classification_reaches_on_chat_error_once_retries_are_spent(user, model):
    agent = await agent_for(user, "budget-aware-agent", "budget")
    await agent.persist_messages(exchanges(6))
    model.script(Reply.error(400, BUDGET_REFUSAL), Reply.text("Summary."), Reply.error(400, BUDGET_REFUSAL))
    result = await agent.save_messages([user_message("Summarise them", "u9")])
    assert result.status == "error"
    [(text, ctx)] = BudgetAwareAgent.seen
    assert text == CONTEXT_OVERFLOW_TEXT
    assert (ctx.stage, ctx.classification, ctx.request_id) == ("stream", "context_overflow", result.request_id)


async def test_reactive_retries_stop_at_max_retries_with_the_clear_error_frame(user, model, token, open_socket):
    agent = await agent_for(user, "stubborn-retry-agent", "stubborn")
    await agent.persist_messages(exchanges(6))
    model.script(
        Reply.context_length_exceeded(), Reply.text("Summary."),
        Reply.context_length_exceeded(), Reply.text("Shorter summary."),
        Reply.context_length_exceeded(), Reply.text("Never requested."),
    )
    socket = await open_socket("/agents/stubborn-retry-agent/stubborn", token=token, wait_ready=True)
    await socket.chat("over0001", [user_message("Summarise them", "u9")])
    frames = await socket.until(lambda frame: frame.get("id") == "over0001" and frame.get("done"))
    errors = [f for f in frames if f.get("id") == "over0001" and f.get("error")]
    assert [f["body"] for f in errors] == [CONTEXT_OVERFLOW_TEXT]
    summaries = [r for r in model.requests if str(r["messages"][-1]["content"]).startswith(SUMMARY_PROMPT)]
    assert (len(model.requests), len(summaries)) == (5, 2)  # the first try, then two compactions and retries
    assert [ctx.classification for _, ctx in StubbornRetryAgent.seen] == ["context_overflow"]


async def test_without_reactive_recovery_an_overflow_surfaces_at_once_classified(user, model):
    agent = await agent_for(user, "no-retry-agent", "noretry")
    await agent.persist_messages(exchanges(6))
    model.script(Reply.context_length_exceeded(), Reply.text("Never requested."))
    result = await agent.save_messages([user_message("Summarise them", "u9")])
    assert result.status == "error" and len(model.requests) == 1
    assert await compactions(agent) == 0
    [(text, ctx)] = NoRetryAgent.seen
    assert "maximum context length" in text and ctx.classification == "context_overflow"


async def test_a_rate_limit_is_classified_for_on_chat_error_and_not_retried(user, model):
    agent = await agent_for(user, "stubborn-retry-agent", "limited")
    model.script(Reply.error(429, "Rate limit reached for requests"), Reply.text("Never requested."))
    result = await agent.save_messages([user_message("Hello", "u1")])
    assert result.status == "error" and len(model.requests) == 1
    [(_, ctx)] = StubbornRetryAgent.seen
    assert ctx.classification == "rate_limit"


# -- proactive -------------------------------------------------------------------------------------
async def test_reported_input_tokens_near_the_limit_compact_before_the_next_step(user, model):
    agent = await agent_for(user, "proactive-agent", "proactive")
    await agent.persist_messages(exchanges(6))
    read_seven = Reply.tool_calls([ToolCallSpec("read_report", json.dumps({"number": 7}))])
    model.script(with_usage(read_seven, 9_000), Reply.text("Summary of six reports."), Reply.text("Seven is read."))
    result = await agent.save_messages([user_message("Read report 7", "u9")])
    assert result.status == "completed"
    first, summary, second = model.requests
    assert summary["messages"][-1]["content"].startswith(SUMMARY_PROMPT)
    contents = [str(m.get("content")) for m in second["messages"]]
    assert "Summary of six reports." in contents
    assert any(m["role"] == "tool" and "Report 7" in str(m["content"]) for m in second["messages"])  # this turn's step survives
    assert await compactions(agent) == 1


async def test_reported_input_tokens_under_the_headroom_leave_the_conversation_alone(user, model):
    agent = await agent_for(user, "proactive-agent", "roomy")
    await agent.persist_messages(exchanges(6))
    read_seven = Reply.tool_calls([ToolCallSpec("read_report", json.dumps({"number": 7}))])
    model.script(with_usage(read_seven, 8_999), Reply.text("Seven is read."))
    result = await agent.save_messages([user_message("Read report 7", "u9")])
    assert result.status == "completed" and len(model.requests) == 2
    assert await compactions(agent) == 0


# -- every chat agent --------------------------------------------------------------------------------
async def test_an_ai_chat_agents_classification_reaches_its_on_chat_error(user, model):
    agent = await agent_for(user, "quota-chat-agent", "quota")
    result = await agent.save_messages([user_message("Hello", "u1")])
    assert (result.status, result.error) == ("error", "This month's quota is spent.")
    [ctx] = QuotaChatAgent.seen
    assert (ctx.stage, ctx.classification, ctx.request_id) == ("turn", "fatal", result.request_id)


async def test_proactive_compaction_happens_at_most_max_compactions_times_a_turn(user, model):
    agent = await agent_for(user, "proactive-agent", "once")
    await agent.persist_messages(exchanges(6))
    read = [Reply.tool_calls([ToolCallSpec("read_report", json.dumps({"number": n}))]) for n in (7, 8)]
    model.script(with_usage(read[0], 9_500), Reply.text("Summary of six reports."), with_usage(read[1], 9_900), Reply.text("Both are read."))
    result = await agent.save_messages([user_message("Read reports 7 and 8", "u9")])
    assert result.status == "completed" and len(model.requests) == 4
    assert await compactions(agent) == 1
