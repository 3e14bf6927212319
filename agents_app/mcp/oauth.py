"""OAuth for MCP servers that answer 401.

Not built yet: a server that needs an authorization is shown as `authenticating` with the
error "Authorization required" and no auth URL. Stored tokens (row.oauth["tokens"]) are
sent as a bearer token; they never leave the server side.
"""
from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx2

from agents_app.mcp.models import McpServer


class _Bearer(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, Any, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def provider_for(row: McpServer) -> httpx2.Auth | None:
    token = (row.oauth or {}).get("tokens", {}).get("access_token")
    return _Bearer(token) if token else None


async def pending_auth_url(row: McpServer) -> str | None:
    return None
