"""A streamed chat.completions answer read as the upstream's JSON objects, one per event.

A paced model sends each chunk in a network read of its own, so whatever the SDK's stream
does per event is paid per token by every concurrent chat. `openai.AsyncStream` passes an
event through four async generators (its iterator, its event iterator, the decoder's, and
httpx's byte iterator with its content decoder) and checks it against `typing.Mapping`,
an ABC check through typing's generic alias that alone costs more than decoding the JSON.
In memory, with this project's decoder (providers/event_stream.py): ~17 µs an event
through `AsyncStream[object]`, ~9 µs through `ChunkStream`.

`ChunkStream` is the SDK's stream class with a leaner `__stream__` for chat completions: it
reads the response's byte stream straight into the client's decoder unless the body is
content-encoded (then through httpx's decoding iterator, as the SDK does), and keeps the
SDK's behaviour otherwise: `[DONE]` ends the stream (an HTTP/1.1 body is drained so its
connection goes back to the pool), an event whose JSON object holds a truthy `error` raises
`openai.APIError` with that error's message, a read timeout raises `APITimeoutError`, a
broken connection `APIConnectionError`, and the response is closed however the iteration
ends. `tests/test_chunk_stream.py` holds it against `AsyncStream[object]`. Events that
chat.completions never sends (the Assistants API's `thread.*` events) get no special case.
It is built on openai 3's stream internals; with openai 2 (`SUPPORTED` false) the SDK's own
stream class reads the answer.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai

from agents_app.providers.upstream_transport import http

try:  # openai 3: the SDK's own drain (bounded in time) and its errors of a read
    from openai._streaming import request_exceptions, timeout_exceptions
    from openai._streaming_cleanup import drain_response_async
except ImportError:  # openai 2 reads its streams otherwise: `SUPPORTED` is false
    SUPPORTED = False
else:
    SUPPORTED = True

_FALLBACK_ERROR_MESSAGE = "An error occurred during streaming"

# One streamed chat.completions chunk, as the upstream sent it (JSON object).
ChatChunk = dict[str, Any]


class ChunkStream(openai.AsyncStream[ChatChunk]):
    """An `AsyncStream` of chat.completions chunks, each the decoded JSON object."""

    def __aiter__(self) -> AsyncIterator[ChatChunk]:  # type: ignore[override]
        # The SDK's `__aiter__` is one more async generator around the same iterator.
        return self._iterator

    async def __stream__(self) -> AsyncIterator[ChatChunk]:  # type: ignore[override]
        response = self.response
        pieces = _body_bytes(response)
        events = self._decoder.aiter_bytes(pieces)
        try:
            try:
                async for event in events:
                    data = event.data
                    if data.startswith("[DONE]"):
                        if response.http_version == "HTTP/1.1":  # HTTP/2 closes the stream, keeps the connection
                            await drain_response_async(response)
                        break
                    chunk = json.loads(data)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        raise _in_stream_error(chunk["error"], response)
                    yield chunk
            except timeout_exceptions() as error:
                raise openai.APITimeoutError(request=response.request) from error
            except request_exceptions() as error:
                raise openai.APIConnectionError(request=response.request) from error
        finally:
            # Left at `[DONE]`, these async generators would each be closed later by a task
            # the event loop schedules for it (three per model call): closed here instead.
            await _closed(events)
            await _closed(pieces)
            await response.aclose()


def _body_bytes(response: http.Response) -> AsyncIterator[bytes]:
    """The body as it arrives: the transport's own stream when nothing needs decoding."""
    if response.headers.get("content-encoding", "identity").strip().lower() in ("", "identity"):
        return response.stream.__aiter__()
    return response.aiter_bytes()


async def _closed(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _in_stream_error(error: Any, response: http.Response) -> openai.APIError:
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = _FALLBACK_ERROR_MESSAGE
    return openai.APIError(message=message, request=response.request, body=error)
