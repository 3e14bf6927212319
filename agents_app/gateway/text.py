"""Text from the model outside the Think loop, through the gateway like every model call
(routes and fallbacks, cache, limits, budgets, the call log): the AI SDK's `generateText` and
`streamText` for one call.

    result = await generate_text("Name three rivers.", system="Be brief.")
    async for delta in stream_text(messages, model="gpt-4o-mini", gateway={"skip_cache": True}):
        ...

`prompt` is a user text, UI messages (`parts`), or chat-completions messages. `gateway`
holds per-call options: `id` (the named gateway Route to use), `skip_cache` and `cache_ttl`
(seconds), also spelled `skipCache` / `cacheTtl` as the seeds' clients send them.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from agents_app.gateway.scope import gateway_options
from agents_app.gateway.steps import StepStream, text_ids
from agents_app.providers.convert import to_openai_messages
from agents_app.providers.openai_chat import default_model, make_client

Prompt = str | list[dict[str, Any]]


@dataclass(frozen=True)
class TextResult:
    text: str
    reasoning: str
    finish_reason: str
    usage: dict[str, int] | None


def chat_messages(prompt: Prompt, system: str | None = None) -> list[dict[str, Any]]:
    """The chat-completions messages for a prompt in any of the accepted shapes."""
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if any("parts" in message for message in prompt):
        return to_openai_messages(prompt, system)
    return [*([{"role": "system", "content": system}] if system else []), *prompt]


@contextlib.contextmanager
def per_call_options(gateway: dict[str, Any] | None) -> Iterator[None]:
    if not gateway:
        yield
        return
    unknown = set(gateway) - {"id", "skip_cache", "skipCache", "cache_ttl", "cacheTtl"}
    if unknown:
        raise ValueError(f"Unknown gateway options: {', '.join(sorted(unknown))}")
    gateway_id = gateway.get("id")
    if gateway_id is not None and not (isinstance(gateway_id, str) and gateway_id):
        raise ValueError("The gateway id must be the name of a gateway route.")
    skip = gateway.get("skip_cache", gateway.get("skipCache"))
    ttl = gateway.get("cache_ttl", gateway.get("cacheTtl"))
    with gateway_options(
        skip_cache=None if skip is None else bool(skip), cache_ttl=None if ttl is None else int(ttl), gateway_id=gateway_id
    ):
        yield


def _step(prompt: Prompt, model: str | None, system: str | None, extra: dict[str, Any] | None) -> StepStream:
    # The client is this loop's shared one (providers/clients.py): nothing to close.
    return StepStream(make_client(), model=model or default_model(), messages=chat_messages(prompt, system), part_ids=text_ids(), extra=extra)


async def stream_text(
    prompt: Prompt, *, model: str | None = None, system: str | None = None, gateway: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> AsyncIterator[str]:
    """The answer's text deltas as the model streams them (`ModelError` on failure)."""
    with per_call_options(gateway):
        async for chunk in _step(prompt, model, system, extra):
            if chunk["type"] == "text-delta":
                yield chunk["delta"]


async def generate_text(
    prompt: Prompt, *, model: str | None = None, system: str | None = None, gateway: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> TextResult:
    """The whole answer of one model call (`ModelError` on failure)."""
    step = _step(prompt, model, system, extra)
    with per_call_options(gateway):
        async for _ in step:
            pass
    outcome = step.outcome
    return TextResult(outcome.text, outcome.reasoning, outcome.finish_reason, outcome.usage)
