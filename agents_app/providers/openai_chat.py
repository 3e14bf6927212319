"""Model access through the `openai` SDK against any OpenAI-compatible base URL.

One model call ("step") is streamed with `stream_options.include_usage` and translated into
UI message stream chunks (protocol §10.6). Every call goes through the gateway
(agents_app/gateway: routing, fallbacks, cache, limits, call log), which turns upstream
failures into `ModelError` with a message fit to show a user: no stack trace, never a key.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
from django.conf import settings

from agents_app.gateway.calls import GatewayCall
from agents_app.providers import clients
from agents_app.providers.convert import to_openai_messages
from agents_app.providers.errors import ModelError, describe_error
from agents_app.testing import faults

__all__ = ["ModelError", "StepStream", "default_model", "describe_error", "make_client", "stream_reply", "uses_local_model"]

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
}


def uses_local_model() -> bool:
    return not (settings.OPENAI_BASE_URL or settings.OPENAI_API_KEY)


def default_model() -> str:
    if settings.OPENAI_MODEL:
        return settings.OPENAI_MODEL
    if uses_local_model():
        from agents_app.providers.local_model import LOCAL_MODEL_NAME

        return LOCAL_MODEL_NAME
    return "gpt-4o-mini"


def make_client() -> openai.AsyncOpenAI:
    """This event loop's client for the configured model (the bundled local one without
    OPENAI_* settings), shared with every other call: see providers/clients.py."""
    if uses_local_model():
        base_url: str | None = f"http://127.0.0.1:{settings.AGENTS_LOCAL_MODEL_PORT}/v1"
        api_key = "local"
    else:
        base_url = settings.OPENAI_BASE_URL or None
        api_key = settings.OPENAI_API_KEY or "unset"
    return clients.shared(base_url, api_key, settings.AGENTS_MODEL_TIMEOUT)


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
            if chunk.usage is not None:
                self.outcome.usage = {
                    "inputTokens": chunk.usage.prompt_tokens,
                    "outputTokens": chunk.usage.completion_tokens,
                    "totalTokens": chunk.usage.total_tokens,
                }
            for choice in chunk.choices:
                delta = choice.delta
                reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
                if reasoning and self._send_reasoning:
                    if open_reasoning is None:
                        open_reasoning = next(self._part_ids)
                        yield {"type": "reasoning-start", "id": open_reasoning}
                    self.outcome.reasoning += reasoning
                    yield {"type": "reasoning-delta", "id": open_reasoning, "delta": reasoning}
                if delta.content:
                    if open_reasoning is not None:
                        yield {"type": "reasoning-end", "id": open_reasoning}
                        open_reasoning = None
                    if open_text is None:
                        open_text = next(self._part_ids)
                        yield {"type": "text-start", "id": open_text}
                    self.outcome.text += delta.content
                    yield {"type": "text-delta", "id": open_text, "delta": delta.content}
                    faults.point("model_stream")
                for fragment in delta.tool_calls or []:
                    for end in self._close(open_text, open_reasoning):
                        yield end
                    open_text = open_reasoning = None
                    call = calls.get(fragment.index)
                    if call is None:
                        name = fragment.function.name if fragment.function else ""
                        call = calls[fragment.index] = ToolCall(id=fragment.id or f"call_{fragment.index}", name=name or "")
                        yield {"type": "tool-input-start", "toolCallId": call.id, "toolName": call.name}
                    arguments = fragment.function.arguments if fragment.function else None
                    if arguments:
                        call.arguments += arguments
                        yield {"type": "tool-input-delta", "toolCallId": call.id, "inputTextDelta": arguments}
                if choice.finish_reason:
                    self.outcome.finish_reason = _FINISH_REASONS.get(choice.finish_reason, "other")
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


async def stream_reply(
    messages: list[dict[str, Any]], *, system: str | None = None, model: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """One model call as a complete UI message stream, for `on_chat_message` handlers that
    write their own turn logic but want the model's answer streamed."""
    yield {"type": "start"}
    yield {"type": "start-step"}
    async with make_client() as client:
        step = StepStream(client, model=model or default_model(), messages=to_openai_messages(messages, system), part_ids=text_ids())
        try:
            async for chunk in step:
                yield chunk
        except ModelError as error:
            yield {"type": "error", "errorText": str(error)}
            return
    yield {"type": "finish-step"}
    finish: dict[str, Any] = {"type": "finish", "finishReason": step.outcome.finish_reason}
    if step.outcome.usage:
        finish["messageMetadata"] = {"usage": step.outcome.usage}
    yield finish
