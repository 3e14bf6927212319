"""Agents used by the tests: turns whose timing and content the test controls through the
request body, so protocol behaviour is tested without depending on a model."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agents_app.runtime.agent import Agent, AIChatAgent, callable_method
from agents_app.runtime.registry import register_agent
from agents_app.runtime.types import ChatOptions, ChatResponse


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
