"""Sub-agents: one agent running full turns on another agent's session (think.md §11 `chat()`).

    child = await self.sub_agent(ResearchAgent, "research")        # the child session, created once
    result = await child.chat("Find X", callback, signal=stop, tools={"cite": cite})

The child's turn goes through the same runner as any turn: queued behind the child
session's other turns, persisted there, streamed to the child's own connected clients. The
callback gets every chunk the child's model loop produces (`on_event`), then `on_done(result)`
or `on_error(text)`. Setting `signal` aborts the turn; the partial answer is persisted. The
observation is process-local: `chat()` runs the turn in the calling process, on a Think agent.

    await self.abort_sub_agent(ResearchAgent, "research")   # stop its running turn (partial kept)
    await self.delete_sub_agent(ResearchAgent, "research")  # remove it with its stored messages
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agents_app.protocol.messages import UIMessage, normalize_messages, user_text_message
from agents_app.agents.tools import Tool
from agents_app.turns import chat as chat_ops
from agents_app.turns import runner
from agents_app.turns.instances import find_session, load_agent, resolve_session
from agents_app.turns.registry import agent_segment
from agents_app.turns.agent_interface import ChatAgent, HostedAgent
from agents_app.turns.types import TurnRequest, TurnResult, new_request_id
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Turn

logger = logging.getLogger(__name__)
A = TypeVar("A", bound=HostedAgent)


@dataclass
class _Observed:
    callback: Any
    tools: dict[str, Tool] = field(default_factory=dict)


# Turns started by chat() in this process, by request id.
_observed: dict[str, _Observed] = {}


async def _notify(callback: Any, method: str, *args: Any) -> None:
    handler = getattr(callback, method, None)
    if handler is None:
        return
    try:
        outcome = handler(*args)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:  # a failing observer must not break the child's turn
        logger.exception("sub-agent callback %s failed", method)


def extra_tools(request_id: str) -> dict[str, Tool]:
    """Tools `chat(tools=…)` adds to that turn (they win over the agent's own on a name)."""
    observed = _observed.get(request_id)
    return observed.tools if observed is not None else {}


async def observe(request_id: str, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """`chunks`, also reported to the callback of the chat() call that started the turn."""
    observed = _observed.get(request_id)
    async for chunk in chunks:
        if observed is not None:
            await _notify(observed.callback, "on_event", chunk)
        yield chunk


async def sub_agent(parent: HostedAgent, agent_class: type[A], name: str) -> A:
    """The `agent_class` instance called `name` owned by the parent's owner, created on first use."""
    def resolve() -> Any:
        session = resolve_session(agent_segment(agent_class.__name__), name, parent.session.owner)
        if session.pk == parent.session.pk:
            raise ValueError("An agent cannot be its own sub-agent")
        return load_agent(session)

    child = await db_async(resolve)()
    if not isinstance(child, agent_class):
        raise TypeError(f"{agent_class.__name__} is not registered (see register_agent)")
    return child


async def _existing(parent: HostedAgent, agent_class: type[HostedAgent], name: str) -> Any:
    """The child's session if it was ever created (never creating it)."""
    return await db_async(find_session)(agent_segment(agent_class.__name__), name, parent.session.owner)


async def abort(parent: HostedAgent, agent_class: type[HostedAgent], name: str) -> bool:
    """Abort the child's running turns wherever they run (their partial answers are kept;
    queued ones still run). False when the child does not exist."""
    session = await _existing(parent, agent_class, name)
    if session is None:
        return False
    await chat_ops.stop(session)
    return True


async def delete(parent: HostedAgent, agent_class: type[HostedAgent], name: str) -> bool:
    """Abort the child's turns and delete its session with every stored message; the next
    sub_agent() call for it starts empty. False when it does not exist."""
    session = await _existing(parent, agent_class, name)
    if session is None or session.pk == parent.session.pk:
        return False
    await chat_ops.destroy(session)
    return True


async def _abort_when(signal: asyncio.Event, session_id: int, request_id: str) -> None:
    """Cancel the turn once `signal` is set; repeated because the turn may not have
    registered its abort signal yet when the caller sets it."""
    await signal.wait()
    while True:
        await runner.cancel(session_id, request_id)
        await asyncio.sleep(0.05)


async def chat(
    agent: ChatAgent,
    message: str | UIMessage,
    callback: Any,
    *,
    signal: asyncio.Event | None = None,
    tools: dict[str, Tool] | None = None,
) -> TurnResult:
    """Run one turn on `agent` with `message` as the new user message (see module doc).
    `callback` may have any of `on_event`, `on_done`, `on_error`, sync or async, or be None."""
    incoming = normalize_messages([user_text_message(message) if isinstance(message, str) else message])
    request = TurnRequest(
        session_id=agent.session.pk, request_id=new_request_id(), source=Turn.Source.PROGRAMMATIC, new_messages=incoming
    )
    _observed[request.request_id] = _Observed(callback, dict(tools or {}))
    watcher = asyncio.create_task(_abort_when(signal, request.session_id, request.request_id)) if signal is not None else None
    try:
        try:
            started = await runner.start_turn(request)
        except runner.AdmissionFailed as failure:
            result = TurnResult(request.request_id, "error", str(failure))
        else:
            result = await started.result()
    finally:
        _observed.pop(request.request_id, None)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    if result.status == "error":
        await _notify(callback, "on_error", result.error or "The sub-agent failed.")
    else:
        await _notify(callback, "on_done", result)
    return result
