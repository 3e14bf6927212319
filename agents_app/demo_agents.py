"""The agents a fresh install serves, mirroring the reference's examples.

* `ChatAgent` (/agents/chat-agent/<name>): Think-style; the framework runs the model loop
  with three tools — one the server runs, one that needs the user's approval, one the
  browser answers.
* `MinimalChatAgent` (/agents/minimal-chat-agent/<name>): AIChatAgent-style; it writes its
  own `on_chat_message` and streams the model's reply.
"""
from __future__ import annotations

import hashlib
from typing import Any

from agents_app.providers.openai_chat import stream_reply
from agents_app.runtime.agent import AIChatAgent, ThinkAgent
from agents_app.runtime.registry import register_agent
from agents_app.runtime.tools import Tool, client_tool, tool
from agents_app.runtime.types import ChatOptions, ChatResponse

_CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "snowy")


@tool("Get the current weather for a city. Demo data: derived from the city name, not a forecast.")
def getWeather(city: str) -> dict[str, Any]:  # noqa: N802 - tool names follow the reference examples
    digest = int(hashlib.sha256(city.strip().lower().encode()).hexdigest(), 16)
    return {"city": city, "temperatureC": digest % 35 - 5, "condition": _CONDITIONS[digest % len(_CONDITIONS)]}


@tool("Delete a file from the user's workspace. Needs the user's approval first.", needs_approval=True)
def deleteFile(path: str) -> dict[str, Any]:  # noqa: N802
    return {"path": path, "deleted": True}


getUserTimezone: Tool = client_tool("getUserTimezone", "Get the user's timezone from their browser.")


@register_agent
class ChatAgent(ThinkAgent):
    title = "Assistant"
    description = "A Think-style assistant with a server tool, an approval tool and a browser tool."

    def get_tools(self) -> dict[str, Tool]:
        return {t.name: t for t in (getWeather, deleteFile, getUserTimezone)}


@register_agent
class MinimalChatAgent(AIChatAgent):
    title = "Minimal chat"
    description = "An AIChatAgent-style agent that writes its own turn handler."

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        return stream_reply(options.messages, system="You are a friendly, brief assistant.")
