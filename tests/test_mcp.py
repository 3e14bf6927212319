"""MCP servers of an agent (protocol §2 `cf_agent_mcp_servers`, think.md `wait_for_mcp_connections`
/ `include_mcp_tools`): real MCP servers built with the SDK, over streamable HTTP, SSE and stdio."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.mcp.models import AgentMcpServer, McpServer
from agents_app.mcp.pool import pool
from agents_app.mcp.tools import namespaced
from agents_app.turns.instances import load_agent, resolve_session
from agents_app.turns.registry import agent_record
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import user_message
from tests.plugins.live_server import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]
ROOT = Path(__file__).resolve().parents[1]
STDIO_SERVER = {"command": sys.executable, "args": ["-m", "tests.mcp_servers.weather"]}


@pytest.fixture(autouse=True)
def _mcp_agents() -> None:
    import tests.mcp_agents  # noqa: F401 - registers the agents


class WeatherServer:
    """tests/mcp_servers/weather.py in its own process, like any remote MCP server."""

    def __init__(self, transport: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_servers.weather", "--transport", transport, "--port", str(self.port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}/{'sse' if transport == 'sse' else 'mcp'}"
        self.wait_for_port(self.port, self.process)

    @staticmethod
    def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                assert process.poll() is None, "the MCP server exited"
                time.sleep(0.1)
        raise TimeoutError("the MCP server did not start")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def weather_server() -> Iterator[WeatherServer]:
    server = WeatherServer("streamable-http")
    yield server
    server.kill()


async def agent_for(user: Any, name: str = "mcp", segment: str = "mcp-tools-agent") -> Any:
    session = await sync_to_async(resolve_session)(segment, name, user)
    return await sync_to_async(load_agent)(session)


def tool_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in message["parts"] if p.get("toolCallId")]


async def test_a_turn_calls_a_tool_of_a_streamable_http_server_as_a_dynamic_tool(model, user, weather_server):
    agent = await agent_for(user)
    added = await agent.add_mcp_server("weather", weather_server.url)
    tool_name = namespaced(added["id"], "get_weather")
    model.script(
        Reply.tool_calls([ToolCallSpec(tool_name, '{"city": "Paris"}', id="w1")]),
        Reply.text("It is 18 degrees in Paris."),
    )
    result = await agent.save_messages([user_message("Weather in Paris?", "u1")])

    offered = {t["function"]["name"]: t["function"] for t in model.requests[0]["tools"]}
    assert offered[tool_name]["description"] == "Current temperature in a city, in degrees Celsius"
    assert offered[tool_name]["parameters"]["required"] == ["city"]
    assert namespaced(added["id"], "list_cities") in offered
    [part] = tool_parts(result.message)
    assert part["type"] == "dynamic-tool" and part["toolName"] == tool_name and part["state"] == "output-available"
    assert json.loads(part["output"]["content"][0]["text"]) == {"city": "Paris", "celsius": 18}
    tool_message = model.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and '\\"celsius\\": 18' in tool_message["content"]
    assert result.message["parts"][-1]["text"] == "It is 18 degrees in Paris."


async def test_servers_are_stored_with_the_instance_and_reconnected_by_a_new_process(model, user, weather_server):
    agent = await agent_for(user)
    added = await agent.add_mcp_server("weather", weather_server.url)
    await agent.wait_for_mcp_servers()
    await pool.disconnect(added["id"])  # what a restart leaves: the stored row, no connection
    model.script(Reply.text("Ready."))
    await (await agent_for(user)).save_messages([user_message("Hi", "u1")])
    assert namespaced(added["id"], "get_weather") in {t["function"]["name"] for t in model.requests[0]["tools"]}
    assert pool.is_ready(added["id"])


async def test_a_stdio_server_attached_to_the_agent_class_serves_every_instance(model, user):
    record = await sync_to_async(agent_record)("mcp-tools-agent")
    attached = await sync_to_async(AgentMcpServer.objects.create)(agent=record, name="local weather", transport="stdio", **STDIO_SERVER)
    for name in ("first", "second"):
        agent = await agent_for(user, name)
        state = await agent.wait_for_mcp_servers(timeout=30)
        [(server_id, server)] = state["servers"].items()
        assert server["name"] == "local weather" and server["state"] == "ready"
        model.script(Reply.tool_calls([ToolCallSpec(namespaced(server_id, "list_cities"), "{}", id="c")]), Reply.text("Three."))
        result = await agent.save_messages([user_message("Which cities?", "u1")])
        assert tool_parts(result.message)[0]["output"]["structuredContent"] == {"result": ["Berlin", "Lisbon", "Paris"]}
        with pytest.raises(ValueError, match="attached by the operator"):
            await agent.remove_mcp_server(server_id)
    attached.enabled = False
    await sync_to_async(attached.save)()
    assert (await (await agent_for(user, "first")).wait_for_mcp_servers())["servers"] == {}


async def test_an_sse_server_is_reached_with_the_auto_transport(model, user):
    server = WeatherServer("sse")
    try:
        agent = await agent_for(user)
        added = await agent.add_mcp_server("weather", server.url)
        state = await agent.wait_for_mcp_servers()
        assert state["servers"][added["id"]]["state"] == "ready"
        assert {t["name"] for t in state["tools"]} == {"get_weather", "list_cities"}
    finally:
        server.kill()


async def test_a_tool_error_of_the_server_reaches_the_model_and_the_turn_goes_on(model, user, weather_server):
    agent = await agent_for(user)
    added = await agent.add_mcp_server("weather", weather_server.url)
    model.script(
        Reply.tool_calls([ToolCallSpec(namespaced(added["id"], "get_weather"), '{"city": "Rome"}', id="r")]),
        Reply.text("There is no station in Rome."),
    )
    result = await agent.save_messages([user_message("Weather in Rome?", "u1")])
    [part] = tool_parts(result.message)
    assert part["state"] == "output-error"
    assert "No weather station in Rome" in part["errorText"]
    assert result.message["parts"][-1]["text"] == "There is no station in Rome."


async def test_input_that_does_not_match_the_servers_schema_is_a_tool_error(model, user, weather_server):
    agent = await agent_for(user)
    added = await agent.add_mcp_server("weather", weather_server.url)
    model.script(Reply.tool_calls([ToolCallSpec(namespaced(added["id"], "get_weather"), '{"town": 3}', id="bad")]), Reply.text("Sorry."))
    result = await agent.save_messages([user_message("Weather?", "u1")])
    [part] = tool_parts(result.message)
    assert part["state"] == "output-error"
    assert "'city' is a required property" in part["errorText"]


async def test_a_server_that_dies_mid_session_fails_its_calls_and_shows_failed(model, user, weather_server, open_socket, token):
    agent = await agent_for(user)
    added = await agent.add_mcp_server("weather", weather_server.url)
    await agent.wait_for_mcp_servers()
    socket_ = await open_socket("/agents/mcp-tools-agent/mcp", token=token, wait_ready=True)
    weather_server.kill()
    model.script(
        Reply.tool_calls([ToolCallSpec(namespaced(added["id"], "get_weather"), '{"city": "Paris"}', id="w")]),
        Reply.text("The weather service is down."),
    )
    result = await agent.save_messages([user_message("Weather in Paris?", "u1")])
    [part] = tool_parts(result.message)
    assert part["state"] == "output-error" and part["errorText"].startswith("Tool ")
    assert "MCP server weather is unavailable" in part["errorText"]
    assert result.message["parts"][-1]["text"] == "The weather service is down."
    frames = await socket_.until(lambda f: f["type"] == "cf_agent_mcp_servers" and f["mcp"]["servers"][added["id"]]["state"] == "failed")
    failed = frames[-1]["mcp"]
    assert failed["servers"][added["id"]]["error"] and failed["tools"] == []

    model.script(Reply.text("No tools now."))  # the next turn tries again, leaves the server out and runs
    await agent.save_messages([user_message("And now?", "u2")])
    assert model.requests[-1].get("tools") is None or all(not t["function"]["name"].startswith("tool_") for t in model.requests[-1]["tools"])


async def test_an_unreachable_server_is_failed_and_never_breaks_a_turn(model, user, settings):
    settings.AGENTS_MCP_CONNECT_TIMEOUT = 3
    agent = await agent_for(user)
    added = await agent.add_mcp_server("nowhere", f"http://127.0.0.1:{free_port()}/mcp")
    model.script(Reply.text("Hello."))
    result = await agent.save_messages([user_message("Hi", "u1")])
    assert result.message["parts"][-1]["text"] == "Hello."
    server = (await agent.get_mcp_servers())["servers"][added["id"]]
    assert server["state"] == "failed" and "ConnectError" in server["error"]


async def test_the_state_frame_follows_servers_added_and_removed_over_rpc(model, user, weather_server, open_socket, token):
    socket_ = await open_socket("/agents/mcp-tools-agent/mcp", token=token)
    connect_frames = await socket_.until(lambda f: f["type"] == "cf_agent_mcp_servers")
    assert connect_frames[-1]["mcp"] == {"prompts": [], "resources": [], "servers": {}, "tools": []}
    await socket_.send({"type": "rpc", "id": "1", "method": "add_server", "args": ["weather", weather_server.url]})
    ready = await socket_.until(lambda f: f["type"] == "cf_agent_mcp_servers" and any(s["state"] == "ready" for s in f["mcp"]["servers"].values()))
    reply = next(f for f in socket_.received if f["type"] == "rpc" and f["id"] == "1")
    server_id = reply["result"]["id"]
    mcp = ready[-1]["mcp"]
    assert mcp["servers"][server_id] == {
        "name": "weather", "server_url": weather_server.url, "auth_url": None, "state": "ready", "error": None,
        "instructions": "Weather lookups for European cities.", "capabilities": mcp["servers"][server_id]["capabilities"],
    }
    assert {"tools", "prompts", "resources"} <= set(mcp["servers"][server_id]["capabilities"])
    assert {(t["name"], t["serverId"]) for t in mcp["tools"]} == {("get_weather", server_id), ("list_cities", server_id)}
    assert mcp["prompts"][0]["name"] == "forecast" and mcp["resources"][0]["uri"] == "weather://stations"
    assert any(f["type"] == "cf_agent_mcp_servers" and f["mcp"]["servers"].get(server_id, {}).get("state") == "connecting" for f in socket_.received)

    second = await open_socket("/agents/mcp-tools-agent/mcp", token=token)
    assert (await second.until(lambda f: f["type"] == "cf_agent_mcp_servers"))[-1]["mcp"]["servers"][server_id]["state"] == "ready"

    await socket_.send({"type": "rpc", "id": "2", "method": "remove_server", "args": [server_id]})
    emptied = await socket_.until(lambda f: f["type"] == "cf_agent_mcp_servers" and f["mcp"]["servers"] == {})
    assert emptied[-1]["mcp"]["tools"] == []
    assert not await sync_to_async(McpServer.objects.filter(pk=server_id).exists)()


async def test_mcp_tools_pass_through_before_tool_call_like_any_server_tool(model, user, weather_server, monkeypatch):
    import tests.mcp_agents as agents

    monkeypatch.setattr(agents.McpToolsAgent, "blocked", {"get_weather"})
    agent = await agent_for(user)
    added = await agent.add_mcp_server("weather", weather_server.url)
    model.script(Reply.tool_calls([ToolCallSpec(namespaced(added["id"], "get_weather"), '{"city": "Paris"}', id="b")]), Reply.text("OK."))
    result = await agent.save_messages([user_message("Weather?", "u1")])
    assert tool_parts(result.message)[0]["output"] == "Weather lookups are switched off."


async def test_mcp_tools_can_need_approval(model, user, weather_server, monkeypatch):
    import tests.mcp_agents as agents

    monkeypatch.setattr(agents.McpToolsAgent, "mcp_tool_needs_approval", True)
    agent = await agent_for(user)
    added = await agent.add_mcp_server("weather", weather_server.url)
    model.script(Reply.tool_calls([ToolCallSpec(namespaced(added["id"], "get_weather"), '{"city": "Paris"}', id="a")]))
    result = await agent.save_messages([user_message("Weather?", "u1")])
    [part] = tool_parts(result.message)
    assert part["type"] == "dynamic-tool" and part["state"] == "approval-requested"


async def test_include_mcp_tools_false_leaves_them_out(model, user, weather_server):
    agent = await agent_for(user, segment="no-mcp-tools-agent")
    await agent.add_mcp_server("weather", weather_server.url)
    await agent.wait_for_mcp_servers()
    model.script(Reply.text("Hi."))
    await agent.save_messages([user_message("Hi", "u1")])
    assert not any(t["function"]["name"].startswith("tool_") for t in model.requests[0].get("tools") or [])


async def test_only_http_urls_can_be_added_at_run_time(user):
    agent = await agent_for(user)
    for url in ("file:///etc/passwd", "python -m server", ""):
        with pytest.raises(ValueError, match="http:// or https://"):
            await agent.add_mcp_server("bad", url)
    with pytest.raises(ValueError, match="transport must be"):
        await agent.add_mcp_server("bad", "http://127.0.0.1:1/mcp", transport="stdio")
    assert (await agent.get_mcp_servers())["servers"] == {}


async def test_a_server_behind_oauth_is_authenticating_until_the_user_authorizes_then_ready(model, user, open_socket, token, async_client, settings):
    import httpx

    settings.AGENTS_PUBLIC_URL = "http://testserver"
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.mcp_servers.secured", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        WeatherServer.wait_for_port(port, process)
        socket_ = await open_socket("/agents/mcp-tools-agent/mcp", token=token, wait_ready=True)
        agent = await agent_for(user)
        added = await agent.add_mcp_server("secured", f"http://127.0.0.1:{port}/mcp")
        frames = await socket_.until(lambda f: f["type"] == "cf_agent_mcp_servers" and f["mcp"]["servers"].get(added["id"], {}).get("state") == "authenticating")
        auth_url = frames[-1]["mcp"]["servers"][added["id"]]["auth_url"]
        assert auth_url.startswith(f"http://127.0.0.1:{port}/authorize?")
        assert "redirect_uri=http%3A%2F%2Ftestserver%2Fagents%2Fmcp-tools-agent%2Fmcp%2Fcallback" in auth_url

        # The user authorizes; the authorization server sends their browser to our callback.
        async with httpx.AsyncClient() as browser:
            approved = await browser.get(auth_url)
        callback = httpx.URL(approved.headers["location"])
        assert callback.path == "/agents/mcp-tools-agent/mcp/callback"
        await async_client.aforce_login(user)
        page = await async_client.get(f"{callback.path}?{callback.query.decode()}")
        assert page.status_code == 200 and b"secured is authorized" in page.content
        assert (await async_client.get(f"{callback.path}?code=x&state=forged")).status_code == 400

        ready = await socket_.until(lambda f: f["type"] == "cf_agent_mcp_servers" and f["mcp"]["servers"][added["id"]]["state"] == "ready", timeout=30)
        row = await sync_to_async(McpServer.objects.get)(pk=added["id"])
        access_token = row.oauth["tokens"]["access_token"]
        assert ready[-1]["mcp"]["servers"][added["id"]]["auth_url"] is None
        assert all(access_token not in json.dumps(frame) for frame in socket_.received)

        model.script(Reply.tool_calls([ToolCallSpec(namespaced(added["id"], "secret"), "{}", id="s")]), Reply.text("Got it."))
        result = await agent.save_messages([user_message("Tell me the secret", "u1")])
        assert tool_parts(result.message)[0]["output"]["content"][0]["text"] == "the eagle has landed"
    finally:
        process.kill()
        process.wait(timeout=10)


def weather_responder(request: dict[str, Any]) -> Reply:
    """The model calls the MCP weather tool it is offered (its name holds the server id), then answers."""
    if request["messages"][-1]["role"] == "tool":
        return Reply.text("It is 18 degrees in Paris.")
    name = next(t["function"]["name"] for t in request.get("tools") or [] if t["function"]["name"].endswith("_get_weather"))
    return Reply.tool_calls([ToolCallSpec(name, '{"city": "Paris"}', id="w")])


def test_the_official_client_gets_the_mcp_state_and_renders_the_mcp_tool_call(model, token, weather_server, monkeypatch):
    from tests.node_client import run_scenario
    from tests.plugins.live_server import start_live_server

    monkeypatch.setattr(model, "responder", weather_responder)
    server = start_live_server(model.base_url, {"AGENTS_CLASSES": "tests.mcp_agents.McpToolsAgent"})
    try:
        result = run_scenario("mcp", host=server.host, agent="McpToolsAgent", name="official", token=token, server="weather", url=weather_server.url)
    finally:
        server.stop()
    server_id = result["added"]["id"]
    states = [update["servers"][server_id]["state"] for update in result["updates"] if server_id in update["servers"]]
    assert result["updates"][0] == {"prompts": [], "resources": [], "servers": {}, "tools": []}
    assert states[0] == "connecting" and states[-1] == "ready"
    ready = result["updates"][-1]
    assert {(t["name"], t["serverId"]) for t in ready["tools"]} == {("get_weather", server_id), ("list_cities", server_id)}
    assert result["messages"] == result["serverMessages"]
    [part] = [p for p in result["messages"][-1]["parts"] if p.get("toolCallId") == "w"]
    assert part["type"] == "dynamic-tool" and part["toolName"].endswith("_get_weather") and part["state"] == "output-available"
    assert result["messages"][-1]["parts"][-1]["text"] == "It is 18 degrees in Paris."


async def test_a_server_answering_garbage_is_failed_and_the_turn_goes_on(model, user, settings):
    from tests.http_pages import serve_page

    settings.AGENTS_MCP_CONNECT_TIMEOUT = 5
    with serve_page(b"{this is not json-rpc", "application/json") as base_url:
        agent = await agent_for(user)
        added = await agent.add_mcp_server("garbage", base_url + "mcp")
        model.script(Reply.text("Still here."))
        result = await agent.save_messages([user_message("Hi", "u1")])
    assert result.message["parts"][-1]["text"] == "Still here."
    server = (await agent.get_mcp_servers())["servers"][added["id"]]
    assert server["state"] == "failed" and server["error"]
    assert not any(t["function"]["name"].startswith("tool_") for t in model.requests[0].get("tools") or [])


def test_tools_whose_input_schema_is_not_an_object_schema_are_left_out():
    from agents_app.mcp.tools import usable_schema

    assert usable_schema({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    assert usable_schema({"properties": {}})  # "type" defaults to object
    assert not usable_schema({"type": "string"})
    assert not usable_schema({"type": "object", "properties": {"x": {"type": 12}}})  # not a valid JSON Schema
    assert not usable_schema(["not", "a", "schema"])
