"""Agents for long conversations (big tool outputs, a small context window, authors' pruning,
interrupted calls) and for reasoning in <think> tags."""
from __future__ import annotations

from typing import Any

from agents_app.agents import (
    AIChatAgent,
    ChatOptions,
    ChatResponse,
    ExtractReasoningMiddleware,
    ModelMiddleware,
    ThinkAgent,
    Tool,
    client_tool,
    prune_messages,
    register_agent,
    stream_reply,
    tool,
)

REPORT_CHARS = 6_000


@tool("Read a report by its number.")
def read_report(number: int) -> str:
    return f"Report {number}: " + ("figures " * REPORT_CHARS)[:REPORT_CHARS]


@tool("Fetch the weather for a city.")
def fetch_weather(city: str) -> dict[str, Any]:
    return {"city": city, "temperatureC": 12}


pick_colour: Tool = client_tool("pick_colour", "Ask the user to pick a colour in the browser.")


@register_agent
class ReportAgent(ThinkAgent):
    """A 16,000-token window and reports of 6,000 characters per tool call."""

    system_prompt = "You read reports for the user."
    context_window = 16_000

    def get_tools(self) -> dict[str, Tool]:
        return {"read_report": read_report, "fetch_weather": fetch_weather, "pick_colour": pick_colour}


@register_agent
class PruningChatAgent(AIChatAgent):
    """Writes its own turn and sends the model only the last two messages' tool calls."""

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        messages = prune_messages(options.messages, reasoning="before-last-message", tool_calls="before-last-2-messages")
        return stream_reply(messages, system="Be brief.")


@register_agent
class LostCallAgent(ReportAgent):
    """Turns an interrupted call into a note in the answer instead of an errored result."""

    def repair_interrupted_tool_part(self, part: dict[str, Any]) -> dict[str, Any]:
        return {"type": "text", "text": f"(A {part['type'].removeprefix('tool-')} call was lost.)"}


@register_agent
class ThinkingAgent(ThinkAgent):
    """For models that write their thinking between <think> tags in the text."""

    system_prompt = "Think, then answer."

    def get_model_middleware(self) -> list[ModelMiddleware]:
        return [ExtractReasoningMiddleware()]
