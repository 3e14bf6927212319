"""UIMessages → OpenAI chat-completions messages (protocol §10.6, the convertToModelMessages equivalent)."""
from __future__ import annotations

import json
from typing import Any

from agents_app.protocol.messages import UIMessage, is_tool_part, normalize_tool_input, tool_name_of

DENIED_TOOL_TEXT = "Tool execution denied by user."
_SKIPPED_PARTS = ("data-", "source-")


def _workspace_path(part: dict[str, Any]) -> str | None:
    """Where the chat page copied an attached text, code or PDF file (ui/attachments.py)."""
    metadata = (part.get("providerMetadata") or {}).get("agents")
    path = metadata.get("workspacePath") if isinstance(metadata, dict) else None
    return path if isinstance(path, str) and path else None


def _user_content(message: UIMessage) -> str | list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for part in message.get("parts", []):
        if part.get("type") == "text":
            items.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "file" and str(part.get("mediaType", "")).startswith("image/"):
            items.append({"type": "image_url", "image_url": {"url": part.get("url", "")}})
        elif part.get("type") == "file" and (path := _workspace_path(part)):
            items.append({"type": "text", "text": f"[Attached file {part.get('filename') or path}: saved in your workspace as {path}; read it with your workspace tools.]\n"})
    if all(item["type"] == "text" for item in items):
        return "".join(item["text"] for item in items)
    return items


def _tool_result_content(part: dict[str, Any]) -> str | None:
    state = part.get("state")
    if state == "output-available":
        output = part.get("output")
        return output if isinstance(output, str) else json.dumps(output)
    if state == "output-error":
        return str(part.get("errorText", "Tool execution failed."))
    if state == "output-denied":
        reason = (part.get("approval") or {}).get("reason")
        return f"{DENIED_TOOL_TEXT} Reason: {reason}" if isinstance(reason, str) and reason.strip() else DENIED_TOOL_TEXT
    return None


def _assistant_steps(message: UIMessage) -> list[list[dict[str, Any]]]:
    steps: list[list[dict[str, Any]]] = [[]]
    for part in message.get("parts", []):
        if part.get("type") == "step-start":
            if steps[-1]:
                steps.append([])
            continue
        steps[-1].append(part)
    return [step for step in steps if step]


def _assistant_messages(message: UIMessage) -> list[dict[str, Any]]:
    converted: list[dict[str, Any]] = []
    for step in _assistant_steps(message):
        text = "".join(p.get("text", "") for p in step if p.get("type") == "text")
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for part in step:
            if not is_tool_part(part):
                continue
            content = _tool_result_content(part)
            if content is None:
                # Providers reject a tool call that has no result: unsettled calls are left out.
                continue
            calls.append(
                {
                    "id": part["toolCallId"],
                    "type": "function",
                    "function": {
                        "name": tool_name_of(part),
                        "arguments": json.dumps(normalize_tool_input(part.get("input"))),
                    },
                }
            )
            results.append({"role": "tool", "tool_call_id": part["toolCallId"], "content": content})
        if not text and not calls:
            continue
        entry: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            entry["tool_calls"] = calls
        converted.append(entry)
        converted.extend(results)
    return converted


def to_openai_messages(messages: list[UIMessage], system: str | None = None) -> list[dict[str, Any]]:
    converted: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        role = message.get("role")
        if role == "system":
            text = "".join(p.get("text", "") for p in message.get("parts", []) if p.get("type") == "text")
            converted.append({"role": "system", "content": text})
        elif role == "user":
            converted.append({"role": "user", "content": _user_content(message)})
        elif role == "assistant":
            converted.extend(_assistant_messages(message))
    return converted
