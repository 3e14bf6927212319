"""Chat failures through the agent's hooks (think.md §5, §9.3): `classify_chat_error` names the
kind of failure, `on_chat_error` decides what clients see of it."""
from __future__ import annotations

import dataclasses
import inspect
import logging

from agents_app.providers.errors import ChatErrorClassification, classify_error
from agents_app.turns.agent_interface import ChatAgent
from agents_app.turns.types import ChatErrorContext

logger = logging.getLogger(__name__)


def classify(agent: ChatAgent, error: BaseException | str, ctx: ChatErrorContext) -> ChatErrorClassification:
    """The agent's answer, else the ready-made classifier's, else "unknown" (so a classified
    failure is never None). A failing override must not turn one error into another: it
    counts as no answer."""
    try:
        answer = agent.classify_chat_error(error, ctx)
    except Exception:
        logger.exception("classify_chat_error failed")
        answer = None
    return answer or classify_error(error) or "unknown"


def error_text(agent: ChatAgent | None, error: BaseException, ctx: ChatErrorContext, default: str) -> str:
    """What clients see: the agent's on_chat_error rendering, never a stack trace. The hook
    gets `ctx` classified; a failure the model loop classified already keeps its class."""
    if agent is None:
        return str(error) or default
    if ctx.classification is None:
        ctx = dataclasses.replace(ctx, classification=classify(agent, error, ctx))
    hook = agent.on_chat_error
    try:
        # Overrides written before ChatErrorContext existed take the error alone.
        rendered = hook(error, ctx) if len(inspect.signature(hook).parameters) > 1 else hook(error)  # type: ignore[call-arg]
        return str(rendered) or default
    except Exception:
        logger.exception("on_chat_error failed")
    return str(error) or default
