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



class ExtractReasoningMiddleware(ModelMiddleware):
    """Models that write their thinking into the text between `<think>` and `</think>` (many
    open-weight models do) get reasoning parts instead, as if they had streamed
    `reasoning_content` (the AI SDK's extractReasoningMiddleware). A tag split across deltas
    is recognised; `start_with_reasoning` treats the text as reasoning until the first closing
    tag (for templates that put the opening tag in the prompt). Text right after the reasoning
    loses its leading whitespace."""

    def __init__(self, tag_name: str = "think", *, start_with_reasoning: bool = False) -> None:
        self.opening, self.closing = f"<{tag_name}>", f"</{tag_name}>"
        self.start_with_reasoning = start_with_reasoning

    async def wrap_stream(self, params: ModelCallParams, call_next: ModelCall) -> AsyncIterator[Chunk]:
        splitters: dict[str, _TagSplitter] = {}
        async for chunk in call_next(params):
            kind, part_id = chunk.get("type"), chunk.get("id", "")
            if kind == "text-start":
                splitters[part_id] = _TagSplitter(part_id, self.opening, self.closing, self.start_with_reasoning)
            elif kind == "text-delta" and part_id in splitters:
                for out in splitters[part_id].feed(chunk.get("delta", "")):
                    yield out
            elif kind == "text-end" and part_id in splitters:
                for out in splitters.pop(part_id).end():
                    yield out
            else:
                yield chunk


class _TagSplitter:
    """One text part of the model's output, re-emitted as alternating text and reasoning parts."""

    def __init__(self, part_id: str, opening: str, closing: str, in_reasoning: bool) -> None:
        self.part_id = part_id
        self.tags = {False: opening, True: closing}  # the tag that ends the current kind
        self.in_reasoning = in_reasoning
        self.held = ""
        self.open_id: str | None = None
        self.parts = 0
        self.after_reasoning = False

    def _emit(self, text: str) -> list[Chunk]:
        if self.after_reasoning and not self.in_reasoning:
            text = text.lstrip()
        if not text:
            return []
        chunks: list[Chunk] = []
        kind = "reasoning" if self.in_reasoning else "text"
        if self.open_id is None:
            self.open_id = self.part_id if self.parts == 0 else f"{self.part_id}-{self.parts}"
            self.parts += 1
            chunks.append({"type": f"{kind}-start", "id": self.open_id})
        chunks.append({"type": f"{kind}-delta", "id": self.open_id, "delta": text})
        if not self.in_reasoning:
            self.after_reasoning = False
        return chunks

    def _close(self) -> list[Chunk]:
        if self.open_id is None:
            return []
        kind = "reasoning" if self.in_reasoning else "text"
        closed, self.open_id = self.open_id, None
        return [{"type": f"{kind}-end", "id": closed}]

    def feed(self, delta: str) -> list[Chunk]:
        self.held += delta
        chunks: list[Chunk] = []
        while True:
            tag = self.tags[self.in_reasoning]
            at = self.held.find(tag)
            if at < 0:
                break
            chunks += self._emit(self.held[:at]) + self._close()
            self.held = self.held[at + len(tag) :]
            self.after_reasoning = self.in_reasoning
            self.in_reasoning = not self.in_reasoning
        # Hold back what could be the start of the tag, release the rest.
        keep = next((n for n in range(min(len(tag) - 1, len(self.held)), 0, -1) if tag.startswith(self.held[-n:])), 0)
        release, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return chunks + self._emit(release)

    def end(self) -> list[Chunk]:
        rest, self.held = self.held, ""
        return self._emit(rest) + self._close()
