"""Abort signals for running turns, reachable from any process.

In one process (embedded mode) an asyncio.Event per request id is enough. With Redis, a
cancel request is also published on a per-request pub/sub channel the running turn listens
to. (A channel-layer receive is not used: a long-lived receive on one channels-redis channel
delays delivery to the consumers of the same process.)
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as redis
from django.conf import settings

_local: dict[str, asyncio.Event] = {}


def _channel(request_id: str) -> str:
    return f"agents:cancel:{request_id}"


@contextlib.asynccontextmanager
async def abort_signal(request_id: str) -> AsyncIterator[asyncio.Event]:
    """An event set when someone asks to cancel `request_id`, for the duration of the turn."""
    event = asyncio.Event()
    _local[request_id] = event
    listener: asyncio.Task[None] | None = None
    client: redis.Redis | None = None
    if settings.REDIS_URL:
        client = redis.from_url(settings.REDIS_URL)
        pubsub = client.pubsub()
        await pubsub.subscribe(_channel(request_id))
        listener = asyncio.create_task(_listen(pubsub, event))
    try:
        yield event
    finally:
        _local.pop(request_id, None)
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        if client is not None:
            await client.aclose()


async def _listen(pubsub: redis.client.PubSub, event: asyncio.Event) -> None:
    try:
        async for message in pubsub.listen():
            if message.get("type") == "message":
                event.set()
                return
    finally:
        await pubsub.aclose()


async def request_cancel(request_id: str) -> None:
    local = _local.get(request_id)
    if local is not None:
        local.set()
        return
    if settings.REDIS_URL:
        client = redis.from_url(settings.REDIS_URL)
        try:
            await client.publish(_channel(request_id), "cancel")
        finally:
            await client.aclose()
