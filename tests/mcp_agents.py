"""Think agents for the MCP tests."""
from __future__ import annotations

from typing import Any

from agents_app.agents import (
    ThinkAgent,
    ToolCallContext,
    ToolCallDecision,
    callable_method,
    register_agent,
)


@register_agent
class McpToolsAgent(ThinkAgent):
    """Waits for its MCP servers before each turn; the owner may add and remove servers over RPC;
    calls of a tool named in `blocked` are blocked by before_tool_call."""

    system_prompt = "You are a test agent."
    wait_for_mcp_connections = {"timeout": 15000}
    blocked: set[str] = set()

    @callable_method
    async def add_server(self, name: str, url: str) -> dict[str, Any]:
        return await self.add_mcp_server(name, url)

    @callable_method
    async def remove_server(self, server_id: str) -> None:
        await self.remove_mcp_server(server_id)

    async def before_tool_call(self, context: ToolCallContext) -> ToolCallDecision | None:
        if any(context.tool_name.endswith(f"_{name}") for name in self.blocked):
            return ToolCallDecision("block", reason="Weather lookups are switched off.")
        return None


@register_agent
class NoMcpToolsAgent(McpToolsAgent):
    include_mcp_tools = False
