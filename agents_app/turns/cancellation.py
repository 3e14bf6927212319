"""Abort signals for running turns, reachable from any process.

A turn is named by (session, request id): request ids are chosen by clients, so two users
may pick the same one, and a cancel must only ever reach a turn of the sender's own session.
In one process (embedded mode) an asyncio.Event per turn is enough. With Redis, a cancel
request is also published on a per-turn pub/sub channel the running turn listens to. (A channel-layer receive is not used: a long-lived receive on one channels-redis channel
delays delivery to the consumers of the same process.)
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as redis
from django.conf import settings

from agents_app.storage.connections import REDIS_DOWN

logger = logging.getLogger(__name__)

TurnKey = tuple[int, str]
_local: dict[TurnKey, asyncio.Event] = {}


def _channel(key: TurnKey) -> str:
    session_id, request_id = key
    return f"agents:cancel:{session_id}:{request_id}"


@contextlib.asynccontextmanager
async def abort_signal(session_id: int, request_id: str) -> AsyncIterator[asyncio.Event]:
    """An event set when someone asks to cancel this session's turn `request_id`, for the
    duration of the turn."""
    key = (session_id, request_id)
    event = asyncio.Event()
    _local[key] = event
    listener: asyncio.Task[None] | None = None
    client: redis.Redis | None = None
    if settings.REDIS_URL:
        client = redis.from_url(settings.REDIS_URL)
        try:
            pubsub = client.pubsub()
            await pubsub.subscribe(_channel(key))
            listener = asyncio.create_task(_listen(pubsub, event))
        except REDIS_DOWN:  # the turn runs anyway; only a cancel from another process misses it
            logger.debug("Redis is unavailable: turn %s can be cancelled from this process only", request_id)
    try:
        yield event
    finally:
        _local.pop(key, None)
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_DOWN):
                await listener
        if client is not None:
            with contextlib.suppress(*REDIS_DOWN):
                await client.aclose()


async def _listen(pubsub: redis.client.PubSub, event: asyncio.Event) -> None:
    try:
        async for message in pubsub.listen():
            if message.get("type") == "message":
                event.set()
                return
    finally:
        await pubsub.aclose()


async def request_cancel(session_id: int, request_id: str) -> None:
    key = (session_id, request_id)
    local = _local.get(key)
    if local is not None:
        local.set()
        return
    if settings.REDIS_URL:
        client = redis.from_url(settings.REDIS_URL)
        try:
            await client.publish(_channel(key), "cancel")
        except REDIS_DOWN:
            logger.debug("Redis is unavailable: the cancel of %s reaches turns in this process only", request_id)
        finally:
            with contextlib.suppress(*REDIS_DOWN):
                await client.aclose()
