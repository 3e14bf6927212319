"""channels-redis, process-local first, that keeps a process's own chats working while Redis is away.

Process-local first: a message for a channel of this process (a socket connected here) is
handed over inside the process, through a local inbox per channel, and Redis carries only
what channels of other processes must get. A turn usually streams to sockets of the process
that runs it; through channels-redis every frame cost its sender four Redis round trips and
the process's one receiving loop one more, which capped a daphne process at about a
thousand frames a second and left fifty streaming chats seconds behind their model. A
group's members in other processes are read from Redis for every group message, except
live stream frames (`agent.stream`), for which a read from the last second is reused: each
such frame carries its sequence number, and a receiver that joined in that second and
missed some reads them from the chunk log when the next frame or the end arrives
(turns/resume.py).

While Redis fails, frames cannot cross processes, but this process's chats should not
notice: every group membership is also remembered here, `receive` waits on the local inbox
alone instead of raising (which would take every WebSocket of the process down), and the
memberships are re-applied when Redis is back (a restarted Redis may have lost them). The
outage is logged once when it starts and once when it ends, never per frame.

A connection that closes never takes another connection's message with it, as
channels-redis alone may when a socket closes while frames are in flight (`_stop_reading`).
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections import defaultdict
from typing import Any

from channels_redis.core import RedisChannelLayer

from agents_app.storage.connections import REDIS_DOWN

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# Messages whose receivers recover a missed one by themselves (see the module docstring).
GAP_TOLERANT_TYPES = frozenset({"agent.stream"})
MEMBERSHIP_REUSE_SECONDS = 1.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._members: defaultdict[str, set[str]] = defaultdict(set)
        self._inbox: defaultdict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.available = True
        self._recovery: asyncio.Task[None] | None = None
        # A read from Redis per local channel, kept across receive() calls (see `_stop_reading`).
        self._redis_reads: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._remote_members: dict[str, tuple[float, list[str]]] = {}  # group → (read at, channels)
        # Reads taking a message off Redis right now, and those of them whose connection
        # closed meanwhile: they stop once the message is passed on (`_stop_reading`).
        self._popping: set[asyncio.Task[Any]] = set()
        self._closing: set[asyncio.Task[Any]] = set()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if self._is_local(channel):
            self._deliver_locally(channel, message)
            return
        try:
            await super().send(channel, message)
        except REDIS_DOWN as error:
            self._lost(error)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        local = list(self._members.get(group, ()))
        for channel in local:
            self._deliver_locally(channel, message)
        if not self.available:
            return
        try:
            if not local:  # nothing here: channels-redis's one scripted send reaches them all
                await super().group_send(group, message)
                return
            for channel in await self._members_elsewhere(group, reuse=message.get("type") in GAP_TOLERANT_TYPES):
                await super().send(channel, message)
        except REDIS_DOWN as error:
            self._lost(error)

    async def _members_elsewhere(self, group: str, *, reuse: bool) -> list[str]:
        """The group's channels in other processes, from Redis (or from the last second's read)."""
        now = time.monotonic()
        cached = self._remote_members.get(group)
        if reuse and cached is not None and now - cached[0] < MEMBERSHIP_REUSE_SECONDS:
            return cached[1]
        connection = self.connection(self.consistent_hash(group))
        names = await connection.zrangebyscore(self._group_key(group), min=int(time.time()) - self.group_expiry, max="+inf")
        elsewhere = [name.decode("utf8") for name in names if not self._is_local(name.decode("utf8"))]
        self._remote_members[group] = (now, elsewhere)
        return elsewhere

    async def group_members(self, group: str) -> list[str]:
        """The channels in `group` now, here and in other processes (see
        broadcast.anyone_else_listening); only this process's while Redis is away."""
        local = list(self._members.get(group, ()))
        if not self.available:
            return local
        try:
            return local + await self._members_elsewhere(group, reuse=False)
        except REDIS_DOWN as error:
            self._lost(error)
            return local

    async def group_add(self, group: str, channel: str) -> None:
        self._members[group].add(channel)
        self._remote_members.pop(group, None)
        try:
            await super().group_add(group, channel)
        except REDIS_DOWN as error:
            self._lost(error)  # re-added when Redis is back

    async def group_discard(self, group: str, channel: str) -> None:
        self._remote_members.pop(group, None)
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
        if not self._is_local(channel):
            return await super().receive(channel)
        while True:
            inbox = self._inbox[channel]
            if not inbox.empty():
                return self._take(channel, inbox.get_nowait())
            if not self.available:
                # Redis is down: only this process can reach the channel, until it is back.
                with contextlib.suppress(TimeoutError):
                    return self._take(channel, await asyncio.wait_for(inbox.get(), RETRY_SECONDS))
                continue
            from_redis = self._redis_reads.get(channel)
            if from_redis is None:
                from_redis = self._redis_reads[channel] = asyncio.create_task(super().receive(channel))
            from_inbox = asyncio.ensure_future(inbox.get())
            try:
                await asyncio.wait({from_redis, from_inbox}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the connection is closing: nothing is left to read for it
                from_inbox.cancel()
                self._stop_reading(from_redis)
                self._redis_reads.pop(channel, None)
                self._inbox.pop(channel, None)
                raise
            if from_inbox.done():
                # The read from Redis stays pending (or done) for the next call.
                return self._take(channel, from_inbox.result())
            from_inbox.cancel()
            if self._redis_reads.get(channel) is from_redis:
                del self._redis_reads[channel]
            if from_redis.cancelled():  # dropped with a Redis that went away (_lost)
                continue
            try:
                return from_redis.result()
            except REDIS_DOWN as error:
                self._lost(error)

    async def close_pools(self) -> None:
        for read in self._redis_reads.values():
            read.cancel()
        self._redis_reads.clear()
        await super().close_pools()

    def _stop_reading(self, read: asyncio.Task[dict[str, Any]]) -> None:
        """Stop a closed connection's read from Redis without losing anyone's message.

        The reads of a process take turns taking its next message off Redis, whichever of the
        process's channels it is for, and pass it to that channel's buffer. Cancelled after
        Redis handed it a message and before it passed it on, a read loses another
        connection's message (a stream's end: that client then waits for ever). So a read
        that is taking a message finishes taking it (the message reaches its channel) and
        stops at its next wait; any other is cancelled at once."""
        if read in self._popping:
            self._closing.add(read)
        else:
            read.cancel()
        read.add_done_callback(_discard_outcome)

    async def _brpop_with_clean(self, index: int, channel: str, timeout: float) -> Any:
        """channels-redis's one step that takes a message off Redis (see `_stop_reading`)."""
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
        # Reads still waiting on the Redis that went away would fail again once it is back.
        reads, self._redis_reads = self._redis_reads, {}
        for read in reads.values():
            read.cancel()
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

