"""What a Think agent's session adds to the model turn (think.md §6): context blocks in the
system prompt and as tools, and in the history the model sees compaction overlays (on by
default at a fraction of the model's context window) and truncated older tool outputs."""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async

from agents_app.protocol.messages import UIMessage
from agents_app.think import compaction
from agents_app.providers.convert import to_openai_messages
from agents_app.think.context_blocks import ContextBlocks
from agents_app.think.context_window import compaction_threshold, estimate_request_tokens
from agents_app.think.pruning import truncate_older_messages
from agents_app.agents.tools import Tool
from agents_app.turns.types import ChatOptions
from agents_app.storage.overlays import apply_overlays

if TYPE_CHECKING:
    from agents_app.think.host import ThinkHost

logger = logging.getLogger(__name__)


def framework_tools(agent: ThinkHost) -> dict[str, Tool]:
    return ContextBlocks(agent).tools() if agent.context_blocks else {}


async def render_context(agent: ThinkHost) -> str:
    return await ContextBlocks(agent).render() if agent.context_blocks else ""


async def model_view(agent: ThinkHost, messages: list[UIMessage]) -> list[UIMessage]:
    """What the model reads of `messages`: compaction overlays applied, then older tool
    outputs and very long texts truncated (pruning.truncate_older_messages)."""
    return truncate_older_messages(await sync_to_async(apply_overlays)(agent.session, messages))


async def history_for_model(agent: ThinkHost, options: ChatOptions) -> ChatOptions:
    """The history the model reads, compacting first when it is over the agent's threshold
    (by default a fraction of the model's context window). A failed summary never fails the
    turn: it then runs uncompacted (and the model loop still fits each request to the window)."""
    messages = await model_view(agent, options.messages)
    threshold = compaction_threshold(agent.get_model(), agent)
    if threshold and _estimate(agent, messages) > threshold:
        try:
            if await compaction.compact(agent) is not None:
                await agent.broadcast_transcript()  # the summarised originals get their marks
                messages = await model_view(agent, options.messages)
        except Exception:
            logger.warning("compaction failed for session %s", agent.session.pk, exc_info=True)
    return dataclasses.replace(options, messages=messages)


def _estimate(agent: ThinkHost, messages: list[UIMessage]) -> int:
    return estimate_request_tokens(to_openai_messages(messages, agent.turn_system_prompt()))
