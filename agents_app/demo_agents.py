"""The agents a fresh install serves, mirroring the reference's examples.

* `ChatAgent` (/agents/chat-agent/<name>): Think-style; the framework runs the model loop
  with server tools (weather; a research tool that streams progress and citations as data
  parts), one that needs the user's approval, and browser tools (timezone, location) that
  the chat page's script answers, plus code mode (`execute`: JavaScript calling those tools).
* `MinimalChatAgent` (/agents/minimal-chat-agent/<name>): AIChatAgent-style; it writes its
  own `on_chat_message` and streams the model's reply.
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from agents_app.agents import (
    AIChatAgent,
    ChatOptions,
    ChatResponse,
    ContextBlockSpec,
    ThinkAgent,
    Tool,
    register_agent,
    stream_reply,
    tool,
    write_data,
)
from agents_app.sandbox.code_mode import WorkspaceState, create_execute_tool
from agents_app.ui.browser_tools import BROWSER_TOOLS

_CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "snowy")


@tool("Get the current weather for a city. Demo data: derived from the city name, not a forecast.")
def getWeather(city: str) -> dict[str, Any]:  # noqa: N802 - tool names follow the reference examples
    digest = int(hashlib.sha256(city.strip().lower().encode()).hexdigest(), 16)
    return {"city": city, "temperatureC": digest % 35 - 5, "condition": _CONDITIONS[digest % len(_CONDITIONS)]}


@tool("Delete a file from the user's workspace. Needs the user's approval first.", needs_approval=True)
def deleteFile(path: str) -> dict[str, Any]:  # noqa: N802
    return {"path": path, "deleted": True}


@tool("Look a topic up in the demo library. Reports its progress while it reads; returns the sources it used.")
async def research(topic: str) -> dict[str, Any]:
    sources = [
        {"url": f"https://en.wikipedia.org/wiki/{topic.strip().replace(' ', '_')}", "title": f"{topic} (Wikipedia)"},
        {"url": "https://developers.cloudflare.com/agents/", "title": "Cloudflare Agents documentation"},
    ]
    for step, status in enumerate(("Searching", "Reading sources", "Summarising"), start=1):
        write_data("progress", {"status": status, "percent": step * 100 // 3}, id="research")
        await asyncio.sleep(0.3)
    for index, source in enumerate(sources):
        write_data("citation", source, id=f"source-{index}")
    return {"topic": topic, "sources": [s["url"] for s in sources]}


@register_agent
class ChatAgent(ThinkAgent):
    title = "Assistant"
    description = "A Think-style assistant with a server tool, an approval tool, a browser tool and code mode."

    def get_tools(self) -> dict[str, Tool]:
        tools = {**{t.name: t for t in (getWeather, research, deleteFile)}, **BROWSER_TOOLS}
        # Code mode: the model may also write JavaScript calling the server tools and the workspace.
        return {**tools, "execute": create_execute_tool(tools=tools, state=WorkspaceState(self.workspace))}


@register_agent
class MemoryAssistant(ThinkAgent):
    title = "Assistant with memory"
    description = "Keeps what it learns about you in a memory block you can read and edit; long chats are summarised."
    system_prompt = (
        "You are a friendly assistant. When the user tells you something worth remembering about them, "
        "store it with set_context in the memory block; use what it holds."
    )
    context_blocks = (
        ContextBlockSpec("soul", provider=lambda agent: "Warm, concise and honest. Never invent facts about the user."),
        ContextBlockSpec("memory", description="What you know about the user", max_tokens=400),
    )
    compact_after_tokens = 8000


@register_agent
class MinimalChatAgent(AIChatAgent):
    title = "Minimal chat"
    description = "An AIChatAgent-style agent that writes its own turn handler."

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        return stream_reply(options.messages, system="You are a friendly, brief assistant.")
