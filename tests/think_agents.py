"""Think agents for the session features: context blocks, compaction, config."""
from __future__ import annotations

import pydantic

from agents_app.agents import BlockKind, ContextBlockSpec, ThinkAgent, register_agent


@register_agent
class MemoryAgent(ThinkAgent):
    """A soul (computed), a small writable memory, a skills library and a searchable library."""

    system_prompt = "You are a test agent."
    context_blocks = (
        ContextBlockSpec("soul", provider=lambda agent: f"You are Ada, talking in session {agent.name}."),
        ContextBlockSpec("memory", description="Facts about the user", max_tokens=30),
        ContextBlockSpec("recipes", description="Recipes you can load", kind=BlockKind.SKILLS),
        ContextBlockSpec("notes", description="Searchable notes", kind=BlockKind.SEARCHABLE),
    )


class TravelConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    home_city: str
    max_budget: int = pydantic.Field(gt=0)


@register_agent
class CompactingAgent(ThinkAgent):
    """Compacts as soon as the history is over 120 estimated tokens; config is validated."""

    system_prompt = "Be brief."
    compact_after_tokens = 120
    compaction_protect_head = 1
    compaction_keep_tail = 2
    config_model = TravelConfig
