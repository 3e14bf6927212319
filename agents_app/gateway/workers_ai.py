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

from collections.abc import AsyncIterator
from typing import Any

from agents_app.gateway.text import generate_text, stream_text

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


class WorkersAI:
    async def run(
        self, model: str, inputs: dict[str, Any], *, stream: bool | None = None, gateway: dict[str, Any] | None = None,
    ) -> dict[str, Any] | AiTextStream:
        """`{"response": text, "usage": …}`, or with `stream=True` (or `inputs["stream"]`)
        an AiTextStream. Model failures raise `ModelError`."""
        prompt = _prompt(inputs)
        extra = {key: value for key, value in inputs.items() if key in _SAMPLING}
        streamed = stream if stream is not None else bool(inputs.get("stream"))
        if streamed:
            return AiTextStream(stream_text(prompt, model=model, gateway=gateway, extra=extra))
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
