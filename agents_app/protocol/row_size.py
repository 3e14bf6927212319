"""Keeping a stored message under the row-size limit (protocol §11.3).

First tool outputs are compacted structure-preservingly, then text parts are truncated,
oldest first; the metadata records what was changed so a client can tell.
"""
from __future__ import annotations

import copy
import json
from typing import Any

from agents_app.protocol.messages import UIMessage, is_tool_part

ROW_LIMIT_BYTES = 1_800_000
TOOL_OUTPUT_LIMIT = 1000
TEXT_PART_LIMIT = 1000


def _size(message: UIMessage) -> int:
    return len(json.dumps(message, ensure_ascii=False).encode())


def shrink_value(value: Any, budget: int) -> Any:
    """Cut a JSON value down to roughly `budget` characters, keeping its shape."""
    if isinstance(value, str):
        if len(value) <= budget:
            return value
        return value[:budget] + f"... [truncated {len(value) - budget} chars]"
    if isinstance(value, list):
        kept: list[Any] = []
        used = 0
        for item in value:
            encoded = len(json.dumps(item, ensure_ascii=False))
            if used + encoded > budget:
                kept.append(f"[{len(value) - len(kept)} more items truncated]")
                break
            kept.append(item)
            used += encoded
        return kept
    if isinstance(value, dict):
        shrunk = dict(value)
        original = len(json.dumps(value, ensure_ascii=False))
        per_key = max(budget // max(len(value), 1), 50)
        for key, item in value.items():
            if len(json.dumps(item, ensure_ascii=False)) > per_key:
                shrunk[key] = shrink_value(item, per_key)
        if len(json.dumps(shrunk, ensure_ascii=False)) < original:
            shrunk["__truncated"] = True
            shrunk["__truncatedChars"] = original - len(json.dumps(shrunk, ensure_ascii=False))
        return shrunk
    return value


def fit_row_size(message: UIMessage, limit: int = ROW_LIMIT_BYTES) -> UIMessage:
    if _size(message) <= limit:
        return message
    fitted = copy.deepcopy(message)
    metadata: dict[str, Any] = dict(fitted.get("metadata") or {})
    if fitted.get("role") == "assistant":
        compacted = []
        for part in fitted["parts"]:
            if is_tool_part(part) and part.get("state") == "output-available":
                if len(json.dumps(part.get("output"), ensure_ascii=False)) > TOOL_OUTPUT_LIMIT:
                    part["output"] = shrink_value(part.get("output"), TOOL_OUTPUT_LIMIT)
                    compacted.append(part.get("toolCallId"))
        if compacted:
            metadata["compactedToolOutputs"] = compacted
            fitted["metadata"] = metadata
    truncated = []
    for index, part in enumerate(fitted["parts"]):
        if _size(fitted) <= limit:
            break
        text = part.get("text")
        if part.get("type") == "text" and isinstance(text, str) and len(text) > TEXT_PART_LIMIT:
            part["text"] = f"[Text truncated for storage ({len(text)} chars). First 500 chars: {text[:500]}...]"
            truncated.append(index)
    if truncated:
        metadata["compactedTextParts"] = truncated
        fitted["metadata"] = metadata
    return fitted
