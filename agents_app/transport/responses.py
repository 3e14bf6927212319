"""HTTP responses for agents' `on_request`: JSON, streamed text, Server-Sent Events and the
AI SDK's UI message stream. Every body is an async generator: daphne writes each piece as it
is produced, nothing in the middleware stack buffers it."""
from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

UI_MESSAGE_STREAM_HEADER = "x-vercel-ai-ui-message-stream"
_STREAMING_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_response(data: Any, status: int = 200, *, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse(data, status=status, safe=False)
    _apply(response, headers or {})
    return response


def text_stream_response(pieces: AsyncIterable[str], *, headers: dict[str, str] | None = None) -> StreamingHttpResponse:
    """`text/plain`, each piece written as soon as it is produced."""

    async def body() -> AsyncIterator[bytes]:
        async for piece in pieces:
            if piece:
                yield piece.encode()

    response = StreamingHttpResponse(body(), content_type="text/plain; charset=utf-8")
    _apply(response, {**_STREAMING_HEADERS, **(headers or {})})
    return response


def sse_event(data: Any, *, event: str | None = None, event_id: str | int | None = None) -> str:
    """One event: strings are sent as they are (one `data:` line per line), anything else as JSON."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    lines = [f"event: {event}"] if event else []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return "\n".join(lines) + "\n\n"


def sse_response(
    events: AsyncIterable[Any], *, done_marker: str | None = None, headers: dict[str, str] | None = None
) -> StreamingHttpResponse:
    """`text/event-stream`: one event per item (see `sse_event`); a `done_marker` (e.g.
    `[DONE]`) is sent as the last event so clients know the stream ended on purpose."""

    async def body() -> AsyncIterator[bytes]:
        async for item in events:
            yield sse_event(item).encode()
        if done_marker is not None:
            yield sse_event(done_marker).encode()

    response = StreamingHttpResponse(body(), content_type="text/event-stream; charset=utf-8")
    _apply(response, {**_STREAMING_HEADERS, **(headers or {})})
    return response


def ui_message_stream_response(chunks: AsyncIterable[dict[str, Any]], *, request_id: str | None = None) -> StreamingHttpResponse:
    """The AI SDK's UI message stream (SSE of UI chunks, then `[DONE]`): what `useChat`'s
    default HTTP transport and `readUIMessageStream` read."""
    headers = {UI_MESSAGE_STREAM_HEADER: "v1"}
    if request_id:
        headers["X-Request-Id"] = request_id
    return sse_response(chunks, done_marker="[DONE]", headers=headers)


def _apply(response: HttpResponse, headers: dict[str, str]) -> None:
    for name, value in headers.items():
        response[name] = value


# -- turns over HTTP ----------------------------------------------------------------------
