"""Model access through the `openai` SDK against any OpenAI-compatible base URL: which
model and which client. A model call itself goes through the gateway (gateway/steps.py),
which wraps this client; this floor never imports the gateway.
"""
from __future__ import annotations

from typing import Any

import openai
from django.conf import settings
from openai._models import FinalRequestOptions

from agents_app.providers import chunk_stream, clients
from agents_app.providers.chunk_stream import ChatChunk
from agents_app.providers.errors import ModelError, describe_error

__all__ = ["ChatChunk", "ModelError", "default_model", "describe_error", "make_client", "stream_chat_chunks", "uses_local_model"]


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


# A chat call's options but its body, built once. `post` builds them for every call with
# pydantic's model_construct, which deep-copies each default (~43 µs); the SDK copies the
# options it is given before each attempt and replaces, never edits, what it changes, so
# a shallow copy with the call's body is what `post` would have built.
_CHAT_CALL = FinalRequestOptions.construct(method="post", url="/chat/completions", json_data=None, files=None)


async def stream_chat_chunks(client: openai.AsyncOpenAI, request: dict[str, Any]) -> openai.AsyncStream[ChatChunk]:
    """A streaming chat.completions call whose chunks arrive as the upstream's JSON objects.

    The SDK still sends the request (base URL, key, headers, timeout) and its stream class
    reads the answer, raising its usual errors (status, connection, timeout, an in-stream
    `error`); it only skips building a pydantic model per chunk, which under a few hundred
    concurrent chats was a tenth of the server's CPU, and reads each event through fewer
    layers (providers/chunk_stream.py). `extra_body` merges into the body, as `create` does.
    """
    body = {key: value for key, value in request.items() if key != "extra_body"}
    body.update(request.get("extra_body") or {})
    # With openai 2, `AsyncStream[object]` (not ChatChunk) is what makes the SDK's stream
    # hand each decoded chunk over untouched; a typed dict would be walked by its converter.
    stream_cls = chunk_stream.ChunkStream if chunk_stream.SUPPORTED else openai.AsyncStream[object]
    options = _CHAT_CALL.model_copy(update={"json_data": body})
    stream: openai.AsyncStream[Any] = await client.request(object, options, stream=True, stream_cls=stream_cls)
    return stream
