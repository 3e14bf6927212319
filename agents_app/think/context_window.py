"""How much a model can read, and keeping what is sent to it under that.

Every model has a context window (tokens of input plus output). The window of a model comes
from, first to last: the agent's `context_window` attribute, the `AGENTS_MODEL_CONTEXT_WINDOWS`
setting (model → tokens), the table of common models below (longest matching name prefix,
a provider prefix such as "openai/" ignored), and `AGENTS_CONTEXT_WINDOW` for the rest.

Tokens are estimated, not counted (no tokenizer per provider): the estimate errs on the high
side, and an upstream that still refuses a request as too long gets a compacted, tighter retry
(think/model_loop.py).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from agents_app.protocol.row_size import shrink_value
from agents_app.think.context_blocks import estimate_tokens

# Published context windows of common models, by name prefix (the longest matching prefix wins,
# so "gpt-4o-mini" is not read as "gpt-4").
KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1-mini": 128_000,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "claude": 200_000,
    "gemini-1.5": 1_048_576,
    "gemini-2": 1_048_576,
    "llama-3.1": 128_000,
    "llama-3.2": 128_000,
    "llama-3.3": 128_000,
    "meta-llama-3.1": 128_000,
    "mistral-large": 128_000,
    "mistral-small": 32_768,
    "qwen2.5": 32_768,
    "deepseek": 64_000,
    "smollm2": 8_192,
}
MESSAGE_OVERHEAD_TOKENS = 4
# A picture costs the model a few hundred to a thousand tokens depending on its size.
IMAGE_TOKENS = 1_000
# Room kept for the answer: a quarter of the window, at most this many tokens.
MAX_OUTPUT_RESERVE = 4_096
# What an older tool output is cut to when the request must shrink (think.md §4: 500 chars).
PRUNED_TOOL_OUTPUT_CHARS = 500


def context_window(model: str, agent: Any = None) -> int:
    """The context window of `model` in tokens (see the module docstring for the order)."""
    own = getattr(agent, "context_window", None)
    if isinstance(own, int) and own > 0:
        return own
    configured: dict[str, int] = getattr(settings, "AGENTS_MODEL_CONTEXT_WINDOWS", {}) or {}
    if model in configured:
        return int(configured[model])
    name = model.lower().rsplit("/", 1)[-1]
    matches = [prefix for prefix in KNOWN_CONTEXT_WINDOWS if name.startswith(prefix)]
    if matches:
        return KNOWN_CONTEXT_WINDOWS[max(matches, key=len)]
    return int(settings.AGENTS_CONTEXT_WINDOW)


def input_budget(model: str, agent: Any = None, *, max_output_tokens: int | None = None) -> int:
    """Tokens the request may use: the window minus the room kept for the answer."""
    window = context_window(model, agent)
    reserve = max_output_tokens if max_output_tokens else min(window // 4, MAX_OUTPUT_RESERVE)
    return max(window - reserve, window // 2)


def compaction_threshold(model: str, agent: Any) -> int | None:
    """Where a Think agent compacts: its `compact_after_tokens`, or by default
    `AGENTS_COMPACTION_THRESHOLD` (a fraction) of the input budget; 0 turns it off."""
    explicit = getattr(agent, "compact_after_tokens", None)
    if explicit is not None:
        return explicit or None
    fraction = float(settings.AGENTS_COMPACTION_THRESHOLD)
    return int(input_budget(model, agent) * fraction) if fraction > 0 else None


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_tokens(content)
    total = 0
    for item in content or []:
        if isinstance(item, dict) and item.get("type") == "text":
            total += estimate_tokens(item.get("text", ""))
        else:
            total += IMAGE_TOKENS
    return total


def message_tokens(message: dict[str, Any]) -> int:
    """Estimated tokens of one chat-completions message."""
    total = MESSAGE_OVERHEAD_TOKENS + _content_tokens(message.get("content"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        total += estimate_tokens(function.get("name", "")) + estimate_tokens(function.get("arguments") or "")
    return total


def estimate_request_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """Estimated input tokens of a chat-completions request: its messages, and its tools as
    `estimate_tokens(json.dumps(tools))`."""
    total = sum(message_tokens(m) for m in messages)
    if not tools:
        return total
    # The list's JSON is its items' joined by ", " inside brackets: its length is theirs plus
    # 2n, and its words are theirs (the separators' spaces split them, the brackets do not).
    sizes = [_schema_size(tool) for tool in tools]
    characters = sum(size[0] for size in sizes) + 2 * len(tools)
    words = sum(size[1] for size in sizes)
    return total + math.ceil(max(characters / 4, words * 1.3))


# id(schema) → (schema, characters, words) of its JSON. A step offers every tool, and the
# schemas are objects shared by every call that offers the same tool (Tool.offered_schema):
# encoding and splitting them again for each call was ~4 % of a turn's CPU under load. The
# schema is kept with its figures, so an id is never reused while it is a key; schemas made
# afresh per call (a middleware's edited copy) fill the map until it is cleared.
_schema_sizes: dict[int, tuple[dict[str, Any], int, int]] = {}
_MAX_SCHEMA_SIZES = 4096


def _schema_size(schema: dict[str, Any]) -> tuple[int, int]:
    known = _schema_sizes.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1], known[2]
    text = json.dumps(schema)
    if len(_schema_sizes) >= _MAX_SCHEMA_SIZES:
        _schema_sizes.clear()
    _schema_sizes[id(schema)] = (schema, len(text), len(text.split()))
    return len(text), len(text.split())


def truncation_note(tool_name: str, original_chars: int) -> str:
    """What the model reads in place of the rest of an older tool output."""
    return (
        f"[Output truncated to save context: {original_chars} characters originally. "
        f"Call {tool_name or 'the tool'} again if you need the full output.]"
    )


def truncated_output(output: Any, tool_name: str, limit: int = PRUNED_TOOL_OUTPUT_CHARS) -> str | None:
    """`output` as the model should see it once it is old: cut to about `limit` characters
    (structure kept), followed by the note; None when it is short enough to keep."""
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return None
    shrunk = shrink_value(output, limit)
    head = shrunk if isinstance(shrunk, str) else json.dumps(shrunk, ensure_ascii=False, default=str)
    if len(head) > limit * 2:  # a shape that could not shrink (a long list of numbers…)
        head = head[:limit]
    return f"{head}\n{truncation_note(tool_name, len(text))}"


def _tool_names(messages: list[dict[str, Any]]) -> dict[str, str]:
    return {
        call.get("id", ""): (call.get("function") or {}).get("name", "")
        for message in messages
        for call in message.get("tool_calls") or []
    }


def _last_user_index(messages: list[dict[str, Any]]) -> int:
    return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)


def fit_to_window(messages: list[dict[str, Any]], budget: int, tools: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The request's messages cut down to `budget` estimated tokens, a copy when anything
    changes. First tool outputs are truncated, oldest first (the model is told, and may call
    the tool again); then the oldest exchanges after the system prompt are left out, never
    the last user message or anything after it, and never a tool call without its results."""
    total = estimate_request_tokens(messages, tools)
    if total <= budget:
        return messages
    fitted = copy.copy(messages)
    names = _tool_names(fitted)
    for index, message in enumerate(fitted):
        if total <= budget:
            return fitted
        if message.get("role") != "tool" or not isinstance(message.get("content"), str):
            continue
        cut = truncated_output(message["content"], names.get(message.get("tool_call_id", ""), ""))
        if cut is not None:
            before = message_tokens(message)
            fitted[index] = {**message, "content": cut}
            total += message_tokens(fitted[index]) - before
    head = 1 if fitted and fitted[0].get("role") == "system" else 0
    last_user = _last_user_index(fitted)
    while total > budget and head < last_user:
        # Leave out one exchange: a message, and the tool results that answer its calls.
        end = head + 1
        while end < len(fitted) and fitted[end].get("role") == "tool":
            end += 1
        total -= sum(message_tokens(m) for m in fitted[head:end])
        del fitted[head:end]
        last_user -= end - head
    return fitted


