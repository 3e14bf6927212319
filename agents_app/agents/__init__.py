"""What an agent author imports: one path for the whole public API.

    from agents_app.agents import ThinkAgent, register_agent, tool

The classes live on the floors that own them (`agents/` the agent API, `think/` the model loop's
features, `turns/` the engine's registry); this module only gathers them. Names resolve on
first use (PEP 562), so the floors' own modules can import `agents_app.agents.tools` without
first loading every agent class.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents_app.agents.addressing import get_agent_by_name
    from agents_app.agents.agent import Agent, callable_method
    from agents_app.agents.chat_agent import AIChatAgent
    from agents_app.agents.hooks import (
        StepConfig,
        StepContext,
        StepResult,
        StopCondition,
        ToolCallContext,
        ToolCallDecision,
        ToolCallResultContext,
        TurnConfig,
        TurnContext,
        has_tool_call,
        step_count_is,
    )
    from agents_app.gateway.text import TextResult, generate_text, stream_text
    from agents_app.gateway.workers_ai import AiTextStream, WorkersAI, ai
    from agents_app.agents.think_agent import ThinkAgent
    from agents_app.agents.tools import Approval, Tool, ToolInputError, client_tool, tool
    from agents_app.protocol.messages import text_of, user_text_message
    from agents_app.think.chat_stream import ChatStreamResult, stream_chat, stream_reply
    from agents_app.think.context_blocks import BlockKind, ContextBlockSpec
    from agents_app.think.middleware import ExtractReasoningMiddleware, ModelCallParams, ModelMiddleware, RedactionMiddleware
    from agents_app.think.pruning import prune_messages, truncate_older_messages
    from agents_app.think.skills import Skill
    from agents_app.think.stream_writer import write_data, write_file
    from agents_app.think.structured import ObjectGenerationError, generate_object
    from agents_app.think.think_session import SessionBuilder
    from agents_app.turns.registry import register_agent
    from agents_app.providers.errors import ChatErrorClassification, classify_error
    from agents_app.turns.types import ChatErrorContext, ChatOptions, ChatResponse, Connection, ConnectionContext, new_request_id

_WHERE: dict[str, str] = {
    "Agent": "agents_app.agents.agent",
    "ai": "agents_app.gateway.workers_ai",
    "AiTextStream": "agents_app.gateway.workers_ai",
    "AIChatAgent": "agents_app.agents.chat_agent",
    "Approval": "agents_app.agents.tools",
    "BlockKind": "agents_app.think.context_blocks",
    "callable_method": "agents_app.agents.agent",
    "ChatErrorClassification": "agents_app.providers.errors",
    "ChatErrorContext": "agents_app.turns.types",
    "classify_error": "agents_app.providers.errors",
    "ChatOptions": "agents_app.turns.types",
    "ChatResponse": "agents_app.turns.types",
    "ChatStreamResult": "agents_app.think.chat_stream",
    "client_tool": "agents_app.agents.tools",
    "Connection": "agents_app.turns.types",
    "ConnectionContext": "agents_app.turns.types",
    "ContextBlockSpec": "agents_app.think.context_blocks",
    "ExtractReasoningMiddleware": "agents_app.think.middleware",
    "generate_object": "agents_app.think.structured",
    "generate_text": "agents_app.gateway.text",
    "get_agent_by_name": "agents_app.agents.addressing",
    "has_tool_call": "agents_app.agents.hooks",
    "ModelCallParams": "agents_app.think.middleware",
    "ModelMiddleware": "agents_app.think.middleware",
    "new_request_id": "agents_app.turns.types",
    "ObjectGenerationError": "agents_app.think.structured",
    "prune_messages": "agents_app.think.pruning",
    "RedactionMiddleware": "agents_app.think.middleware",
    "register_agent": "agents_app.turns.registry",
    "SessionBuilder": "agents_app.think.think_session",
    "Skill": "agents_app.think.skills",
    "step_count_is": "agents_app.agents.hooks",
    "stream_text": "agents_app.gateway.text",
    "StepConfig": "agents_app.agents.hooks",
    "StepContext": "agents_app.agents.hooks",
    "StepResult": "agents_app.agents.hooks",
    "StopCondition": "agents_app.agents.hooks",
    "stream_chat": "agents_app.think.chat_stream",
    "stream_reply": "agents_app.think.chat_stream",
    "text_of": "agents_app.protocol.messages",
    "TextResult": "agents_app.gateway.text",
    "ThinkAgent": "agents_app.agents.think_agent",
    "Tool": "agents_app.agents.tools",
    "tool": "agents_app.agents.tools",
    "user_text_message": "agents_app.protocol.messages",
    "WorkersAI": "agents_app.gateway.workers_ai",
    "ToolCallContext": "agents_app.agents.hooks",
    "ToolCallDecision": "agents_app.agents.hooks",
    "ToolCallResultContext": "agents_app.agents.hooks",
    "ToolInputError": "agents_app.agents.tools",
    "TurnConfig": "agents_app.agents.hooks",
    "truncate_older_messages": "agents_app.think.pruning",
    "TurnContext": "agents_app.agents.hooks",
    "write_data": "agents_app.think.stream_writer",
    "write_file": "agents_app.think.stream_writer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
