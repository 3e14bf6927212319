"""UIMessages as HTML for the server-rendered chat.

Model output never reaches the page unescaped: finished assistant text goes through the
sanitising markdown renderer, text still streaming and everything users type is escaped by
the template engine."""
from __future__ import annotations

import json
from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from agents_app.protocol.messages import UIMessage, is_tool_part, tool_name_of
from agents_app.storage.models import Session
from agents_app.ui import attachments
from agents_app.ui.browser_tools import BROWSER_TOOLS
from agents_app.ui.markdown import render_markdown
from agents_app.ui.message_stats import AnswerStats, answer_stats, model_choices
from agents_app.ui.sending import queued

# The approval card's buttons: (scope sent to the page socket, label).
APPROVAL_SCOPES = (("once", "Approve once"), ("chat", "Always in this chat"), ("agent", "Always for this agent"))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _link(url: Any) -> str | None:
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def _text_view(message: UIMessage, part: dict[str, Any]) -> dict[str, Any]:
    text = part.get("text", "")
    if message.get("role") == "assistant" and part.get("state") != "streaming":
        return {"kind": "markdown", "html": mark_safe(render_markdown(text))}  # noqa: S308 - sanitised by nh3
    return {"kind": "text", "text": text}


def _file_view(part: dict[str, Any]) -> dict[str, Any]:
    """An attached file: a thumbnail or a download link, served to its owner only."""
    metadata = attachments.part_metadata(part)
    key = metadata.get("attachment")
    return {
        "kind": "file",
        "filename": part.get("filename") or "file",
        "is_image": str(part.get("mediaType", "")).startswith("image/"),
        "href": attachments.download_path(key) if isinstance(key, str) else _link(part.get("url")),
        "workspace_path": metadata.get("workspacePath", ""),
    }


def _part_view(message: UIMessage, part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type", "")
    if kind == "text":
        return _text_view(message, part)
    if kind == "reasoning":
        return {"kind": "reasoning", "text": part.get("text", "")}
    if kind == "file":
        return _file_view(part)
    if kind == "source-url":
        url = _link(part.get("url"))
        return {"kind": "source", "url": url, "title": part.get("title") or url} if url else None
    if is_tool_part(part):
        output = part.get("output")
        name = tool_name_of(part)
        return {
            "kind": "tool",
            "name": name,
            "part": part,
            "input_json": _pretty(part.get("input") or {}),
            "output_json": _pretty(output) if output is not None else "",
            "runs_in_browser": name in BROWSER_TOOLS and part.get("state") == "input-available",
        }
    if kind.startswith("data-"):
        data = part.get("data")
        fields = data if isinstance(data, dict) else {}
        percent = fields.get("percent")
        return {
            "kind": "data",
            "name": kind[5:],
            "data": _pretty(data),
            "percent": max(0, min(100, percent)) if isinstance(percent, int | float) else None,
            "status": fields.get("status") or fields.get("label"),
            "url": _link(fields.get("url")),
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


def message_text(message: UIMessage) -> str:
    """The message's text parts as the author wrote them (what Copy puts on the clipboard)."""
    return "\n\n".join(p.get("text", "") for p in message.get("parts", []) if p.get("type") == "text")


def render_message_html(
    message: UIMessage,
    *,
    actions: bool = True,
    swap_oob: bool = False,
    stats: AnswerStats | None = None,
    answered_by: str = "",
    models: list[str] | None = None,
) -> SafeString:
    """`actions` off for the message still streaming; `swap_oob` renders the message as an
    htmx out-of-band replacement of its own element; `stats`, `answered_by` and `models`
    (the regenerate menu) for finished answers."""
    parts = [view for part in message.get("parts", []) if (view := _part_view(message, part)) is not None]
    return render_to_string(
        "chat/_message.html",
        {
            "message": message,
            "parts": parts,
            "branch": _branch_view(message),
            "actions": actions,
            "swap_oob": swap_oob,
            "copy_text": message_text(message),
            "summarised": bool((message.get("metadata") or {}).get("compaction")),
            "approval_scopes": APPROVAL_SCOPES,
            "stats": stats,
            "answered_by": answered_by,
            "models": models or [],
        },
    )


def render_conversation(session: Session, messages: list[UIMessage], *, swap_oob: bool = False) -> list[SafeString]:
    """Finished messages with each answer's model, tokens, cost and time to first token."""
    stats = answer_stats(session, [m["id"] for m in messages if m.get("role") == "assistant"])
    models = model_choices() if stats or any(m.get("role") == "assistant" for m in messages) else []
    answered_by = session.agent.title or session.agent.slug
    return [
        render_message_html(m, swap_oob=swap_oob, stats=stats.get(m["id"]), answered_by=answered_by, models=models)
        for m in messages
    ]


def render_queue(session: Session, *, swap_oob: bool = False) -> SafeString:
    """The queued bubbles; `swap_oob` wraps them as an out-of-band replacement of #queue."""
    items = render_to_string(
        "chat/_queue.html", {"queued": queued(session), "agent": session.agent.slug, "name": session.name}
    )
    if not swap_oob:
        return mark_safe(items)  # noqa: S308 - rendered by the template engine
    return mark_safe(f'<div id="queue" hx-swap-oob="innerHTML">{items}</div>')  # noqa: S308
