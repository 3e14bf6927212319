"""A conversation as a download: Markdown to read, JSON (the UIMessages) to process."""
from __future__ import annotations

import json
from typing import Any

from agents_app.protocol.messages import UIMessage, is_tool_part, tool_name_of
from agents_app.storage.models import Session


def _part_markdown(part: dict[str, Any]) -> str | None:
    kind = part.get("type", "")
    if kind == "text":
        return part.get("text", "")
    if kind == "reasoning":
        return "> *Reasoning:* " + part.get("text", "").replace("\n", "\n> ")
    if kind == "source-url":
        return f"Source: <{part.get('url', '')}>"
    if is_tool_part(part):
        lines = [f"**Tool `{tool_name_of(part)}`** ({part.get('state', '')})", "", "```json", json.dumps(part.get("input") or {}, indent=2, ensure_ascii=False)]
        if "output" in part:
            lines += ["```", "", "Output:", "", "```json", json.dumps(part["output"], indent=2, ensure_ascii=False, default=str)]
        lines.append("```")
        if part.get("errorText"):
            lines += ["", f"Error: {part['errorText']}"]
        return "\n".join(lines)
    return None


def as_markdown(session: Session, messages: list[UIMessage]) -> str:
    sections = [f"# {session.title or session.name}", "", f"Agent: {session.agent.slug}"]
    for message in messages:
        parts = [text for part in message.get("parts", []) if (text := _part_markdown(part))]
        sections += ["", f"## {message['role'].capitalize()}", "", "\n\n".join(parts)]
    return "\n".join(sections) + "\n"


def as_json(session: Session, messages: list[UIMessage]) -> str:
    document = {"agent": session.agent.slug, "name": session.name, "title": session.title, "messages": messages}
    return json.dumps(document, indent=2, ensure_ascii=False, default=str)
