"""`rpc` frames: clients call methods marked with `@callable_method` (protocol §2.3)."""
from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agents_app.protocol import frames
from agents_app.protocol.inbound import RpcCall
from agents_app.turns.agent_interface import HostedAgent
from agents_app.turns.types import Connection

logger = logging.getLogger(__name__)
Send = Callable[[list[frames.Frame]], Awaitable[None]]


class RpcStream:
    """Handed to streaming methods: `send` chunks, then `end` once; later calls are ignored."""

    def __init__(self, call_id: str, send: Send) -> None:
        self._call_id = call_id
        self._send = send
        self.closed = False

    async def send(self, chunk: Any) -> None:
        if not self.closed:
            await self._send([frames.rpc_result(self._call_id, chunk, done=False)])

    async def end(self, final: Any = None) -> None:
        if not self.closed:
            self.closed = True
            await self._send([frames.rpc_result(self._call_id, final, done=True)])

    async def error(self, message: str) -> None:
        if not self.closed:
            self.closed = True
            await self._send([frames.rpc_error(self._call_id, message)])


async def invoke(agent: HostedAgent, call: RpcCall, caller: Connection, send: Send) -> None:
    method = getattr(agent, call.method, None)
    if method is None or call.method.startswith("_"):
        await send([frames.rpc_error(call.call_id, f"Method {call.method} does not exist")])
        return
    if not getattr(method, "agent_callable", False):
        await send([frames.rpc_error(call.call_id, f"Method {call.method} is not callable")])
        return
    agent.caller = caller
    stream = RpcStream(call.call_id, send) if getattr(method, "agent_streaming", False) else None
    try:
        result = method(stream, *call.args) if stream is not None else method(*call.args)
        if inspect.isawaitable(result):
            result = await result
    except Exception as error:
        logger.info("rpc %s failed", call.method, exc_info=True)
        message = str(error) or "Unknown error occurred"
        if stream is not None:
            await stream.error(message)
        else:
            await send([frames.rpc_error(call.call_id, message)])
        return
    finally:
        agent.caller = None
    if stream is not None:
        await stream.end()  # a no-op when the method already ended the stream
    else:
        await send([frames.rpc_result(call.call_id, result)])
