"""A small MCP server for the tests (and the README's demo): weather tools, a prompt and a
resource, over stdio, SSE or streamable HTTP.

    python -m tests.mcp_servers.weather --transport streamable-http --port 8931
"""
from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("weather", instructions="Weather lookups for European cities.")
TEMPERATURES = {"Paris": 18, "Berlin": 12, "Lisbon": 24}


@server.tool(description="Current temperature in a city, in degrees Celsius")
def get_weather(city: str) -> dict:
    if city not in TEMPERATURES:
        raise ToolError(f"No weather station in {city}")
    return {"city": city, "celsius": TEMPERATURES[city]}


@server.tool(description="Cities with a weather station")
def list_cities() -> list[str]:
    return sorted(TEMPERATURES)


@server.prompt(description="Ask for a forecast")
def forecast(city: str) -> str:
    return f"What will the weather be in {city} tomorrow?"


@server.resource("weather://stations", description="All stations")
def stations() -> str:
    return ", ".join(sorted(TEMPERATURES))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "sse", "streamable-http"], default="stdio")
    parser.add_argument("--port", type=int, default=8931)
    options = parser.parse_args()
    if options.transport == "stdio":
        server.run("stdio")
    else:
        server.run(options.transport, host="127.0.0.1", port=options.port)
