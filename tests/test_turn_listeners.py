"""Turn listeners: code that reacts once a turn has ended runs without holding the turn up."""
from __future__ import annotations

import asyncio

from agents_app.turns import turn_listeners
from agents_app.turns.types import TurnResult


def test_a_worker_turn_waits_for_its_listeners_even_when_a_closed_loop_left_one_pending():
    heard: list[str] = []

    async def listener(session_id: int, result: TurnResult) -> None:
        heard.append(f"start {result.request_id}")
        if result.request_id == "abandoned":
            await asyncio.Event().wait()
        heard.append(f"end {result.request_id}")

    async def turn_in_a_loop_that_is_closed_without_cleanup() -> None:
        turn_listeners.notify(1, TurnResult(request_id="abandoned", status="completed"))
        await asyncio.sleep(0)

    async def worker_turn() -> str:
        turn_listeners.notify(2, TurnResult(request_id="worker", status="completed"))
        return "done"

    turn_listeners.on_turn_finished(listener)
    try:
        abandoned_loop = asyncio.new_event_loop()
        abandoned_loop.run_until_complete(turn_in_a_loop_that_is_closed_without_cleanup())
        abandoned_loop.close()
        assert turn_listeners.run_to_end(worker_turn()) == "done"
    finally:
        turn_listeners._listeners.remove(listener)
    assert heard == ["start abandoned", "start worker", "end worker"]
