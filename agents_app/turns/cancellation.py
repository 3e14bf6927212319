"""Abort signals for running turns, reachable from any process.

A turn is named by (session, request id): request ids are chosen by clients, so two users
may pick the same one, and a cancel must only ever reach a turn of the sender's own session.
In one process (embedded mode) an asyncio.Event per turn is enough. With Redis, a cancel
request is also published on a per-turn channel, and each process (each event loop) listens
to all of them through one pattern subscription, made once: a turn starting costs no Redis
connection of its own. (A channel-layer receive is not used: a long-lived receive on one
channels-redis channel delays delivery to the consumers of the same process.)
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

import redis.asyncio as redis
from django.conf import settings

from agents_app.storage.connections import REDIS_DOWN

logger = logging.getLogger(__name__)

TurnKey = tuple[int, str]
_local: dict[TurnKey, asyncio.Event] = {}
_PREFIX = "agents:cancel:"
# How long the first turn of an event loop waits for the loop's subscription before running
# without cross-process cancels.
SUBSCRIBE_WAIT = 2.0
RETRY_DELAY = 1.0


def _channel(key: TurnKey) -> str:
    session_id, request_id = key
    return f"{_PREFIX}{session_id}:{request_id}"


def _key(channel: bytes | str) -> TurnKey | None:
    name = channel.decode() if isinstance(channel, bytes) else channel
    session_id, separator, request_id = name.removeprefix(_PREFIX).partition(":")
    if not separator or not session_id.isdigit():
        return None
    return int(session_id), request_id


class _Listener:
    """This event loop's subscription to every turn's cancel channel."""

    def __init__(self) -> None:
        self.subscribed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="agents-cancel-listener")

    async def _run(self) -> None:
        while True:
            client = redis.from_url(settings.REDIS_URL)
            try:
                pubsub = client.pubsub()
                await pubsub.psubscribe(f"{_PREFIX}*")
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "pmessage":
                        key = _key(message["channel"])
                        event = _local.get(key) if key is not None else None
                        if event is not None:
                            event.set()
            except REDIS_DOWN:
                logger.debug("Redis is unavailable: cancels from other processes wait for it", exc_info=True)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(*REDIS_DOWN):
                    await client.aclose()
            await asyncio.sleep(RETRY_DELAY)


_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Listener] = weakref.WeakKeyDictionary()


async def _listening() -> None:
    """Make sure this loop listens for cancels from other processes. The turn that starts the
    listener waits, within limits, for its subscription (a cancel published before it would be
    missed); later turns never wait: while Redis is away they can be cancelled from this
    process only, as any turn could before."""
    loop = asyncio.get_running_loop()
    listener = _listeners.get(loop)
    if listener is not None and not listener.task.done():
        return
    listener = _listeners[loop] = _Listener()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(listener.subscribed.wait(), SUBSCRIBE_WAIT)
    if not listener.subscribed.is_set():
        logger.debug("Redis is unavailable: turns can be cancelled from this process only until it is back")


@contextlib.asynccontextmanager
async def abort_signal(session_id: int, request_id: str) -> AsyncIterator[asyncio.Event]:
    """An event set when someone asks to cancel this session's turn `request_id`, for the
    duration of the turn."""
    key = (session_id, request_id)
    event = asyncio.Event()
    _local[key] = event
    try:
        if settings.REDIS_URL:
            await _listening()
        yield event
    finally:
        _local.pop(key, None)


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
