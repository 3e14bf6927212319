"""The MCP methods every agent has (the reference's `addMcpServer` / `removeMcpServer` /
`getMcpServers`). They are not RPC methods by default — letting any client make the server
connect to any URL is the developer's decision: expose them with a `@callable_method` wrapper."""
from __future__ import annotations

from typing import Any

from agents_app.mcp import manager
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session


class McpClientMixin:
    session: Session

    async def add_mcp_server(
        self, name: str, url: str, *, headers: dict[str, str] | None = None, transport: str = "auto"
    ) -> dict[str, Any]:
        """Connect this instance to a remote MCP server (streamable HTTP, SSE, or "auto" =
        try both). Stored with the instance and reconnected after restarts. Returns
        `{"id", "state", "authUrl"}`; connecting continues in the background."""
        row = await manager.add_server(self.session.pk, name, url, headers=headers, transport=transport)
        return {"id": row.pk, "state": row.state, "authUrl": row.auth_url}

    async def remove_mcp_server(self, server_id: str) -> None:
        """Disconnect and forget a server this instance added."""
        await manager.remove_server(self.session.pk, server_id)

    async def get_mcp_servers(self) -> dict[str, Any]:
        """The state clients receive as `cf_agent_mcp_servers`."""
        return await db_async(manager.servers_state)(self.session.pk)

    async def wait_for_mcp_servers(self, timeout: float = 10.0) -> dict[str, Any]:
        """Connect every server that is not connected in this process, waiting up to `timeout` s."""
        await manager.wait_for_connections(self.session.pk, {"timeout": timeout * 1000})
        return await self.get_mcp_servers()
