"""A consumer's receive loop (turns/event_loop_dispatch.py): messages from its socket and its
channel-layer group are handled one at a time, in the order they arrived."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents_app.turns.event_loop_dispatch import dispatch_as_they_come


def _source(queue: asyncio.Queue[dict[str, Any]]) -> Any:
    return queue.get


async def test_messages_are_handled_one_at_a_time_in_arrival_order() -> None:
    socket: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    group: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    handled: list[str] = []
    busy = False

    async def dispatch(message: dict[str, Any]) -> None:
        nonlocal busy
        assert not busy, "two messages handled at once"
        busy = True
        await asyncio.sleep(0.01)
        handled.append(message["type"])
        busy = False
        if len(handled) == 4:
            raise asyncio.CancelledError

    loop = asyncio.create_task(dispatch_as_they_come([_source(socket), _source(group)], dispatch))
    await asyncio.sleep(0.01)  # both receives are waiting
    group.put_nowait({"type": "frame-1"})
    await asyncio.sleep(0.001)
    socket.put_nowait({"type": "chat"})
    await asyncio.sleep(0.001)
    group.put_nowait({"type": "frame-2"})
    group.put_nowait({"type": "frame-3"})
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert handled == ["frame-1", "chat", "frame-2", "frame-3"]


async def test_an_error_in_a_handler_ends_the_loop_and_cancels_the_pending_receives() -> None:
    socket: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    group: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def dispatch(message: dict[str, Any]) -> None:
        raise RuntimeError(message["type"])

    socket.put_nowait({"type": "bad"})
    with pytest.raises(RuntimeError, match="bad"):
        await dispatch_as_they_come([_source(socket), _source(group)], dispatch)
    group.put_nowait({"type": "later"})
    assert group.qsize() == 1  # nobody is receiving any more
