"""Agents used by the tests: turns whose timing and content the test controls through the
request body, so protocol behaviour is tested without depending on a model."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel

from agents_app.agents import (
    Agent,
    AIChatAgent,
    ChatOptions,
    ChatResponse,
    ModelMiddleware,
    StepConfig,
    StepContext,
    StepResult,
    ThinkAgent,
    ToolCallContext,
    ToolCallDecision,
    ToolCallResultContext,
    TurnConfig,
    TurnContext,
    callable_method,
    generate_object,
    register_agent,
    text_of,
    tool,
    write_data,
)


@register_agent
class ScriptedAgent(AIChatAgent):
    """Streams `body.words` (default 5) text deltas, `body.delay` seconds apart. With
    `body.fail_after` it raises after that many deltas; with `body.plain` it answers plain text."""

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        body = options.body or {}
        if body.get("pre_delay"):
            await asyncio.sleep(float(body["pre_delay"]))
        if body.get("none"):
            return None
        if body.get("raise_before"):
            raise RuntimeError("the handler failed before streaming")
        if "plain" in body:
            return str(body["plain"])
        return self._stream(int(body.get("words", 5)), float(body.get("delay", 0)), body.get("fail_after"), body)

    async def _stream(self, words: int, delay: float, fail_after: Any, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "start"}
        yield {"type": "start-step"}
        yield {"type": "text-start", "id": "t0"}
        for index in range(words):
            if fail_after is not None and index == int(fail_after):
                raise RuntimeError("the stream broke")
            if delay:
                await asyncio.sleep(delay)
            yield {"type": "text-delta", "id": "t0", "delta": f"w{index} "}
        yield {"type": "text-end", "id": "t0"}
        if body.get("echo_body"):
            yield {"type": "data-body", "data": body}
        yield {"type": "finish-step"}
        yield {"type": "finish", "finishReason": "stop"}


@register_agent
class CounterAgent(Agent):
    """A plain agent with state, validation and callable methods."""

    initial_state = {"count": 0}

    def validate_state_change(self, state: Any, source: Any) -> None:
        if not isinstance(state, dict) or state.get("count", 0) < 0:
            raise ValueError("count must not be negative")

    @callable_method
    async def increment(self, by: int = 1) -> int:
        count = (self.state or {}).get("count", 0) + by
        await self.set_state({"count": count})
        return count

    @callable_method
    def echo(self, value: Any) -> Any:
        return value

    @callable_method
    def fail(self) -> None:
        raise ValueError("this method always fails")

    def not_exposed(self) -> str:
        return "secret"

    @callable_method(streaming=True)
    async def count_to(self, stream: Any, n: int) -> None:
        for i in range(1, n + 1):
            await stream.send(i)
        await stream.end("done")

    @callable_method(streaming=True)
    async def break_midway(self, stream: Any) -> None:
        await stream.send(1)
        raise RuntimeError("stream broke")

    def is_readonly(self, connection: Any) -> bool:
        return connection.query.get("mode") == "readonly"

    def should_send_protocol_messages(self, connection: Any) -> bool:
        return connection.query.get("mode") != "silent"


@tool("Report progress in steps; streams preliminary results.")
async def slow_count(steps: int) -> AsyncIterator[dict[str, Any]]:
    for index in range(1, steps + 1):
        yield {"done": index, "of": steps}


@tool("Annotate the answer with data parts.")
def annotate(label: str) -> str:
    write_data("progress", {"percent": 10}, id="p1")
    write_data("progress", {"percent": 100}, id="p1")
    write_data("citation", {"url": "https://example.org", "title": label})
    write_data("notice", {"text": "working"}, transient=True)
    return "annotated"


@tool("Never allowed to run.")
def forbidden() -> str:
    raise AssertionError("blocked tools must not run")


@tool("Expensive lookup; a hook answers it from a cache.")
def cached(key: str) -> str:
    raise AssertionError("substituted tools must not run")


@register_agent
class HookedAgent(ThinkAgent):
    """Records every hook call so tests can assert their order and contents."""

    events: list[tuple[str, Any]] = []

    def get_tools(self) -> dict[str, Any]:
        return {t.name: t for t in (slow_count, annotate, forbidden, cached)}

    async def before_turn(self, context: TurnContext) -> TurnConfig | None:
        type(self).events.append(("before_turn", context.continuation))
        if context.body and "system" in context.body:
            return TurnConfig(system=context.body["system"], max_steps=context.body.get("max_steps"))
        return None

    async def before_tool_call(self, context: ToolCallContext) -> ToolCallDecision | None:
        type(self).events.append(("before_tool_call", context.tool_name))
        if context.tool_name == "forbidden":
            return ToolCallDecision(action="block", reason="Not allowed here.")
        if context.tool_name == "cached":
            return ToolCallDecision(action="substitute", output={"cached": context.input["key"]})
        return None

    async def after_tool_call(self, context: ToolCallResultContext) -> None:
        type(self).events.append(("after_tool_call", (context.tool_name, context.success, context.output)))

    async def on_step_finish(self, step: StepResult) -> None:
        type(self).events.append(("on_step_finish", (step.step_number, step.finish_reason, step.usage.get("totalTokens", 0) > 0)))

    async def on_chat_response(self, result: Any) -> None:
        type(self).events.append(("on_chat_response", result.status))


@tool("Look a term up.")
def lookup(term: str) -> dict[str, str]:
    return {"term": term, "meaning": f"{term} means something"}


@tool("Hand in the final answer.")
def finish(answer: str) -> str:
    return answer


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


@tool("Classify the sentiment of a text with a second model call.")
async def classify(text: str) -> dict[str, Any]:
    return (await generate_object(None, Sentiment, f"Classify the sentiment of: {text}")).model_dump()


@register_agent
class SteppedAgent(ThinkAgent):
    """`plan` maps a step number to the StepConfig `prepare_step` returns; every StepContext
    is recorded in `seen`; `middleware` is what get_model_middleware returns."""

    plan: dict[int, StepConfig] = {}
    seen: list[StepContext] = []
    middleware: list[ModelMiddleware] = []

    def get_tools(self) -> dict[str, Any]:
        return {"lookup": lookup, "finish": finish, "classify": classify}

    def get_model_middleware(self) -> list[ModelMiddleware]:
        return list(type(self).middleware)

    async def prepare_step(self, context: StepContext) -> StepConfig | None:
        type(self).seen.append(context)
        return type(self).plan.get(context.step_number)


@tool("Read a page of the user's book (shadows the workspace tool of the same name).")
def read(page: int) -> str:
    return f"page {page}"


@register_agent
class BookAgent(ThinkAgent):
    """Has a tool named like a workspace tool: its own must win."""

    def get_tools(self) -> dict[str, Any]:
        return {"read": read}


@register_agent
class ResearcherAgent(ThinkAgent):
    """A child agent: answers whatever it is asked, with the workspace tools only."""

    system_prompt = "You research questions and answer in one sentence."


class EventLog:
    """A sub-agent callback recording what it was told."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.done: list[Any] = []
        self.errors: list[str] = []

    async def on_event(self, chunk: dict[str, Any]) -> None:
        self.events.append(chunk)

    def on_done(self, result: Any) -> None:
        self.done.append(result)

    def on_error(self, error: str) -> None:
        self.errors.append(error)


@register_agent
class CoordinatorAgent(ThinkAgent):
    """Delegates research to a ResearcherAgent session and hands its answer to the model."""

    delegations: list[EventLog] = []

    def get_tools(self) -> dict[str, Any]:
        @tool("Ask the research agent a question; returns its answer.")
        async def research(question: str) -> str:
            child = await self.sub_agent(ResearcherAgent, f"{self.name}-research")
            log = EventLog()
            type(self).delegations.append(log)
            result = await child.chat(question, log)
            return text_of(result.message) if result.message else f"The research agent failed: {result.error}"

        return {"research": research}
