"""Draining an agent's response into its turn's publisher: chunks normalised, the event loop
served between them, an abort honoured, and how the stream ended (`StreamOutcome`).

The runner (turns/runner.py) decides what happens before and after: this module only reads
the response until it ends, fails or is aborted.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agents_app.protocol import frames
from agents_app.protocol.message_builder import MessageBuilder
from agents_app.providers.errors import ChatErrorClassification
from agents_app.turns import chat_errors
from agents_app.turns.agent_interface import ChatAgent
from agents_app.turns.stream_publisher import StreamPublisher
from agents_app.turns.types import ChatErrorContext, TurnStatus

logger = logging.getLogger(__name__)

FAIRNESS_SLICE = 0.01
# A gap between two chunks longer than this: the read waited for the network, not for parsing.
WAITED_FOR = 0.001


class _InBandError(Exception):
    """An `error` chunk from the model stream: error frame, then a normal done frame."""

    def __init__(self, text: str, classification: ChatErrorClassification | None) -> None:
        super().__init__(text)
        # The model loop classified its own failure: the chunk's text is its rendering, and
        # the upstream's error, which the classifier read, is gone by now.
        self.classification = classification


@dataclass
class StreamOutcome:
    status: TurnStatus
    error: str | None = None
    # An in-band `error` chunk gets an error frame then a normal done (protocol §9.13);
    # an exception gets a single error frame that is also the done frame.
    in_band: bool = False
    # The done frame's body: empty, except for a handler that returned no response at all.
    body: str = ""

    def final_frames(self, request_id: str, continuation: bool) -> list[frames.Frame]:
        done = frames.chat_response(request_id, self.body, done=True, continuation=continuation)
        if self.status != "error":
            return [done]
        error = frames.chat_response(request_id, self.error or "", done=not self.in_band, error=True, continuation=continuation)
        return [error, done] if self.in_band else [error]


async def drain(
    response: Any,
    builder: MessageBuilder,
    publisher: StreamPublisher,
    abort: asyncio.Event,
    agent: ChatAgent,
    request_id: str,
) -> StreamOutcome:
    """Drain the handler's response into the publisher until it ends, fails or is aborted."""

    async def consume() -> None:
        # A fast upstream can deliver many chunks without the read ever suspending; yield to
        # the event loop every few milliseconds so frames go out and other sockets are served.
        # A chunk that was waited for (a paced model sends one every ~20 ms) let the loop run
        # meanwhile and begins a new slice: yielding after it as well cost a loop pass a token.
        slice_began = arrived = time.monotonic()
        async for chunk in _as_chunks(response, request_id):
            now = time.monotonic()
            if now - arrived > WAITED_FOR:
                slice_began = now
            arrived = now
            if now - slice_began > FAIRNESS_SLICE:
                await publisher.wait_sent()
                slice_began = arrived = time.monotonic()
            if chunk.get("type") == "error":
                raise _InBandError(str(chunk.get("errorText") or "The model stream failed."), chunk.get("classification"))
            rewritten = builder.rewrite(chunk)
            if rewritten is None:
                continue
            builder.apply(rewritten)
            publisher.publish(rewritten)
            if publisher.first_output_pending:
                await publisher.wait_sent()

    consumer = asyncio.create_task(consume())
    aborted = asyncio.create_task(abort.wait())
    try:
        await asyncio.wait({consumer, aborted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        aborted.cancel()
    if not consumer.done():
        # Cancelling the task closes the upstream HTTP response inside the openai SDK.
        consumer.cancel()
        try:
            await consumer
        except asyncio.CancelledError:
            pass
        except Exception:  # the turn is aborted either way; a failure while closing is only logged
            logger.warning("turn %s: the aborted stream failed while closing", request_id, exc_info=True)
        return StreamOutcome("aborted")
    error = consumer.exception()
    if error is None:
        return StreamOutcome("completed")
    if isinstance(error, _InBandError):
        ctx = ChatErrorContext("stream", request_id, classification=error.classification)
        return StreamOutcome("error", chat_errors.error_text(agent, error, ctx, str(error)), in_band=True)
    logger.error("turn %s failed while streaming: %s", request_id, error, exc_info=error)
    return StreamOutcome("error", chat_errors.error_text(agent, error, ChatErrorContext("stream", request_id), "The agent failed while answering."))


async def _as_chunks(response: Any, request_id: str) -> AsyncIterator[dict[str, Any]]:
    """Normalise a handler's response to UI chunks. Plain text becomes one text part whose
    id is the request id (as the reference wraps non-SSE responses)."""
    if isinstance(response, str):
        yield {"type": "text-start", "id": request_id}
        yield {"type": "text-delta", "id": request_id, "delta": response}
        yield {"type": "text-end", "id": request_id}
        return
    text_open = False
    async for item in response:
        if isinstance(item, str):
            if not text_open:
                text_open = True
                yield {"type": "text-start", "id": request_id}
            yield {"type": "text-delta", "id": request_id, "delta": item}
        elif isinstance(item, dict):
            yield item
    if text_open:
        yield {"type": "text-end", "id": request_id}
