"""Think agents for the parity features: configure_session, context blocks at run time,
skills, per-turn tools and provider options, step types, sub-agent start-up."""
from __future__ import annotations

from typing import Any, ClassVar

from agents_app.agents import (
    SessionBuilder,
    Skill,
    StepResult,
    ThinkAgent,
    Tool,
    TurnConfig,
    TurnContext,
    register_agent,
    tool,
)


@register_agent
class ConfiguredAgent(ThinkAgent):
    """Sets its session up in code; its tools add a block while it runs."""

    system_prompt = "You are configured in code."
    configured: ClassVar[list[str]] = []

    async def configure_session(self, session: SessionBuilder) -> SessionBuilder:
        type(self).configured.append(self.name)
        return session.with_context("memory", description="What you remember", max_tokens=50).with_skills("guides", "Guides you can load").compact_after(5000)

    def get_tools(self) -> dict[str, Tool]:
        @tool("Open a block of your system prompt about a topic.")
        async def open_topic(topic: str) -> str:
            await self.context.add_context(topic, description="A topic block", content=f"Topic: {topic}")
            return "opened"

        return {"open_topic": open_topic}


@register_agent
class SkilledAgent(ThinkAgent):
    system_prompt = "You know some skills."

    def get_skills(self) -> list[Skill]:
        return [
            Skill("haiku", "Write haiku", "Use 5-7-5 syllables.", resources={"examples.md": "An old silent pond"}),
            Skill("limerick", "Write limericks", "Use AABBA rhymes."),
        ]


@tool("Roll a die.")
def roll() -> int:
    return 4


@register_agent
class TurnOptionsAgent(ThinkAgent):
    """Adds a tool and provider options to every turn, and records its steps."""

    system_prompt = "You roll dice."
    steps: ClassVar[list[StepResult]] = []

    async def before_turn(self, context: TurnContext) -> TurnConfig:
        return TurnConfig(tools={"roll": roll}, provider_options={"reasoning_effort": "low", "metadata": {"origin": "test"}})

    async def on_step_end(self, step: StepResult) -> None:
        type(self).steps.append(step)


@register_agent
class StartingChildAgent(ThinkAgent):
    """A sub-agent whose on_start leaves a block in its session."""

    system_prompt = "You are a child agent."
    starts: ClassVar[list[Any]] = []

    async def on_start(self) -> None:
        type(self).starts.append(self.name)
        await self.context.add_context("origin", content="Started by on_start.", readonly=True)
