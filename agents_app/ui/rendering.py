"""UIMessages as HTML for the server-rendered chat. Model output is always escaped."""
from __future__ import annotations

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from agents_app.protocol.messages import UIMessage, is_tool_part, tool_name_of


def render_message_html(message: UIMessage) -> SafeString:
    parts = []
    for part in message.get("parts", []):
        if part.get("type") == "text":
            parts.append({"kind": "text", "text": part.get("text", "")})
        elif part.get("type") == "reasoning":
            parts.append({"kind": "reasoning", "text": part.get("text", "")})
        elif is_tool_part(part):
            parts.append({"kind": "tool", "name": tool_name_of(part), "part": part})
    return render_to_string("chat/_message.html", {"message": message, "parts": parts})
