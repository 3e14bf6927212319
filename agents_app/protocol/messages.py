"""UIMessage validation, legacy normalisation and sanitisation (protocol §10.1, §10.3, §11.2, §14)."""
from __future__ import annotations

import json
import uuid
from typing import Any

from agents_app.protocol.json_safety import UnsafeJSON, check_json

UIMessage = dict[str, Any]
ROLES = frozenset({"user", "assistant", "system"})
SETTLED_TOOL_STATES = frozenset({"output-available", "output-error", "output-denied"})
TOOL_STATES = frozenset(
    {"input-streaming", "input-available", "approval-requested", "approval-responded", *SETTLED_TOOL_STATES}
)
# Fields that must be strings when present, per part type (protocol §10.2).
_STRING_FIELDS = {
    "text": ("text",),
    "reasoning": ("text",),
    "file": ("mediaType", "url"),
    "source-url": ("url",),
    "source-document": ("mediaType",),
}
_LEGACY_TOOL_STATES = {
    "partial-call": "input-streaming",
    "call": "input-available",
    "result": "output-available",
    "error": "output-error",
}


class InvalidMessage(ValueError):
    """An incoming message that cannot be stored; the text says what is wrong."""


def is_tool_part(part: dict[str, Any]) -> bool:
    part_type = part.get("type", "")
    return isinstance(part_type, str) and (part_type.startswith("tool-") or part_type == "dynamic-tool")


def tool_name_of(part: dict[str, Any]) -> str:
    if part.get("type") == "dynamic-tool":
        return str(part.get("toolName", ""))
    return str(part["type"]).split("-", 1)[1]


