"""Tools of connected MCP servers as Think tools: namespaced `tool_<serverId>_<name>`, input
checked against the server's JSON schema, streamed as `dynamic-tool` parts, and run through the
same loop, approval and hooks as any server tool."""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import pydantic

from agents_app.mcp import manager
from agents_app.mcp.models import McpServer
from agents_app.mcp.pool import McpConnectionError, pool
from agents_app.agents.tools import Approval, Tool, ToolInputError

if TYPE_CHECKING:
    from agents_app.think.host import ThinkHost

logger = logging.getLogger(__name__)
_OPENAI_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def namespaced(server_id: str, tool_name: str) -> str:
    """The reference's key, made a valid model function name (letters, digits, _ and -; 64 max)."""
    return _OPENAI_NAME.sub("_", f"tool_{server_id.replace('-', '')}_{tool_name}")[:64]


class _AnyInput(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


class McpTool(Tool):
    """A tool of one connected server; the schema is the server's own JSON Schema."""

    def __init__(self, row: McpServer, spec: dict[str, Any], needs_approval: Approval) -> None:
        schema = spec.get("inputSchema") or {"type": "object", "properties": {}}
        super().__init__(
            name=namespaced(row.pk, spec["name"]),
            description=spec.get("description") or spec.get("title") or f"{spec['name']} (MCP server {row.name})",
            input_model=_AnyInput,
            execute=self._call,
            needs_approval=needs_approval,
            dynamic=True,
        )
        self.row = row
        self.remote_name = spec["name"]
        self.schema = schema
        import jsonschema  # slow to import: only once MCP tools exist

        self.validator = jsonschema.Draft202012Validator(schema)

    @property
    def parameters(self) -> dict[str, Any]:
        return self.schema

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        problems = sorted(self.validator.iter_errors(arguments), key=lambda e: list(e.path))
        if problems:
            details = "; ".join(f"{'.'.join(str(p) for p in e.path) or 'input'}: {e.message}" for e in problems)
            raise ToolInputError(f"Invalid arguments for tool {self.name}: {details}")
        return arguments

    async def _call(self, **arguments: Any) -> dict[str, Any]:
        try:
            result = await pool.call_tool(self.row.pk, self.remote_name, arguments, manager.tool_timeout())
        except McpConnectionError as error:
            if not pool.is_ready(self.row.pk):
                await manager.connection_lost(self.row, str(error))
            raise RuntimeError(f"MCP server {self.row.name} is unavailable: {error}") from error
        if result.get("isError"):
            first = (result.get("content") or [{}])[0]
            raise RuntimeError(first.get("text") if first.get("type") == "text" and first.get("text") else "Tool call failed")
        return result


def usable_schema(schema: Any) -> bool:
    """The model can only call tools whose input is a JSON object schema."""
    import jsonschema

    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return False
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError:
        return False
    return True


async def turn_tools(agent: ThinkHost) -> dict[str, Tool]:
    """The tools of every server that is ready in this process (after the optional wait);
    servers that are connecting, failed or awaiting authorization are left out with a log note."""
    rows = await manager.wait_for_connections(agent.session.pk, agent.wait_for_mcp_connections)
    tools: dict[str, Tool] = {}
    for row in rows:
        catalogue = pool.catalogue(row.pk)
        if catalogue is None:
            logger.info("MCP server %s (%s) left out of this turn: %s", row.name, row.pk, row.error or row.state)
            continue
        for spec in catalogue.tools:
            if not usable_schema(spec.get("inputSchema") or {"type": "object"}):
                logger.warning("MCP tool %s of %s left out: its input schema is not a JSON object schema", spec.get("name"), row.name)
                continue
            tool = McpTool(row, spec, agent.mcp_tool_needs_approval)
            tools[tool.name] = tool
    return tools
