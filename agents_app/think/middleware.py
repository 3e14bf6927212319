"""Model middleware: wrappers around every model call of a Think turn, for guardrails,
caching and logging (the AI SDK's `wrapLanguageModel`).

A middleware may rewrite the call's parameters (`transform_params`) and wrap the stream of
UI chunks the call produces (`wrap_stream`; it may also answer without calling the model).
Order: `get_model_middleware()` returns `[outer, inner]`; `outer.transform_params` runs
first, then `inner.transform_params`, then the model is called; its chunks pass through
`inner.wrap_stream` first and `outer.wrap_stream` last. The loop reads the step's text and
tool calls from what comes out of the outermost middleware, so a redaction also keeps the
redacted text out of the history the model sees on the next step.
"""
from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Chunk = dict[str, Any]


@dataclass(frozen=True)
class ModelCallParams:
    """One model call (one step). `extra` holds sampling settings such as temperature.
    Frozen: `transform_params` returns `dataclasses.replace(params, …)`."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    tool_choice: Any
    step_number: int
    extra: dict[str, Any] = field(default_factory=dict)


ModelCall = Callable[[ModelCallParams], AsyncIterator[Chunk]]


class ModelMiddleware:
    """Subclass and override either method; the defaults change nothing."""

    async def transform_params(self, params: ModelCallParams) -> ModelCallParams:
        return params

    async def wrap_stream(self, params: ModelCallParams, call_next: ModelCall) -> AsyncIterator[Chunk]:
        async for chunk in call_next(params):
            yield chunk


def wrap_model_call(call: ModelCall, middlewares: Sequence[ModelMiddleware]) -> ModelCall:
    """The model call seen through `middlewares`, the first being the outermost."""

    def layer(middleware: ModelMiddleware, inner: ModelCall) -> ModelCall:
        async def wrapped(params: ModelCallParams) -> AsyncIterator[Chunk]:
            transformed = await middleware.transform_params(params)
            async for chunk in middleware.wrap_stream(transformed, inner):
                yield chunk

        return wrapped

    wrapped = call
    for middleware in reversed(middlewares):
        wrapped = layer(middleware, wrapped)
    return wrapped


class RedactionMiddleware(ModelMiddleware):
    """Replaces every match of `pattern` in generated text and reasoning with `replacement`,
    also when a match is split across deltas.

    Text is held back until it can no longer be the start of a match: at most
    `max_match_length` characters (the longest match the pattern can have) trail the model's
    output; everything is released at the end of the part.
    """

    _DELTAS = {"text-delta": "text-end", "reasoning-delta": "reasoning-end"}

    def __init__(self, pattern: str | re.Pattern[str], replacement: str = "[redacted]", *, max_match_length: int = 64) -> None:
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        self.replacement = replacement
        self.max_match_length = max_match_length

    def _releasable(self, held: str) -> int:
        """How much of `held` can be redacted and sent now: never cut through a match that
        might still grow, nor text within the hold-back window."""
        boundary = max(0, len(held) - self.max_match_length)
        for match in self.pattern.finditer(held):
            if match.start() < boundary < match.end():
                return match.start()
        return boundary

    async def wrap_stream(self, params: ModelCallParams, call_next: ModelCall) -> AsyncIterator[Chunk]:
        held: dict[str, str] = {}
        ends = set(self._DELTAS.values())
        async for chunk in call_next(params):
            kind = chunk.get("type")
            if kind in self._DELTAS:
                part_id = chunk["id"]
                text = held.get(part_id, "") + chunk.get("delta", "")
                cut = self._releasable(text)
                held[part_id] = text[cut:]
                if cut:
                    yield {**chunk, "delta": self.pattern.sub(self.replacement, text[:cut])}
                continue
            if kind in ends and held.get(chunk.get("id", "")):
                delta_type = "text-delta" if kind == "text-end" else "reasoning-delta"
                rest = held.pop(chunk["id"])
                yield {"type": delta_type, "id": chunk["id"], "delta": self.pattern.sub(self.replacement, rest)}
            yield chunk

