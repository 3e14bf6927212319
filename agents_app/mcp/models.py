"""MCP servers: the ones an agent instance added at run time (`add_mcp_server`) and the ones an
operator attached to an agent class in the admin. Header values and OAuth tokens are secrets:
they are read by the connection pool only and never reach a client, a frame or a log."""
from __future__ import annotations

import secrets
from typing import Any

from django.db import models
from django.utils import timezone

from agents_app.storage.models import Agent, Session


def new_server_id() -> str:
    """Short ids like the reference's (they appear in namespaced tool names)."""
    return secrets.token_hex(4)


class Transport(models.TextChoices):
    AUTO = "auto", "auto (streamable HTTP, then SSE)"
    STREAMABLE_HTTP = "streamable-http", "streamable HTTP"
    SSE = "sse", "SSE"
    STDIO = "stdio", "stdio (local command, operators only)"


class AgentMcpServer(models.Model):
    """A server an operator attached to an agent class: every instance connects to it."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="mcp_servers")
    name = models.CharField(max_length=100)
    transport = models.CharField(max_length=20, choices=Transport.choices, default=Transport.AUTO)
    url = models.URLField(max_length=1000, blank=True, help_text="Server URL (HTTP transports)")
    command = models.CharField(max_length=1000, blank=True, help_text="Executable (stdio transport)")
    args = models.JSONField(default=list, blank=True, help_text='Arguments (stdio), e.g. ["-m", "my_server"]')
    env = models.JSONField(default=dict, blank=True, help_text="Extra environment (stdio); values are secrets")
    headers = models.JSONField(default=dict, blank=True, help_text="HTTP headers; values are secrets")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["agent", "name"]
        constraints = [models.UniqueConstraint(fields=["agent", "name"], name="unique_mcp_server_per_agent")]

    def __str__(self) -> str:
        return f"{self.agent.slug}: {self.name}"


class McpServer(models.Model):
    """One server of one agent instance, with the last known connection state and catalogue."""

    class State(models.TextChoices):
        AUTHENTICATING = "authenticating"
        CONNECTING = "connecting"
        CONNECTED = "connected"
        DISCOVERING = "discovering"
        READY = "ready"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=16, default=new_server_id, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="mcp_servers")
    # Set for servers that come from the agent's operator configuration (not removable by the agent).
    attached = models.ForeignKey(AgentMcpServer, null=True, blank=True, on_delete=models.CASCADE, related_name="instances")
    name = models.CharField(max_length=100)
    server_url = models.CharField(max_length=1000)
    transport = models.CharField(max_length=20, choices=Transport.choices, default=Transport.AUTO)
    headers = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CONNECTING)
    error = models.TextField(null=True, blank=True)
    auth_url = models.TextField(null=True, blank=True)
    instructions = models.TextField(null=True, blank=True)
    capabilities = models.JSONField(null=True, blank=True)
    tools = models.JSONField(default=list, blank=True)
    prompts = models.JSONField(default=list, blank=True)
    resources = models.JSONField(default=list, blank=True)
    # OAuth client registration, tokens and the PKCE verifier of a pending authorization.
    oauth = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "MCP server of a session"

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    def describe(self) -> dict[str, Any]:
        """The entry of `cf_agent_mcp_servers.mcp.servers[id]` (protocol §2): no secrets."""
        return {
            "name": self.name,
            "server_url": self.server_url,
            "auth_url": self.auth_url,
            "state": self.state,
            "error": self.error,
            "instructions": self.instructions,
            "capabilities": self.capabilities,
        }
