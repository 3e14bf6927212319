"""Code outside the turn engine that reacts when a turn has ended, whatever started it: the
chat page sends the next queued message and names a new conversation.

Listeners run as background tasks once the turn is over (its lock released, its reply
stored and broadcast), so neither the turn nor whoever awaits it waits for them. A failing
listener is logged and affects nothing else.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from agents_app.turns.types import TurnResult

logger = logging.getLogger(__name__)

T = TypeVar("T")
Listener = Callable[[int, TurnResult], Awaitable[None]]
_listeners: list[Listener] = []
_running: set[asyncio.Task[Any]] = set()


def on_turn_finished(listener: Listener) -> Listener:
    """Register `listener(session_id, result)` (usable as a decorator; registering twice is a no-op)."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


async def _call(listener: Listener, session_id: int, result: TurnResult) -> None:
    try:
        await listener(session_id, result)
    except Exception:
        logger.exception("turn listener %s failed for %s", getattr(listener, "__name__", listener), result.request_id)


def forget_closed_loops() -> None:
    """Drop the listeners left pending by event loops that have closed (a test's, an earlier
    `asyncio.run`): they can never finish, and only this set still holds them."""
    _running.difference_update([task for task in _running if task.get_loop().is_closed()])


def notify(session_id: int, result: TurnResult) -> None:
    forget_closed_loops()
    for listener in _listeners:
        task = asyncio.create_task(_call(listener, session_id, result))
        _running.add(task)
        task.add_done_callback(_running.discard)


async def wait_idle() -> None:
    """Wait for the listeners this event loop started (a process about to stop its loop).

    Only this loop's tasks: a listener left pending by a loop that has since closed (a test,
    an earlier `asyncio.run`) can never finish and cannot be awaited from here."""
    loop = asyncio.get_running_loop()
    while mine := [task for task in _running if task.get_loop() is loop]:
        await asyncio.gather(*mine, return_exceptions=True)


def run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` for a worker's turn: the listeners it started finish before the loop
    closes (which would cancel them)."""

    async def then_listeners() -> T:
        result = await coroutine
        await wait_idle()
        return result

    return asyncio.run(then_listeners())
