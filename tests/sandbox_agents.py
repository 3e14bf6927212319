"""Think agents for the code-mode, extension and browser tests."""
from __future__ import annotations

from typing import Any

from agents_app.runtime.agent import ThinkAgent
from agents_app.runtime.registry import register_agent
from agents_app.runtime.tools import tool
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
