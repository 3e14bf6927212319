"""`on_connect(connection, ctx)` learns about the opening request and can leave work running
with `ctx.wait_until`; `on_message` can stream with `connection.send` while the socket keeps
receiving (seed 000's first example)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents_app.agents import Agent, Connection, ConnectionContext, register_agent
from agents_app.protocol.inbound import AppMessage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]

finished_after_close: asyncio.Event | None = None


@register_agent
class GreetingAgent(Agent):
    async def on_connect(self, connection: Connection, ctx: ConnectionContext | None = None) -> None:
        assert ctx is not None
        await connection.send({
            "type": "greeting",
            "user": ctx.user.get_username() if ctx.user else None,
            "agent_header": ctx.headers.get("user-agent"),
            "lang": ctx.query.get("lang"),
            "path": ctx.path,
        })
        ctx.wait_until(self._slow_bookkeeping())

    async def _slow_bookkeeping(self) -> None:
        await asyncio.sleep(0.3)
        assert finished_after_close is not None
        finished_after_close.set()

    async def on_message(self, connection: Connection, message: AppMessage) -> list[dict[str, Any]] | None:
        if message.data.get("type") == "story":
            for word in ["Once", "upon", "a", "time", "…"]:
                await connection.send({"type": "story-chunk", "text": word})
                await asyncio.sleep(0.1)
            await connection.send({"type": "story-end"})
            return None
        return [{"type": "pong", "echo": message.data.get("n")}]


@register_agent
class LegacyConnectAgent(Agent):
    """An override written before `ctx` existed."""

    async def on_connect(self, connection: Connection) -> None:
        await connection.send('{"type":"hello","text":"old friend"}')  # a str goes out as it is


async def test_on_connect_is_told_who_opened_the_socket_and_how(open_socket, token):
    socket = await open_socket(
        "/agents/greeting-agent/front", token=token, query="lang=fr", headers=[(b"user-agent", b"agent-tests/1.0")],
    )

    greeting = (await socket.until(lambda f: f.get("type") == "greeting"))[-1]

    assert greeting == {
        "type": "greeting", "user": "alice", "agent_header": "agent-tests/1.0", "lang": "fr", "path": "/agents/greeting-agent/front",
    }


async def test_work_left_with_wait_until_finishes_after_the_socket_closed(open_socket, token):
    global finished_after_close
    finished_after_close = asyncio.Event()
    socket = await open_socket("/agents/greeting-agent/leaving", token=token)
    await socket.until(lambda f: f.get("type") == "greeting")

    await socket.close()

    await asyncio.wait_for(finished_after_close.wait(), timeout=5)


async def test_on_message_streams_while_the_socket_keeps_answering_other_frames(open_socket, token):
    socket = await open_socket("/agents/greeting-agent/stories", token=token)
    await socket.until(lambda f: f.get("type") == "greeting")

    await socket.send({"type": "story"})
    await socket.until(lambda f: f.get("type") == "story-chunk")
    await socket.send({"type": "ping", "n": 7})
    frames = await socket.until(lambda f: f.get("type") == "story-end")

    kinds = [f["type"] for f in frames]
    assert {"type": "pong", "echo": 7} in frames and kinds.index("pong") < len(kinds) - 2  # answered mid-story
    assert [f["text"] for f in socket.received if f["type"] == "story-chunk"] == ["Once", "upon", "a", "time", "…"]


async def test_an_on_connect_override_without_ctx_still_runs(open_socket, token):
    socket = await open_socket("/agents/legacy-connect-agent/old", token=token)

    await socket.until(lambda f: f == {"type": "hello", "text": "old friend"})
