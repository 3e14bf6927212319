"""Think agents for the code-mode, extension and browser tests."""
from __future__ import annotations

from typing import Any

from agents_app.agents import ThinkAgent, ToolCallContext, ToolCallDecision, ToolCallResultContext, register_agent, tool
from agents_app.sandbox.code_mode import WorkspaceState, create_execute_tool
from agents_app.sandbox.quickjs_runner import Limits

TEMPERATURES = {"Paris": 18, "Berlin": 12, "Lisbon": 24}


@tool("Current temperature in a city, in degrees Celsius")
def get_weather(city: str) -> dict[str, Any]:
    if city not in TEMPERATURES:
        raise ValueError(f"No weather station in {city}")
    return {"city": city, "celsius": TEMPERATURES[city]}


@tool("Delete every file of the user", needs_approval=True)
def wipe() -> str:
    return "wiped"


@register_agent
class CodeModeAgent(ThinkAgent):
    """Offers `execute` over get_weather and wipe, with the workspace as state; small limits."""

    system_prompt = "You are a test agent."
    limits = Limits(cpu_seconds=0.5, wall_seconds=20, memory_bytes=8 * 1024 * 1024, max_output_chars=2000)

    def get_tools(self) -> dict[str, Any]:
        mine = {"get_weather": get_weather, "wipe": wipe}
        return {"execute": create_execute_tool(tools=mine, state=WorkspaceState(self.workspace), limits=self.limits)}


NOTES: list[str] = []


@tool("Keep a note")
def note(text: str) -> str:
    NOTES.append(text)
    return "noted"


@register_agent
class GuardedCodeModeAgent(CodeModeAgent):
    """Code mode over get_weather, note and wipe, with hooks that block notes about secrets,
    send Rome's weather requests to Lisbon, and record every finished call."""

    finished: list[ToolCallResultContext] = []

    def get_tools(self) -> dict[str, Any]:
        mine = {"get_weather": get_weather, "note": note, "wipe": wipe}
        return {"execute": create_execute_tool(tools=mine, limits=self.limits)}

    async def before_tool_call(self, context: ToolCallContext) -> ToolCallDecision | None:
        if context.tool_name == "note" and "secret" in context.input["text"]:
            return ToolCallDecision(action="block", reason="Notes about secrets are not allowed.")
        if context.tool_name == "get_weather" and context.input["city"] == "Rome":
            return ToolCallDecision(input={"city": "Lisbon"})
        return None

    async def after_tool_call(self, context: ToolCallResultContext) -> None:
        type(self).finished.append(context)


MATH_SOURCE = """({
  tools: {
    add: {
      description: "Add two numbers",
      parameters: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } }, required: ["a", "b"] },
      execute: async ({ a, b }) => a + b,
    },
    peek: {
      description: "Try the network",
      execute: async () => typeof fetch,
    },
  },
})"""

NEWS_SOURCE = """({
  tools: {
    headline: {
      description: "The headline of a page",
      parameters: { type: "object", properties: { url: { type: "string" } }, required: ["url"] },
      execute: async ({ url }) => { const page = await fetch(url); return page.text.match(/<h1>(.*)<\\/h1>/)[1]; },
    },
  },
})"""


@register_agent
class ExtensionAgent(ThinkAgent):
    """A built-in math extension (no network, a notes context block), a news extension allowed
    to reach 127.0.0.1 only, and the tools to load more."""

    system_prompt = "You are a test agent."

    def get_extensions(self) -> list[Any]:
        from agents_app.sandbox.extensions import extension

        return [
            extension("math", MATH_SOURCE, description="Arithmetic", context=[{"label": "notes", "description": "Math notes"}]),
            extension("news", NEWS_SOURCE, permissions={"network": ["127.0.0.1"]}),
        ]

    def get_tools(self) -> dict[str, Any]:
        from agents_app.sandbox.extensions import create_extension_tools

        return create_extension_tools(self.extensions)


@register_agent
class BrowserToolsAgent(ThinkAgent):
    """browser_search and browser_execute on the local headless Chromium, one tab per session."""

    system_prompt = "You are a test agent."

    def get_tools(self) -> dict[str, Any]:
        from agents_app.sandbox.browser import create_browser_tools

        return create_browser_tools(page_key=str(self.session.pk))
