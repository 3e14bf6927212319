"""MCP servers and extensions in the admin: operators attach servers to an agent class with write-only
header secrets; the servers of a session are shown read-only without secrets."""
from __future__ import annotations

import pytest

from agents_app.mcp.models import AgentMcpServer, McpServer
from agents_app.turns.instances import resolve_session
from agents_app.storage.models import Agent

pytestmark = pytest.mark.django_db


def test_attached_server_headers_are_write_only_and_kept_when_left_masked(admin_client):
    agent = Agent.objects.create(slug="weather-agent", class_path="x.Y")
    server = AgentMcpServer.objects.create(agent=agent, name="weather", url="https://mcp.example.com/mcp", headers={"Authorization": "Bearer sk-secret-77"})
    page = admin_client.get(f"/admin/agents_app/agentmcpserver/{server.pk}/change/")
    assert page.status_code == 200 and b"sk-secret-77" not in page.content and b"Authorization: ********" in page.content
    form = {"agent": agent.pk, "name": "weather", "transport": "auto", "url": "https://mcp.example.com/v2", "command": "", "args": "[]", "enabled": "on"}
    response = admin_client.post(
        f"/admin/agents_app/agentmcpserver/{server.pk}/change/",
        {**form, "headers_text": "Authorization: ********\nX-Team: blue", "env_text": ""},
    )
    assert response.status_code == 302
    server.refresh_from_db()
    assert server.headers == {"Authorization": "Bearer sk-secret-77", "X-Team": "blue"} and server.url.endswith("/v2")


def test_an_attached_server_needs_a_url_or_for_stdio_a_command(admin_client):
    agent = Agent.objects.create(slug="weather-agent", class_path="x.Y")
    base = {"agent": agent.pk, "name": "local", "args": "[]", "enabled": "on", "headers_text": "", "env_text": ""}
    stdio = admin_client.post("/admin/agents_app/agentmcpserver/add/", {**base, "transport": "stdio", "url": "", "command": ""})
    assert b"A stdio server needs a command" in stdio.content
    http = admin_client.post("/admin/agents_app/agentmcpserver/add/", {**base, "transport": "sse", "url": "", "command": ""})
    assert b"An HTTP server needs a URL" in http.content
    assert not AgentMcpServer.objects.exists()


def test_session_servers_are_listed_without_their_secrets(admin_client, user):
    import tests.mcp_agents  # noqa: F401

    session = resolve_session("mcp-tools-agent", "a", user)
    server = McpServer.objects.create(session=session, name="weather", server_url="https://mcp.example.com/mcp", headers={"Authorization": "Bearer sk-row-secret"}, state="failed", error="HTTP 500")
    listing = admin_client.get("/admin/agents_app/mcpserver/")
    detail = admin_client.get(f"/admin/agents_app/mcpserver/{server.pk}/change/")
    assert listing.status_code == 200 and detail.status_code == 200
    assert b"HTTP 500" in detail.content and b"sk-row-secret" not in detail.content and b"sk-row-secret" not in listing.content


def test_loaded_extensions_show_their_source_read_only(admin_client, user):
    from agents_app.sandbox.models import SessionExtension

    import tests.mcp_agents  # noqa: F401

    session = resolve_session("mcp-tools-agent", "a", user)
    loaded = SessionExtension.objects.create(session=session, name="loud", source="({ tools: { shout: {} } }) // <b>", manifest={"permissions": {"network": False}}, tools={"shout": {}})
    page = admin_client.get(f"/admin/agents_app/sessionextension/{loaded.pk}/change/")
    assert page.status_code == 200 and b"({ tools: { shout: {} } }) // &lt;b&gt;" in page.content
    assert b"loud_shout" in admin_client.get("/admin/agents_app/sessionextension/").content
    assert admin_client.get("/admin/agents_app/sessionextension/add/").status_code == 403