@dataclass(frozen=True)
class OverflowPolicy:
    """A Think agent's `context_overflow` (think.md §9.4), read once per turn.

    Reactive: a step the upstream refused as too long (per `classify_chat_error`) is compacted
    and run again, up to `max_retries` times. Proactive: once a step reported `proactive_at`
    input tokens or more, the conversation is compacted before the next step, at most
    `max_compactions` times a turn."""

    reactive: bool = True
    max_retries: int = 1
    proactive_at: int | None = None
    max_compactions: int = 1


def overflow_policy(config: dict[str, Any] | None) -> OverflowPolicy:
    """`context_overflow` as the model loop applies it. None (the default) keeps the built-in
    compact-and-retry-once; a dict that leaves `reactive` out keeps it on as well, so setting
    only `proactive` does not lose it. camelCase keys as in the reference, snake_case too."""
    if config is None:
        return OverflowPolicy()

    def read(source: dict[str, Any], camel: str, snake: str, default: Any) -> Any:
        return source.get(camel, source.get(snake, default))

    proactive = config.get("proactive") or {}
    limit = read(proactive, "maxInputTokens", "max_input_tokens", None)
    return OverflowPolicy(
        reactive=bool(config.get("reactive", True)),
        max_retries=max(0, int(read(config, "maxRetries", "max_retries", 1))),
        proactive_at=int(limit * float(proactive.get("headroom", 0.9))) if limit else None,
        max_compactions=max(0, int(read(proactive, "maxCompactions", "max_compactions", 1))),
    )
