"""`rpc` frames: clients call methods marked with `@callable_method` (protocol §2.3)."""
from __future__ import annotations

import inspect
import logging

from agents_app.protocol import frames
from agents_app.protocol.inbound import RpcCall
from agents_app.runtime.agent import Agent

logger = logging.getLogger(__name__)


async def invoke(agent: Agent, call: RpcCall) -> list[frames.Frame]:
    method = getattr(agent, call.method, None)
    if method is None or call.method.startswith("_"):
        return [frames.rpc_error(call.call_id, f"Method {call.method} does not exist")]
    if not getattr(method, "agent_callable", False):
        return [frames.rpc_error(call.call_id, f"Method {call.method} is not callable")]
    try:
        result = method(*call.args)
        if inspect.isawaitable(result):
            result = await result
    except Exception as error:
        logger.info("rpc %s failed", call.method, exc_info=True)
        return [frames.rpc_error(call.call_id, str(error) or "Unknown error occurred")]
    return [frames.rpc_result(call.call_id, result)]
