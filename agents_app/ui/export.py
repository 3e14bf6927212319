"""A conversation as a download, and back: Markdown of the conversation as shown (the active
path) to read, and JSON of the whole message tree (every branch, the active leaf) that
imports as a new conversation of the importer's."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents_app.protocol.messages import InvalidMessage, UIMessage, is_tool_part, normalize_messages, tool_name_of
from agents_app.turns.instances import UnknownAgent, resolve_session
from agents_app.storage import transcript
from agents_app.storage.models import Message, Session


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


EXPORT_FORMAT = "agents-conversation"
EXPORT_VERSION = 1
MAX_IMPORTED_MESSAGES = 5000


class ImportRefused(ValueError):
    """The file is not a conversation this page exported, or breaks a limit."""


def as_json(session: Session) -> str:
    """Every message of the tree, parents before children, with its parent's id."""
    nodes = Message.objects.filter(session=session).order_by("id")
    uids = dict(nodes.values_list("pk", "uid"))
    messages = []
    for node in nodes:
        message = transcript.strip_computed_metadata(node.as_ui_message())
        messages.append({**message, "parentId": uids.get(node.parent_id), "createdAt": node.created_at.isoformat()})
    leaf_id = Session.objects.filter(pk=session.pk).values_list("active_leaf_id", flat=True).first()
    document = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "agent": session.agent.slug,
        "name": session.name,
        "title": session.title,
        "activeLeaf": uids.get(leaf_id),
        "messages": messages,
    }
    return json.dumps(document, indent=2, ensure_ascii=False, default=str)


def _parse(raw: bytes) -> dict[str, Any]:
    if len(raw) > settings.AGENTS_IMPORT_MAX_BYTES:
        raise ImportRefused(f"The file is {len(raw)} bytes; imports are limited to {settings.AGENTS_IMPORT_MAX_BYTES} bytes.")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ImportRefused("The file is not JSON.") from error
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ImportRefused("The file is not a conversation exported from this chat (Export JSON).")
    if document.get("version") != EXPORT_VERSION:
        raise ImportRefused(f"Conversation files of version {document.get('version')!r} cannot be imported here.")
    return document


def _validated_tree(document: dict[str, Any]) -> tuple[list[UIMessage], list[str | None], str | None]:
    raw = document.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ImportRefused("The conversation has no messages.")
    if len(raw) > MAX_IMPORTED_MESSAGES:
        raise ImportRefused(f"The conversation has {len(raw)} messages; at most {MAX_IMPORTED_MESSAGES} can be imported.")
    try:
        messages = normalize_messages(raw)
    except InvalidMessage as error:
        raise ImportRefused(f"The conversation is damaged: {error}") from error
    parents: list[str | None] = []
    seen: set[str] = set()
    for index, (item, message) in enumerate(zip(raw, messages, strict=True)):
        parent = item.get("parentId")
        if parent is not None and parent not in seen:
            raise ImportRefused(f"The conversation is damaged: message {index} answers a message that does not come before it.")
        parents.append(parent)
        seen.add(message["id"])
    leaf = document.get("activeLeaf")
    return messages, parents, leaf if leaf in seen else None


def _creation_times(document: dict[str, Any]) -> list[datetime]:
    """Each message's `createdAt` when it is a valid timestamp, else the time of the import."""
    now = timezone.now()
    times = []
    for item in document["messages"]:
        value = item.get("createdAt")
        try:
            parsed = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        times.append(parsed if parsed is not None and parsed.tzinfo is not None else now)
    return times


@transaction.atomic
def import_conversation(raw: bytes, owner: Any, name: str) -> Session:
    """A new session of `owner` holding the file's whole tree; nothing is stored when the
    file is refused."""
    document = _parse(raw)
    messages, parents, leaf_uid = _validated_tree(document)
    try:
        session = resolve_session(str(document.get("agent", "")), name, owner)
    except UnknownAgent as error:
        raise ImportRefused(f"This site has no agent {document.get('agent')!r} to continue the conversation with.") from error
    title = document.get("title") if isinstance(document.get("title"), str) else ""
    session.title = (title or "Imported conversation")[:200]
    written: dict[str, Message] = {}
    for message, parent, created in zip(messages, parents, _creation_times(document), strict=True):
        message = transcript.strip_computed_metadata(message)
        written[message["id"]] = Message.objects.create(
            session=session, uid=message["id"], parent=written.get(parent) if parent else None, role=message["role"],
            parts=message["parts"], metadata=message.get("metadata"), created_at=created,
        )
    session.active_leaf = written[leaf_uid] if leaf_uid else list(written.values())[-1]
    session.save(update_fields=["title", "active_leaf", "updated_at"])
    return session
