"""The tools the chat page runs in the browser: declared here once (name and description, as
an agent offers them to the model), implemented in static/chat.js under the same names. The
page renders a tool call as a browser-run form only for these; agents list them in `get_tools`.
"""
from __future__ import annotations

from agents_app.agents.tools import Tool, client_tool

getUserTimezone: Tool = client_tool("getUserTimezone", "Get the user's timezone from their browser.")
get_timezone: Tool = client_tool("get_timezone", "Get the IANA timezone the user's browser is set to.")
get_location: Tool = client_tool(
    "get_location", "Get the user's approximate location (latitude, longitude) from their browser, if they allow it."
)

BROWSER_TOOLS: dict[str, Tool] = {t.name: t for t in (getUserTimezone, get_timezone, get_location)}
