"""Typed contexts and results of the Think hooks (think.md §5).

Order per turn: before_turn → [before_step → on_chunk* → (before_tool_call → execute →
after_tool_call)* → on_step_end] per step → persist → on_chat_response.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any, Literal

from agents_app.agents.tools import Tool


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
    # Checked after every step that ran tools, in addition to the max_steps bound.
    stop_when: Sequence[StopCondition] = ()
    # Offered this turn on top of the agent's tools (they win on a name).
    tools: dict[str, Tool] | None = None
    # Extra fields of every model request this turn, sent in the request body as given
    # (e.g. {"reasoning_effort": "low"}, or a gateway's own options).
    provider_options: dict[str, Any] | None = None


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


# The AI SDK's names: the first step of a turn is "initial", one that answers tool results
# "tool-result". (Its third, "continue", extends a reply cut off by the length limit, which
# this loop never does: a step without tool calls ends the turn.)
StepType = Literal["initial", "tool-result"]


@dataclass
class StepResult:
    step_number: int
    text: str
    reasoning: str
    finish_reason: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    step_type: StepType = "initial"


BLOCKED_TOOL_TEXT = "The tool call was blocked."


@dataclass
class StepContext:
    """What `before_step` sees before each model call: the steps so far and what the next
    call would send (after the turn's own overrides). `messages` is the hook's own copy, made
    when it is first read: most hooks never read it, and a long conversation's copy before
    every model call cost as much as the rest of the step's preparation."""

    step_number: int
    steps: list[StepResult]
    model: str
    system: str
    history: InitVar[list[dict[str, Any]]]
    active_tools: list[str]
    tool_choice: Any

    def __post_init__(self, history: list[dict[str, Any]]) -> None:
        self._history = list(history)  # later steps extend the loop's list, not this one

    @functools.cached_property
    def messages(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._history)


@dataclass
class StepConfig:
    """Overrides for one step; None keeps what the turn would use. `messages` replaces the
    whole conversation sent (system message included); `system` replaces only the system message."""

    model: str | None = None
    system: str | None = None
    messages: list[dict[str, Any]] | None = None
    active_tools: list[str] | None = None
    tool_choice: Any = None


# A stop condition reads the finished steps and says whether the loop ends here.
StopCondition = Callable[[list[StepResult]], bool]


def step_count_is(count: int) -> StopCondition:
    """Stop once `count` steps have run."""
    return lambda steps: len(steps) >= count


def has_tool_call(*names: str) -> StopCondition:
    """Stop after a step in which the model called one of `names`."""
    return lambda steps: bool(steps) and any(call["toolName"] in names for call in steps[-1].tool_calls)
