"""What a Think agent's session adds to the model turn (think.md §6): context blocks and skills
in the system prompt and as tools, and in the history the model sees compaction overlays (on by
default at a fraction of the model's context window) and truncated older tool outputs.

The session is set up in code once per agent instance and process, before its first use, by
the agent's `configure_session(builder)`; blocks added at run time (`add_context`) are read
from the database at every turn start, and the documents the model loaded from the turn's
conversation."""
from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import TYPE_CHECKING, Any

from agents_app.protocol.messages import UIMessage
from agents_app.think import compaction
from agents_app.providers.convert import to_openai_messages
from agents_app.think import skills
from agents_app.think.context_blocks import BlockKind, ContextBlocks, ContextBlockSpec, Provider, runtime_specs
from agents_app.think.context_window import compaction_threshold, estimate_request_tokens
from agents_app.think.pruning import truncate_older_messages
from agents_app.agents.tools import Tool
from agents_app.turns.types import ChatOptions
from agents_app.storage.db_threads import db_async
from agents_app.storage.overlays import apply_overlays

if TYPE_CHECKING:
    from agents_app.think.host import ThinkHost

logger = logging.getLogger(__name__)


class SessionBuilder:
    """What `configure_session` receives: the session's blocks, starting from the class's
    `context_blocks`, and its compaction threshold. Every method returns the builder, so calls
    chain."""

    def __init__(self, blocks: tuple[ContextBlockSpec, ...]) -> None:
        self.blocks = list(blocks)
        # None: not set here, so the agent's own setting (class or admin settings) stays in force.
        self.compact_after_tokens: int | None = None

    def with_context(
        self,
        label: str,
        *,
        description: str = "",
        max_tokens: int | None = None,
        readonly: bool = False,
        kind: BlockKind = BlockKind.TEXT,
        initial: str = "",
        provider: Provider | None = None,
    ) -> SessionBuilder:
        """A block of the system prompt, after the ones before it (same label: replaced in place)."""
        spec = ContextBlockSpec(label, description, max_tokens, readonly, kind, initial, provider)
        at = next((i for i, existing in enumerate(self.blocks) if existing.label == label), len(self.blocks))
        self.blocks[at : at + 1] = [spec]
        return self

    def with_skills(self, label: str, description: str = "") -> SessionBuilder:
        """A library of documents the model loads with load_context and drops with unload_context."""
        return self.with_context(label, description=description, kind=BlockKind.SKILLS)

    def with_search(self, label: str, description: str = "") -> SessionBuilder:
        """A library the model searches with search_context."""
        return self.with_context(label, description=description, kind=BlockKind.SEARCHABLE)

    def compact_after(self, tokens: int) -> SessionBuilder:
        """Summarise older messages once the history the model reads is over `tokens` (0: never automatically)."""
        self.compact_after_tokens = tokens
        return self


async def configure(agent: ThinkHost) -> dict[str, Any]:
    """Run the agent's `configure_session` (sync or async) and set what it built on the
    agent; returns those attributes, for later objects of the same instance to adopt."""
    builder = SessionBuilder(tuple(agent.context_blocks))
    outcome: Any = agent.configure_session(builder)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    built = outcome if isinstance(outcome, SessionBuilder) else builder
    adopted: dict[str, Any] = {"context_blocks": tuple(built.blocks)}
    if built.compact_after_tokens is not None:
        adopted["compact_after_tokens"] = built.compact_after_tokens
    for attribute, value in adopted.items():
        setattr(agent, attribute, value)
    return adopted


async def load_runtime_state(agent: ThinkHost) -> None:
    """The blocks added at run time, as stored now (another process may have changed them
    since this object last looked)."""
    agent.runtime_context_blocks = await db_async(runtime_specs)(agent.session)


def _has_blocks(agent: ThinkHost) -> bool:
    return bool(agent.context_blocks or agent.runtime_context_blocks)


def framework_tools(agent: ThinkHost) -> dict[str, Tool]:
    """The context-block tools, then the skill tools."""
    context = ContextBlocks(agent).tools() if _has_blocks(agent) else {}
    return {**context, **skills.tools(agent.get_skills())}


async def render_context(agent: ThinkHost) -> str:
    """The system prompt's section after the agent's own prompt: blocks, then the skills list."""
    blocks = await ContextBlocks(agent).render() if _has_blocks(agent) else ""
    return "\n\n".join(section for section in (blocks, skills.render(agent.get_skills())) if section)


async def model_view(agent: ThinkHost, messages: list[UIMessage], *, overlays_stored: bool = True) -> list[UIMessage]:
    """What the model reads of `messages`: compaction overlays applied, then older tool
    outputs and very long texts truncated (pruning.truncate_older_messages).
    `overlays_stored=False`: the caller knows the session has no overlays to apply."""
    overlaid = await db_async(apply_overlays)(agent.session, messages) if overlays_stored else messages
    return truncate_older_messages(overlaid)


async def history_for_model(agent: ThinkHost, options: ChatOptions, *, overlays_stored: bool = True) -> ChatOptions:
    """The history the model reads, compacting first when it is over the agent's threshold
    (by default a fraction of the model's context window). A failed summary never fails the
    turn: it then runs uncompacted (and the model loop still fits each request to the window).
    `overlays_stored=False`: the caller knows the session had no overlays when the turn started."""
    messages = await model_view(agent, options.messages, overlays_stored=overlays_stored)
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
