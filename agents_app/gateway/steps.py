"""One model call ("step") through the gateway, streamed with `stream_options.include_usage`
and translated into UI message stream chunks (protocol §10.6). The gateway (calls.py:
routing, fallbacks, cache, limits, call log) turns upstream failures into `ModelError` with
a message fit to show a user: no stack trace, never a key.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai

from agents_app.gateway.calls import GatewayCall
from agents_app.testing import faults

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
}


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str = ""
    input: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class StepOutcome:
    finish_reason: str = "other"
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] | None = None


def text_ids(prefix: str = "txt") -> Iterator[str]:
    counter = 0
    while True:
        yield f"{prefix}-{counter}"
        counter += 1


class StepStream:
    """Streams one chat-completions call as UI chunks; `outcome` is complete after iteration."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        send_reasoning: bool = True,
        part_ids: Iterator[str],
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **(extra or {}),
        }
        if tools:
            self._request["tools"] = tools
            if tool_choice is not None:
                self._request["tool_choice"] = tool_choice
        self._send_reasoning = send_reasoning
        self._part_ids = part_ids
        self.outcome = StepOutcome()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        open_text: str | None = None
        open_reasoning: str | None = None
        calls: dict[int, ToolCall] = {}
        faults.point("model_call")
        async for chunk in GatewayCall(self._client, self._request):
            usage = chunk.get("usage")
            if usage:
                self.outcome.usage = {
                    "inputTokens": usage.get("prompt_tokens"),
                    "outputTokens": usage.get("completion_tokens"),
                    "totalTokens": usage.get("total_tokens"),
                }
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning and self._send_reasoning:
                    if open_reasoning is None:
                        open_reasoning = next(self._part_ids)
                        yield {"type": "reasoning-start", "id": open_reasoning}
                    self.outcome.reasoning += reasoning
                    yield {"type": "reasoning-delta", "id": open_reasoning, "delta": reasoning}
                content = delta.get("content")
                if content:
                    if open_reasoning is not None:
                        yield {"type": "reasoning-end", "id": open_reasoning}
                        open_reasoning = None
                    if open_text is None:
                        open_text = next(self._part_ids)
                        yield {"type": "text-start", "id": open_text}
                    self.outcome.text += content
                    yield {"type": "text-delta", "id": open_text, "delta": content}
                    faults.point("model_stream")
                for fragment in delta.get("tool_calls") or ():
                    for end in self._close(open_text, open_reasoning):
                        yield end
                    open_text = open_reasoning = None
                    index = fragment.get("index", 0)
                    function = fragment.get("function") or {}
                    call = calls.get(index)
                    if call is None:
                        call = calls[index] = ToolCall(id=fragment.get("id") or f"call_{index}", name=function.get("name") or "")
                        yield {"type": "tool-input-start", "toolCallId": call.id, "toolName": call.name}
                    arguments = function.get("arguments")
                    if arguments:
                        call.arguments += arguments
                        yield {"type": "tool-input-delta", "toolCallId": call.id, "inputTextDelta": arguments}
                finish_reason = choice.get("finish_reason")
                if finish_reason:
                    self.outcome.finish_reason = _FINISH_REASONS.get(finish_reason, "other")
        for end in self._close(open_text, open_reasoning):
            yield end
        for call in calls.values():
            yield self._finish_call(call)
            self.outcome.tool_calls.append(call)

    @staticmethod
    def _close(open_text: str | None, open_reasoning: str | None) -> list[dict[str, Any]]:
        ends = []
        if open_reasoning is not None:
            ends.append({"type": "reasoning-end", "id": open_reasoning})
        if open_text is not None:
            ends.append({"type": "text-end", "id": open_text})
        return ends

    @staticmethod
    def _finish_call(call: ToolCall) -> dict[str, Any]:
        try:
            parsed = json.loads(call.arguments) if call.arguments.strip() else {}
            if not isinstance(parsed, dict):
                raise ValueError("tool arguments must be a JSON object")
        except ValueError as error:
            call.error = f"Invalid JSON arguments for tool {call.name}: {error}"
            return {
                "type": "tool-input-error",
                "toolCallId": call.id,
                "toolName": call.name,
                "input": call.arguments,
                "errorText": call.error,
            }
        call.input = parsed
        return {"type": "tool-input-available", "toolCallId": call.id, "toolName": call.name, "input": parsed}

