"""The embedded channel layer: Channels' in-memory layer, with its per-message costs cut.

Every stream frame crosses this layer once per listening socket, so what the stock layer
spends per message is paid thousands of times a second under load:

* `receive` walks every channel's queue and every group membership looking for expired
  entries before each message it hands out. With hundreds of sockets receiving a frame
  every few milliseconds that sweep, not the delivery, was a tenth of the server's CPU.
  Messages expire after `expiry` seconds (60 here) and memberships after a day, so sweeping
  at most once per `SWEEP_INTERVAL_SECONDS` drops them only that much later.
* `group_send` started a task per member and gathered them with `as_completed`; `send` and
  `receive` built a new queue on every call (as the default of `setdefault`) and `send`
  deep-copied the message with `copy.deepcopy`. Here a member's queue is filled directly,
  a queue is built only for a channel that has none (and kept while its socket receives:
  a consumer receives once per message), and a message of plain JSON values
  (all this project sends) is copied by a walk that knows only those types. Each receiver
  still gets its own copy, as with a layer that serialises.
* A consumer receiving with `receive` runs a task per message to wait on its queue. Our
  consumers (turns/event_loop_dispatch.py) call `receive_soon` instead: a future that the
  send bringing the next message resolves, with no task and no trip through the queue
  (~34 → ~26 µs a message, send to handler, in a loop).
* The stock layer names channels with the `random` module, whose state other code may set
  (Hypothesis seeds it for every example): two sockets could get the same name, and a new
  socket the frames of a turn a closed one had started. Names here come from `uuid4`, as
  channels-redis's do.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

SWEEP_INTERVAL_SECONDS = 1.0
_IMMUTABLE = (str, int, float, bool, type(None), bytes)


def _copied(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is list:
        return [_copied(item) for item in value]
    if kind in _IMMUTABLE:
        return value
    return deepcopy(value)


class LocalChannelLayer(InMemoryChannelLayer):
    """One process's channel layer (no Redis): the embedded default."""

    _last_sweep = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receiving: set[str] = set()  # the channels a receive is waiting on now
        self._awaited: dict[str, asyncio.Future[dict[str, Any]]] = {}  # see `receive_soon`

    async def new_channel(self, prefix: str = "specific.") -> str:
        return f"{prefix}.inmemory!{uuid.uuid4().hex}"

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_INTERVAL_SECONDS:
            return
        self._last_sweep = now
        super()._clean_expired()
        # A socket keeps its queue between receives; one whose consumer stopped while it
        # handled a message (an error in a handler) never receives again, and its empty
        # queue goes here. A live one caught between two messages just gets a new queue.
        for channel in [c for c, queue in self.channels.items() if queue.empty() and c not in self._receiving and c not in self._awaited]:
            del self.channels[channel]

    def _queue(self, channel: str) -> asyncio.Queue[tuple[float, dict[str, Any]]]:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    def _put(self, channel: str, message: dict[str, Any]) -> None:
        awaited = self._awaited.pop(channel, None)
        if awaited is not None and not awaited.done():
            awaited.set_result(_copied(message))
            return
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, _copied(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        assert "__asgi_channel__" not in message
        self.require_valid_channel_name(channel)
        self._put(channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """A copy to each member's queue; a member whose queue is full misses this one, as
        with the stock layer."""
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                self._put(channel, message)
            except ChannelFull:
                pass

    async def receive(self, channel: str) -> dict[str, Any]:
        self._clean_expired()  # before the lookup: a sweep may drop a queue it emptied
        queue = self.channels.get(channel)
        if queue is None:  # a channel's name is checked once, when its queue is made
            self.require_valid_channel_name(channel)
            queue = self._queue(channel)
        self._receiving.add(channel)
        try:
            _, message = await queue.get()
        except BaseException:
            # A receive that never completes is a socket closing (its consumer cancels it):
            # its empty queue is dropped, so a closed socket's channel leaves nothing behind.
            # A receiver that got its message keeps the queue for its next receive.
            self._drop_empty_queue(channel)
            raise
        finally:
            self._receiving.discard(channel)
        return message

    def receive_soon(self, channel: str) -> asyncio.Future[dict[str, Any]]:
        """`receive(channel)` as a future the next send to the channel resolves, rather than
        a coroutine: a consumer waiting for its next message needs no task of its own for it,
        and the message no trip through the channel's queue. One future per channel at a time."""
        self._clean_expired()
        loop = asyncio.get_running_loop()
        awaited = loop.create_future()
        queue = self.channels.get(channel)
        if queue is not None and not queue.empty():
            awaited.set_result(queue.get_nowait()[1])
            return awaited
        if queue is None:
            self.require_valid_channel_name(channel)
        self._awaited[channel] = awaited
        awaited.add_done_callback(lambda future: self._stop_awaiting(channel, future))
        return awaited

    def _stop_awaiting(self, channel: str, awaited: asyncio.Future[dict[str, Any]]) -> None:
        """A receive that never completed is a socket closing: nothing is kept for it."""
        if awaited.cancelled():
            if self._awaited.get(channel) is awaited:
                del self._awaited[channel]
            self._drop_empty_queue(channel)

    def _drop_empty_queue(self, channel: str) -> None:
        queue = self.channels.get(channel)
        if queue is not None and queue.empty():
            del self.channels[channel]

    async def group_members(self, group: str) -> list[str]:
        """The channels in `group` now (see broadcast.anyone_else_listening)."""
        return list(self.groups.get(group, ()))
