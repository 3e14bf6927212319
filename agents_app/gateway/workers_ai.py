"""Workers AI's `env.AI.run(model, inputs)` for text generation, through the gateway like
every model call (routes and fallbacks, cache, limits, the call log):

    answer = await ai.run("@cf/meta/llama-3.1-8b-instruct", {"prompt": "Name a river."})
    answer["response"]                                   # the whole text, plus "usage"
    stream = await ai.run(model, {"messages": [...]}, stream=True)
    return stream                                        # from on_request: Workers AI's SSE

The model name goes upstream as given unless the route in force names a model for its
entries (gateway/routing.py), which makes the name an alias of that model; `gateway={"id": …}`
picks a named route, as the third argument of Workers AI's `run` does.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agents_app.gateway import scope
from agents_app.gateway.text import Prompt, generate_text, stream_text

_SAMPLING = {"max_tokens", "temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"}


class AiTextStream:
    """The streamed answer as Workers AI events, `{"response": delta}`. An agent's
    `on_request` may return it as is: the client then reads `data: {"response": …}` lines
    ending with `data: [DONE]`. The model call starts when the stream is read."""

    def __init__(self, deltas: AsyncIterator[str]) -> None:
        self._deltas = deltas

    async def __aiter__(self) -> AsyncIterator[dict[str, str]]:
        async for delta in self._deltas:
            yield {"response": delta}


def _prompt(inputs: dict[str, Any]) -> str | list[dict[str, Any]]:
    unknown = set(inputs) - {"prompt", "messages", "stream", *_SAMPLING}
    if unknown:
        raise ValueError(f"Unsupported Workers AI inputs: {', '.join(sorted(unknown))}")
    if ("prompt" in inputs) == ("messages" in inputs):
        raise ValueError("Workers AI text generation takes either `prompt` or `messages`.")
    return inputs["prompt"] if "prompt" in inputs else list(inputs["messages"])


@dataclass(frozen=True)
class CallingAgent:
    """The agent instance calling: its agent segment, owner and session (unsaved: None)."""

    agent: str
    user_id: int | None
    session_id: int | None


class WorkersAI:
    """With a caller (an agent's `self.ai`), calls outside a turn, as from `on_request`, take
    the agent's route and count against its owner's limits and budgets, as its turns' calls do."""

    def __init__(self, caller: CallingAgent | None = None) -> None:
        self._caller = caller

    @contextlib.asynccontextmanager
    async def _scope(self) -> AsyncIterator[None]:
        if self._caller is None or scope.current().caller is not None:
            yield  # no agent, or already inside one of its turns
            return
        async with scope.for_agent(self._caller.agent, self._caller.user_id, self._caller.session_id):
            yield

    async def _deltas(self, prompt: Prompt, model: str, gateway: dict[str, Any] | None, extra: dict[str, Any]) -> AsyncIterator[str]:
        async with self._scope():
            async for delta in stream_text(prompt, model=model, gateway=gateway, extra=extra):
                yield delta

    async def run(
        self, model: str, inputs: dict[str, Any], *, stream: bool | None = None, gateway: dict[str, Any] | None = None,
    ) -> dict[str, Any] | AiTextStream:
        """`{"response": text, "usage": …}`, or with `stream=True` (or `inputs["stream"]`)
        an AiTextStream. Model failures raise `ModelError`."""
        prompt = _prompt(inputs)
        extra = {key: value for key, value in inputs.items() if key in _SAMPLING}
        streamed = stream if stream is not None else bool(inputs.get("stream"))
        if streamed:
            return AiTextStream(self._deltas(prompt, model, gateway, extra))
        async with self._scope():
            result = await generate_text(prompt, model=model, gateway=gateway, extra=extra)
        answer: dict[str, Any] = {"response": result.text}
        if result.usage:
            answer["usage"] = {
                "prompt_tokens": result.usage["inputTokens"],
                "completion_tokens": result.usage["outputTokens"],
                "total_tokens": result.usage["totalTokens"],
            }
        return answer


ai = WorkersAI()
