"""UIMessages as HTML for the server-rendered chat. Model output is always escaped by the
template engine: text is never marked safe, so markup in an answer shows as text."""
from __future__ import annotations

import json
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from agents_app.protocol.messages import UIMessage, is_tool_part, tool_name_of


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _part_view(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type", "")
    if kind in ("text", "reasoning"):
        return {"kind": kind, "text": part.get("text", "")}
    if is_tool_part(part):
        output = part.get("output")
        return {
            "kind": "tool",
            "name": tool_name_of(part),
            "part": part,
            "input_json": _pretty(part.get("input") or {}),
            "output_json": _pretty(output) if output is not None else "",
        }
    if kind.startswith("data-"):
        data = part.get("data")
        fields = data if isinstance(data, dict) else {}
        return {
            "kind": "data",
            "name": kind[5:],
            "data": _pretty(data),
            "percent": fields.get("percent"),
            "url": fields.get("url") if str(fields.get("url", "")).startswith(("https://", "http://")) else None,
            "title": fields.get("title"),
        }
    return None


def _branch_view(message: UIMessage) -> dict[str, Any] | None:
    branch = (message.get("metadata") or {}).get("branch")
    if not branch:
        return None
    index, siblings = branch["index"], branch["siblings"]
    return {
        "position": index + 1,
        "count": branch["count"],
        "previous": siblings[index - 1] if index > 0 else None,
        "next": siblings[index + 1] if index + 1 < len(siblings) else None,
    }


def render_message_html(message: UIMessage, *, actions: bool = True, swap_oob: bool = False) -> SafeString:
    """`swap_oob` renders the message as an htmx out-of-band replacement of its own element."""
    parts = [view for part in message.get("parts", []) if (view := _part_view(part)) is not None]
    return render_to_string(
        "chat/_message.html",
        {"message": message, "parts": parts, "branch": _branch_view(message), "actions": actions, "swap_oob": swap_oob},
    )
