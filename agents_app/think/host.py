"""What Think's features need of the agent they run for: the configuration and hooks the
model loop, compaction, context blocks and plug-ins read. ThinkAgent (agents/think_agent.py)
satisfies it without naming it, so this floor never imports the agent API above it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

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
)
from agents_app.agents.tools import Approval, Tool
from agents_app.turns.agent_interface import ChatAgent

if TYPE_CHECKING:
    from agents_app.think.context_blocks import ContextBlockSpec
    from agents_app.think.middleware import ModelMiddleware
    from agents_app.think.skills import Skill
    from agents_app.think.think_session import SessionBuilder


class ThinkHost(ChatAgent, Protocol):
    max_steps: int
    stop_when: Sequence[StopCondition]
    send_reasoning: bool
    context_blocks: tuple[ContextBlockSpec, ...]
    # Set at each turn start: the blocks from the database (think_session.load_runtime_state),
    # the loaded documents from the turn's conversation (context_blocks.loaded_keys).
    runtime_context_blocks: tuple[ContextBlockSpec, ...]
    loaded_context_keys: frozenset[str]
    compact_after_tokens: int | None
    compaction_protect_head: int
    compaction_keep_tail: int
    context_overflow: dict[str, Any] | None
    # sandbox/extensions.py's ExtensionManager (a floor above): its `tools()` join every step.
    extensions: Any
    wait_for_mcp_connections: bool | dict[str, Any]
    mcp_tool_needs_approval: Approval

    def get_extensions(self) -> list[Any]: ...

    def get_model(self) -> str: ...

    def get_model_middleware(self) -> list[ModelMiddleware]: ...

    def get_skills(self) -> list[Skill]: ...

    def configure_session(self, session: SessionBuilder) -> Any: ...

    def turn_tools(self) -> dict[str, Tool]: ...

    def turn_system_prompt(self) -> str: ...

    async def before_turn(self, context: TurnContext) -> TurnConfig | None: ...

    async def prepare_step(self, context: StepContext) -> StepConfig | None: ...

    async def before_tool_call(self, context: ToolCallContext) -> ToolCallDecision | None: ...

    async def after_tool_call(self, context: ToolCallResultContext) -> None: ...

    async def on_step_end(self, step: StepResult) -> None: ...

    async def on_chunk(self, chunk: dict[str, Any]) -> None: ...
