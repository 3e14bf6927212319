"""A consumer's receive loop: what its socket sends and what its channel-layer group sends,
handed to `dispatch` one message at a time, as Channels does.

Channels' `await_many_dispatch` calls `asyncio.wait` for every message, which hooks a
callback onto each pending receive and unhooks it again; with hundreds of sockets each
taking a stream frame every few tens of milliseconds, that bookkeeping was a visible share
of the server's CPU. Here each pending receive reports itself once, when it completes.
Messages are dispatched in the order they arrived, not socket first.
"""
from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

Receive = Callable[[], Awaitable[dict[str, Any]]]
Dispatch = Callable[[dict[str, Any]], Awaitable[None]]


async def dispatch_as_they_come(sources: list[Receive], dispatch: Dispatch) -> None:
    """Receive from every source at once and dispatch each message before taking the next
    from the same source; runs until a source or `dispatch` raises."""
    loop = asyncio.get_running_loop()
    arrived: deque[int] = deque()
    wakeup: list[asyncio.Future[None] | None] = [None]
    pending: list[asyncio.Future[dict[str, Any]]] = []

    def report(index: int, _: asyncio.Future[dict[str, Any]]) -> None:
        arrived.append(index)
        waiter = wakeup[0]
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def receive_from(index: int) -> asyncio.Future[dict[str, Any]]:
        task = asyncio.ensure_future(sources[index]())  # a future stays itself: no task
        task.add_done_callback(functools.partial(report, index))
        return task

    pending.extend(receive_from(index) for index in range(len(sources)))
    try:
        while True:
            while not arrived:
                wakeup[0] = loop.create_future()
                await wakeup[0]
            index = arrived.popleft()
            message = pending[index].result()
            await dispatch(message)
            pending[index] = receive_from(index)
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            try:
                await task
            except asyncio.CancelledError:
                pass


class LeanDispatchMixin:
    """`AsyncConsumer.__call__` for asynchronous consumers, on `dispatch_as_they_come`."""

    channel_layer_alias: str
    dispatch: Dispatch

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            # The embedded layer hands a waiting consumer its next message in a future.
            receive_soon = getattr(self.channel_layer, "receive_soon", None)
            sources.append(functools.partial(receive_soon, self.channel_name) if receive_soon is not None else self.channel_receive)
        self.base_send = send
        try:
            await dispatch_as_they_come(sources, self.dispatch)
        except StopConsumer:
            pass
