"""What a Think agent's session adds to the model turn (think.md §6): context blocks in the
system prompt and as tools, and compaction overlays in the history the model sees."""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async

from agents_app.protocol.messages import UIMessage
from agents_app.think import compaction
from agents_app.think.context_blocks import ContextBlocks, estimate_tokens
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


async def history_for_model(agent: ThinkHost, options: ChatOptions) -> ChatOptions:
    """The history with overlays applied, compacting first when it is over the agent's
    threshold. A failed summary never fails the turn: it then runs uncompacted."""
    messages = await sync_to_async(apply_overlays)(agent.session, options.messages)
    threshold = agent.compact_after_tokens
    if threshold and _estimate(agent, messages) > threshold:
        try:
            if await compaction.compact(agent) is not None:
                await agent.broadcast_transcript()  # the summarised originals get their marks
                messages = await sync_to_async(apply_overlays)(agent.session, options.messages)
        except Exception:
            logger.warning("compaction failed for session %s", agent.session.pk, exc_info=True)
    return dataclasses.replace(options, messages=messages)


def _estimate(agent: ThinkHost, messages: list[UIMessage]) -> int:
    return compaction.estimate_messages_tokens(messages) + estimate_tokens(agent.turn_system_prompt())
