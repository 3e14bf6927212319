"""channels-redis that keeps a process's own chats working while Redis is away.

Without Redis, frames cannot cross processes; but a turn and the sockets watching it are
usually in the same daphne process, and those should not notice. So every group
membership is also remembered here, and while Redis fails:

* `group_send` and `send` to this process's channels are delivered to a local inbox per
  channel (kept apart from channels-redis's own buffers, which it drops when a read fails);
* `receive` serves that inbox, and while Redis is down waits on it alone instead of
  raising, which would take every WebSocket of the process down;
* `group_add`/`group_discard` are recorded and re-applied when Redis is back, because a
  restarted Redis may have lost the memberships.

A connection that closes never takes another connection's message with it either,
as channels-redis alone may when a socket closes while frames are in flight (see
`_receive_from_redis`).

The outage is logged once when it starts and once when it ends, never per frame.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections import defaultdict
from typing import Any

from channels_redis.core import RedisChannelLayer

from agents_app.storage.connections import REDIS_DOWN

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._members: defaultdict[str, set[str]] = defaultdict(set)
        self._inbox: defaultdict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.available = True
        self._recovery: asyncio.Task[None] | None = None
        # Receives taking a message off Redis right now, and those of them whose connection
        # closed meanwhile: they stop once the message is passed on (`_receive_from_redis`).
        self._popping: set[asyncio.Task[Any]] = set()
        self._closing: set[asyncio.Task[Any]] = set()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await super().send(channel, message)
        except REDIS_DOWN as error:
            self._lost(error)
            if self._is_local(channel):
                self._deliver_locally(channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        try:
            await super().group_send(group, message)
        except REDIS_DOWN as error:
            self._lost(error)
            for channel in list(self._members.get(group, ())):
                self._deliver_locally(channel, message)

    async def group_add(self, group: str, channel: str) -> None:
        self._members[group].add(channel)
        try:
            await super().group_add(group, channel)
        except REDIS_DOWN as error:
            self._lost(error)  # re-added when Redis is back

    async def group_discard(self, group: str, channel: str) -> None:
        members = self._members.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del self._members[group]
        try:
            await super().group_discard(group, channel)
        except REDIS_DOWN as error:
            self._lost(error)  # its Redis entry expires (group_expiry) or is ignored by a closed channel

    async def receive(self, channel: str) -> dict[str, Any]:
        while True:
            inbox = self._inbox.get(channel)
            if inbox is not None and not inbox.empty():
                return self._take(channel, inbox.get_nowait())
            if self.available:
                try:
                    return await self._receive_from_redis(channel)
                except REDIS_DOWN as error:
                    self._lost(error)
                continue
            # Redis is down: only this process can reach the channel, until it is back.
            with contextlib.suppress(TimeoutError):
                return self._take(channel, await asyncio.wait_for(self._inbox[channel].get(), RETRY_SECONDS))

    async def _receive_from_redis(self, channel: str) -> dict[str, Any]:
        """channels-redis's receive, which Channels cancels when the connection closes.

        The receives of a process take turns taking its next message off Redis, whichever of
        the process's channels it is for, and pass it to that channel's buffer. Cancelled after
        Redis handed it a message and before it passed it on, a receive loses another
        connection's message (a stream's end: that client then waits for ever). So the receive
        runs as a task of its own, and one cancelled while it takes a message finishes taking
        it (the message reaches its channel) and stops at its next wait."""
        receiving = asyncio.ensure_future(super().receive(channel))
        try:
            return await asyncio.shield(receiving)
        except asyncio.CancelledError:
            if receiving in self._popping:
                self._closing.add(receiving)
            else:
                receiving.cancel()
            receiving.add_done_callback(_discard_outcome)
            raise

    async def _brpop_with_clean(self, index: int, channel: str, timeout: float) -> Any:
        """channels-redis's one step that takes a message off Redis (see `_receive_from_redis`)."""
        popping = asyncio.current_task()
        assert popping is not None
        self._popping.add(popping)
        try:
            content = await super()._brpop_with_clean(index, channel, timeout)
        finally:
            self._popping.discard(popping)
            closing = popping in self._closing
            self._closing.discard(popping)
        if closing:
            if content is None:  # the wait timed out: nothing was taken, nothing to pass on
                raise asyncio.CancelledError
            # Delivered at the receive's next wait: channels-redis puts the message in its
            # channel's buffer before that, without awaiting anything.
            popping.cancel()
        return content

    def _take(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        if self._inbox[channel].empty():
            del self._inbox[channel]
        return message

    def _is_local(self, channel: str) -> bool:
        return "!" in channel and self.non_local_name(channel).endswith(self.client_prefix + "!")

    def _deliver_locally(self, channel: str, message: dict[str, Any]) -> None:
        # A copy per receiver, as if each had deserialised it from Redis.
        self._inbox[channel].put_nowait(copy.deepcopy(message))

    def _lost(self, error: BaseException) -> None:
        loop = asyncio.get_running_loop()
        recovery = self._recovery
        if recovery is not None and not recovery.done() and recovery.get_loop() is loop:
            return  # already known and watched
        if self.available:
            logger.warning(
                "Redis is unavailable (%s): frames and cancels reach only this process's connections and turns until it is back.", error
            )
        self.available = False
        self._recovery = loop.create_task(self._await_recovery())

    async def _await_recovery(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await self.connection(0).ping()
                for group, channels in list(self._members.items()):
                    for channel in list(channels):
                        await super().group_add(group, channel)
            except REDIS_DOWN:
                continue
            self.available = True
            logger.warning("Redis is back: frames reach every process again.")
            return


def _discard_outcome(receiving: asyncio.Task[Any]) -> None:
    """A closed connection's receive ended: its message or failure concerns nobody now."""
    if not receiving.cancelled():
        receiving.exception()

