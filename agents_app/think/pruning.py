"""Lighter histories for the model; what is stored never changes.

`truncate_older_messages` is what every Think turn sends (think.md §4 step 5): in all but the
last few messages, long tool outputs are cut and the model is told it can call the tool again;
very long texts are cut too.

`prune_messages` is the AI SDK's `pruneMessages` for agent authors (e.g. an AIChatAgent's
`on_chat_message` before `stream_reply`, or a Think `prepare_step`): drop reasoning, tool calls
with their results, and messages left empty. It takes UI messages (`parts`) or chat-completions
messages (`content`, `tool_calls`, `role: "tool"`) and returns the same kind.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any, Literal

from agents_app.protocol.messages import UIMessage, is_tool_part, tool_name_of
from agents_app.think.context_window import PRUNED_TOOL_OUTPUT_CHARS, truncated_output

KEEP_LAST_MESSAGES = 4
TEXT_PART_LIMIT = 10_000

ReasoningOption = Literal["all", "before-last-message", "none"]
# "all" | "before-last-message" | "before-last-N-messages" | "none", or a list of
# {"type": <one of those>, "tools": [names]} rules for some tools only.
ToolCallsOption = str | Sequence[dict[str, Any]]
_BEFORE_LAST_N = re.compile(r"^before-last-(\d+)-messages$")


def truncate_older_messages(messages: list[UIMessage], keep_last: int = KEEP_LAST_MESSAGES) -> list[UIMessage]:
    """All but the last `keep_last` messages with tool outputs over 500 characters cut (the
    model reads that it was truncated and can re-run the tool) and text parts over 10,000
    characters cut with a `... [truncated N chars]` suffix. Unchanged messages are shared."""
    result: list[UIMessage] = []
    cutoff = len(messages) - keep_last
    for index, message in enumerate(messages):
        if index >= cutoff:
            result.append(message)
            continue
        parts = [_truncated_part(part) for part in message.get("parts", [])]
        changed = any(new is not old for new, old in zip(parts, message.get("parts", []), strict=True))
        result.append({**message, "parts": parts} if changed else message)
    return result


def _truncated_part(part: dict[str, Any]) -> dict[str, Any]:
    if is_tool_part(part) and part.get("state") == "output-available":
        cut = truncated_output(part.get("output"), tool_name_of(part), PRUNED_TOOL_OUTPUT_CHARS)
        return part if cut is None else {**part, "output": cut}
    text = part.get("text")
    if part.get("type") == "text" and isinstance(text, str) and len(text) > TEXT_PART_LIMIT:
        return {**part, "text": f"{text[:TEXT_PART_LIMIT]}... [truncated {len(text) - TEXT_PART_LIMIT} chars]"}
    return part


def _scope(option: str) -> int | None:
    """How many trailing messages a rule spares: 0 for "all", None for "none"."""
    if option == "all":
        return 0
    if option == "before-last-message":
        return 1
    if option == "none":
        return None
    match = _BEFORE_LAST_N.match(option)
    if match is None:
        raise ValueError(f"Unknown prune option {option!r}")
    return int(match.group(1))


def _is_ui(messages: list[dict[str, Any]]) -> bool:
    return any("parts" in m for m in messages)


def _call_ids(message: dict[str, Any]) -> set[str]:
    """The tool calls a message takes part in (as the call, its result or both)."""
    if "parts" in message:
        return {p.get("toolCallId", "") for p in message["parts"] if is_tool_part(p)}
    ids = {c.get("id", "") for c in message.get("tool_calls") or []}
    if message.get("role") == "tool":
        ids.add(message.get("tool_call_id", ""))
    return ids


def _names(messages: list[dict[str, Any]]) -> dict[str, str]:
    names: dict[str, str] = {}
    for message in messages:
        for part in message.get("parts", []):
            if is_tool_part(part):
                names[part.get("toolCallId", "")] = tool_name_of(part)
        for call in message.get("tool_calls") or []:
            names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
    return names


def _drop_calls(message: dict[str, Any], doomed: set[str]) -> dict[str, Any] | None:
    """The message without the doomed tool calls (None: nothing of it is left)."""
    if "parts" in message:
        parts = [p for p in message["parts"] if not (is_tool_part(p) and p.get("toolCallId") in doomed)]
        return {**message, "parts": parts}
    if message.get("role") == "tool":
        return None if message.get("tool_call_id") in doomed else message
    calls = [c for c in message.get("tool_calls") or [] if c.get("id") not in doomed]
    pruned = {k: v for k, v in message.items() if k != "tool_calls"}
    return {**pruned, "tool_calls": calls} if calls else pruned


def _is_empty(message: dict[str, Any]) -> bool:
    if "parts" in message:
        return not [p for p in message["parts"] if p.get("type") != "step-start"]
    if message.get("role") == "tool" or message.get("tool_calls"):
        return False
    return not message.get("content")


def prune_messages(
    messages: list[dict[str, Any]],
    *,
    reasoning: ReasoningOption = "none",
    tool_calls: ToolCallsOption = "none",
    empty_messages: Literal["keep", "remove"] = "remove",
) -> list[dict[str, Any]]:
    """A pruned copy of `messages` (the AI SDK's pruneMessages, in snake_case).

    `reasoning`: drop reasoning from every assistant message ("all") or from all but the last
    ("before-last-message"). `tool_calls`: drop tool calls together with their results
    ("all", "before-last-message", "before-last-3-messages"…); a call that also appears in the
    spared trailing messages is kept everywhere. A list of {"type": …, "tools": [names]}
    applies each rule to those tools only. `empty_messages="remove"` then drops messages with
    nothing left in them.
    """
    pruned = [copy.deepcopy(m) for m in messages]
    ui = _is_ui(pruned)
    if reasoning != "none":
        spare = _scope(reasoning) or 0
        for message in pruned[: len(pruned) - spare]:
            if message.get("role") != "assistant":
                continue
            if ui:
                message["parts"] = [p for p in message["parts"] if p.get("type") != "reasoning"]
            else:
                message.pop("reasoning_content", None)
    rules = [{"type": tool_calls}] if isinstance(tool_calls, str) else list(tool_calls)
    names = _names(pruned)
    for rule in rules:
        spare = _scope(rule["type"])
        if spare is None:
            continue
        only = set(rule["tools"]) if rule.get("tools") else None
        kept = {i for m in (pruned[-spare:] if spare else []) for i in _call_ids(m)}
        doomed = {
            call_id
            for message in pruned[: len(pruned) - spare]
            for call_id in _call_ids(message)
            if call_id not in kept and (only is None or names.get(call_id) in only)
        }
        cut = len(pruned) - spare
        trimmed = [_drop_calls(m, doomed) for m in pruned[:cut]]
        pruned = [m for m in trimmed if m is not None] + pruned[cut:]
    if empty_messages == "remove":
        pruned = [m for m in pruned if not _is_empty(m)]
    return pruned
