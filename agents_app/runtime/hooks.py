"""Typed contexts and results of the Think hooks (think.md §5).

Order per turn: before_turn → [on_chunk* → (before_tool_call → execute → after_tool_call)* →
on_step_finish] per step → persist → on_chat_response.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agents_app.runtime.tools import Tool


@dataclass
class TurnContext:
    system: str
    messages: list[dict[str, Any]]
    tools: dict[str, Tool]
    model: str
    continuation: bool
    body: dict[str, Any] | None


@dataclass
class TurnConfig:
    """Overrides for one turn; None keeps the agent's own setting."""

    model: str | None = None
    system: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_steps: int | None = None
    active_tools: list[str] | None = None
    tool_choice: Any = None
    temperature: float | None = None
    max_output_tokens: int | None = None


@dataclass
class ToolCallContext:
    tool_call_id: str
    tool_name: str
    input: dict[str, Any]
    step_number: int
    messages: list[dict[str, Any]]


@dataclass
class ToolCallDecision:
    """allow (optionally with substituted input), block (the model reads `reason`), or
    substitute (the model reads `output`; the tool does not run)."""

    action: Literal["allow", "block", "substitute"] = "allow"
    input: dict[str, Any] | None = None
    reason: str | None = None
    output: Any = None


@dataclass
class ToolCallResultContext:
    tool_call_id: str
    tool_name: str
    input: dict[str, Any]
    step_number: int
    duration_ms: float
    success: bool
    output: Any = None
    error: str | None = None


@dataclass
class StepResult:
    step_number: int
    text: str
    reasoning: str
    finish_reason: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)


BLOCKED_TOOL_TEXT = "The tool call was blocked."