def normalize_tool_input(value: Any) -> dict[str, Any]:
    """Providers reject non-object tool inputs on the next call, so coerce to an object."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _legacy_parts(raw: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if isinstance(raw.get("reasoning"), str) and raw["reasoning"]:
        parts.append({"type": "reasoning", "text": raw["reasoning"]})
    content = raw.get("content")
    if isinstance(content, str):
        parts.append({"type": "text", "text": content})
    elif isinstance(content, list):
        parts.extend(
            {"type": "text", "text": item["text"]}
            for item in content
            if isinstance(item, dict) and isinstance(item.get("text"), str)
        )
    for invocation in raw.get("toolInvocations") or []:
        if not isinstance(invocation, dict):
            continue
        state = _LEGACY_TOOL_STATES.get(invocation.get("state", ""), "input-available")
        part: dict[str, Any] = {
            "type": f"tool-{invocation.get('toolName', 'unknown')}",
            "toolCallId": str(invocation.get("toolCallId", "")),
            "state": state,
            "input": normalize_tool_input(invocation.get("args")),
        }
        if state == "output-available":
            part["output"] = invocation.get("result")
        parts.append(part)
    return parts


def _check_part_shape(part: dict[str, Any]) -> None:
    """The fields later code relies on have the types the UIMessage schema gives them."""
    part_type = part["type"]
    for key in _STRING_FIELDS.get(part_type, ()):
        if key in part and not isinstance(part[key], str):
            raise InvalidMessage(f"a {part_type} part needs a string '{key}'")
    if part_type in ("text", "reasoning") and "text" not in part:
        raise InvalidMessage(f"a {part_type} part needs a string 'text'")
    if not is_tool_part(part):
        return
    if not isinstance(part.get("toolCallId"), str) or not part["toolCallId"]:
        raise InvalidMessage(f"the tool part {part_type!r} needs a non-empty string 'toolCallId'")
    if part.get("state") not in TOOL_STATES:
        raise InvalidMessage(f"the tool part {part['toolCallId']!r} has an invalid state {part.get('state')!r}")
    if part_type == "dynamic-tool" and not isinstance(part.get("toolName"), str):
        raise InvalidMessage("a dynamic-tool part needs a string 'toolName'")
    for key in ("errorText", "title"):
        if key in part and part[key] is not None and not isinstance(part[key], str):
            raise InvalidMessage(f"the tool part {part['toolCallId']!r} needs a string '{key}'")
    if "approval" in part and part["approval"] is not None and not isinstance(part["approval"], dict):
        raise InvalidMessage(f"the tool part {part['toolCallId']!r} needs an object 'approval'")


def _normalize_part(part: Any) -> dict[str, Any]:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidMessage("every part must be an object with a string 'type'")
    _check_part_shape(part)
    if part["type"] == "file" and "data" in part and "url" not in part:
        media_type = part.get("mimeType") or part.get("mediaType") or "application/octet-stream"
        converted = {k: v for k, v in part.items() if k not in {"data", "mimeType"}}
        converted.update(mediaType=media_type, url=f"data:{media_type};base64,{part['data']}")
        return converted
    if is_tool_part(part) and part.get("state") != "input-streaming":
        if "input" in part or part.get("state") in {"input-available", "approval-requested"}:
            return {**part, "input": normalize_tool_input(part.get("input"))}
    return part


def normalize_message(raw: Any, index: int = 0) -> UIMessage:
    """Validate one incoming message, converting legacy (AI SDK v4) shapes; raise InvalidMessage."""
    if not isinstance(raw, dict):
        raise InvalidMessage(f"message {index} is not an object")
    try:
        check_json(raw)
    except UnsafeJSON as error:
        raise InvalidMessage(f"message {index}: {error}") from error
    role = raw.get("role")
    if role == "data":
        role = "system"
    if role not in ROLES:
        raise InvalidMessage(f"message {index} has an invalid role {role!r}")
    message_id = raw.get("id")
    if message_id is None or message_id == "":
        message_id = f"msg-{index}"
    if not isinstance(message_id, str):
        raise InvalidMessage(f"message {index} has a non-string id")
    if len(message_id) > 255:
        raise InvalidMessage(f"message {index} has an id longer than 255 characters")
    parts = raw.get("parts")
    if parts is None:
        parts = _legacy_parts(raw)
    if not isinstance(parts, list):
        raise InvalidMessage(f"message {index} has non-array 'parts'")
    try:
        normalized_parts = [_normalize_part(p) for p in parts]
    except InvalidMessage as error:
        raise InvalidMessage(f"message {index}: {error}") from error
    message: UIMessage = {"id": message_id, "role": role, "parts": normalized_parts}
    if raw.get("metadata") is not None and not isinstance(raw["metadata"], dict):
        raise InvalidMessage(f"message {index} has 'metadata' that is not an object")
    if raw.get("metadata") is not None:
        message["metadata"] = raw["metadata"]
    return message


def normalize_messages(raw: Any) -> list[UIMessage]:
    if not isinstance(raw, list):
        raise InvalidMessage("'messages' must be an array")
    messages = [normalize_message(item, index) for index, item in enumerate(raw)]
    seen: set[str] = set()
    for message in messages:
        if message["id"] in seen:
            raise InvalidMessage(f"duplicate message id {message['id']!r}")
        seen.add(message["id"])
    return messages


_OPENAI_BOOKKEEPING = frozenset({"itemId", "reasoningEncryptedContent"})


def _without_openai_bookkeeping(part: dict[str, Any]) -> dict[str, Any]:
    """`part` itself when it carries no OpenAI item ids or encrypted reasoning, else a copy
    without them (and without a metadata object they leave empty)."""
    cleaned = part
    for key in ("providerMetadata", "callProviderMetadata"):
        metadata = part.get(key)
        if not isinstance(metadata, dict) or not isinstance(metadata.get("openai"), dict):
            continue
        openai_meta = {k: v for k, v in metadata["openai"].items() if k not in _OPENAI_BOOKKEEPING}
        rest = {k: v for k, v in metadata.items() if k != "openai"}
        if openai_meta:
            rest["openai"] = openai_meta
        if cleaned is part:
            cleaned = dict(part)
        if rest:
            cleaned[key] = rest
        else:
            cleaned.pop(key)
    return cleaned


def sanitize_for_persistence(message: UIMessage) -> UIMessage:
    """Drop provider bookkeeping and empty reasoning before a write (protocol §11.2). A new
    message whose unchanged parts are shared with `message`, not copied: every turn's
    admission passes the whole conversation through here, and neither copy is edited after."""
    parts: list[dict[str, Any]] = []
    for part in message.get("parts", []):
        part = _without_openai_bookkeeping(part)
        if part.get("type") == "reasoning" and not str(part.get("text", "")).strip() and not part.get("providerMetadata"):
            continue
        parts.append(part)
    return {**message, "parts": parts}


def text_of(message: UIMessage) -> str:
    """The plain text of a message's text parts, for display, search and summaries."""
    return "".join(p.get("text", "") for p in message.get("parts", []) if p.get("type") == "text")


def user_text_message(text: str, message_id: str | None = None) -> UIMessage:
    """A user message with one text part, as a client would send it."""
    return {"id": message_id or uuid.uuid4().hex[:16], "role": "user", "parts": [{"type": "text", "text": text}]}
