"""Assembling an assistant UIMessage from UI message stream chunks (protocol §10.5, §10.7).

The server keeps its own copy of the streaming message so that it can persist it, rebuild
it from stored chunks after a restart, and rewrite chunks before they are stored and
broadcast (the stored string is exactly the broadcast one).
"""
from __future__ import annotations

import copy
import json
from typing import Any

from agents_app.protocol.messages import SETTLED_TOOL_STATES, UIMessage, normalize_tool_input

Chunk = dict[str, Any]
_APPENDED_PART_CHUNKS = frozenset({"source-url", "source-document", "file"})


def _deep_merge(base: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base or {})
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class MessageBuilder:
    """Applies chunks to one assistant message; `rewrite` decides what is stored and broadcast."""

    def __init__(
        self,
        message: UIMessage,
        *,
        continuation: bool = False,
        finish_reason_in_metadata: bool = True,
    ) -> None:
        self.message: UIMessage = copy.deepcopy(message)
        self.message.setdefault("parts", [])
        self.continuation = continuation
        self.finish_reason_in_metadata = finish_reason_in_metadata
        self._open_parts: dict[tuple[str, str], dict[str, Any]] = {}
        self._continuation_text_merged = False

    @property
    def parts(self) -> list[dict[str, Any]]:
        return self.message["parts"]

    def find_tool_part(self, tool_call_id: str) -> dict[str, Any] | None:
        for part in reversed(self.parts):
            if part.get("toolCallId") == tool_call_id:
                return part
        return None

    # -- rewrites (§10.7) -------------------------------------------------------------
    def rewrite(self, chunk: Chunk) -> Chunk | None:
        """Return the chunk to store and broadcast, or None when it must be dropped."""
        kind = chunk.get("type")
        tool_call_id = chunk.get("toolCallId")
        if kind == "tool-input-start" and tool_call_id and self.find_tool_part(tool_call_id):
            return None
        if kind in {"tool-input-delta", "tool-input-available"} and tool_call_id:
            part = self.find_tool_part(tool_call_id)
            if part is not None and part.get("state") != "input-streaming":
                return None
        if kind in {"tool-output-denied", "tool-approval-request"} and tool_call_id:
            part = self.find_tool_part(tool_call_id)
            if part is not None and (part.get("state") in SETTLED_TOOL_STATES or part.get("state") == "approval-responded"):
                return None
        if kind == "start":
            chunk = dict(chunk)
            if self.continuation:
                chunk.pop("messageId", None)
            elif chunk.get("messageId"):
                self.message["id"] = chunk["messageId"]
            else:
                chunk["messageId"] = self.message["id"]
            return chunk
        if kind == "finish" and self.finish_reason_in_metadata and "finishReason" in chunk:
            chunk = dict(chunk)
            reason = chunk.pop("finishReason")
            chunk["messageMetadata"] = _deep_merge(chunk.get("messageMetadata"), {"finishReason": reason})
            return chunk
        if kind == "text-start" and self.continuation and not self._continuation_text_merged:
            self._continuation_text_merged = True
            last = self.parts[-1] if self.parts else None
            if last and last.get("type") == "text" and last.get("state") == "streaming":
                self._open_parts[("text", str(chunk.get("id")))] = last
                return None
        return chunk

    # -- application (§10.5, server flavour) ------------------------------------------
    def apply(self, chunk: Chunk) -> dict[str, Any] | None:
        """Apply a (rewritten) chunk. Returns the chunk back when it targets a tool call this
        message does not contain, so the caller can update the message that owns it."""
        kind = chunk.get("type", "")
        if kind in {"text-start", "reasoning-start"}:
            self._start_streaming_part(kind.split("-")[0], chunk)
        elif kind in {"text-delta", "reasoning-delta"}:
            part = self._streaming_part(kind.split("-")[0], chunk)
            part["text"] = part.get("text", "") + str(chunk.get("delta", ""))
        elif kind in {"text-end", "reasoning-end"}:
            part = self._streaming_part(kind.split("-")[0], chunk)
            part["state"] = "done"
            if chunk.get("providerMetadata"):
                part["providerMetadata"] = chunk["providerMetadata"]
            self._open_parts.pop((kind.split("-")[0], str(chunk.get("id"))), None)
        elif kind in {"start-step", "step-start"}:
            self.parts.append({"type": "step-start"})
        elif kind == "start":
            if chunk.get("messageId") and not self.continuation:
                self.message["id"] = chunk["messageId"]
            self._merge_metadata(chunk.get("messageMetadata"))
        elif kind in {"finish", "message-metadata"}:
            self._merge_metadata(chunk.get("messageMetadata"))
        elif kind.startswith("tool-"):
            return self._apply_tool_chunk(kind, chunk)
        elif kind.startswith("data-"):
            self._apply_data_chunk(kind, chunk)
        elif kind in _APPENDED_PART_CHUNKS:
            self.parts.append(dict(chunk))
        return None

    def _merge_metadata(self, metadata: Any) -> None:
        if isinstance(metadata, dict) and metadata:
            self.message["metadata"] = _deep_merge(self.message.get("metadata"), metadata)

    def _start_streaming_part(self, part_type: str, chunk: Chunk) -> dict[str, Any]:
        part: dict[str, Any] = {"type": part_type, "text": "", "state": "streaming"}
        if chunk.get("providerMetadata"):
            part["providerMetadata"] = chunk["providerMetadata"]
        self.parts.append(part)
        self._open_parts[(part_type, str(chunk.get("id")))] = part
        return part

    def _streaming_part(self, part_type: str, chunk: Chunk) -> dict[str, Any]:
        part = self._open_parts.get((part_type, str(chunk.get("id"))))
        if part is not None:
            return part
        for candidate in reversed(self.parts):
            if candidate.get("type") == part_type and candidate.get("state") == "streaming":
                return candidate
        # A delta without a start (e.g. rebuilt from a partial log): open the part now.
        return self._start_streaming_part(part_type, chunk)

    def _apply_tool_chunk(self, kind: str, chunk: Chunk) -> dict[str, Any] | None:
        tool_call_id = str(chunk.get("toolCallId", ""))
        part = self.find_tool_part(tool_call_id)
        if kind == "tool-input-start":
            if part is None:
                self.parts.append(self._new_tool_part(chunk, "input-streaming"))
        elif kind == "tool-input-available":
            if part is None:
                part = self._new_tool_part(chunk, "input-available")
                self.parts.append(part)
            if part.get("state") == "input-streaming" or part.get("state") == "input-available":
                part["state"] = "input-available"
                part["input"] = normalize_tool_input(chunk.get("input"))
        elif kind == "tool-input-error":
            if part is None:
                part = self._new_tool_part(chunk, "output-error")
                self.parts.append(part)
            if part.get("state") not in SETTLED_TOOL_STATES:
                part.update(state="output-error", errorText=str(chunk.get("errorText", "")))
                part["input"] = chunk.get("input")
        elif kind == "tool-approval-request":
            if part is None:
                return chunk
            if part.get("state") not in SETTLED_TOOL_STATES and part.get("state") != "approval-responded":
                part["state"] = "approval-requested"
                part["approval"] = {"id": chunk.get("approvalId")}
        elif kind in {"tool-output-available", "tool-output-error", "tool-output-denied"}:
            if part is None:
                return chunk
            apply_tool_outcome(part, chunk)
        return None

    @staticmethod
    def _new_tool_part(chunk: Chunk, state: str) -> dict[str, Any]:
        name = str(chunk.get("toolName", ""))
        part: dict[str, Any] = (
            {"type": "dynamic-tool", "toolName": name} if chunk.get("dynamic") else {"type": f"tool-{name}"}
        )
        part.update(toolCallId=str(chunk.get("toolCallId", "")), state=state)
        for key in ("providerExecuted", "title"):
            if key in chunk:
                part[key] = chunk[key]
        if chunk.get("providerMetadata"):
            part["callProviderMetadata"] = chunk["providerMetadata"]
        if state != "input-streaming":
            part["input"] = normalize_tool_input(chunk.get("input"))
        return part

    def _apply_data_chunk(self, kind: str, chunk: Chunk) -> None:
        if chunk.get("transient"):
            return
        data_id = chunk.get("id")
        if data_id is not None:
            for part in self.parts:
                if part.get("type") == kind and part.get("id") == data_id:
                    part["data"] = chunk.get("data")
                    return
        part = {"type": kind}
        if data_id is not None:
            part["id"] = data_id
        if "data" in chunk:
            part["data"] = chunk["data"]
        self.parts.append(part)

    def finalize(self) -> UIMessage:
        """The message as persisted: streaming parts that never ended are kept as they are."""
        return copy.deepcopy(self.message)


def apply_tool_outcome(part: dict[str, Any], chunk: Chunk) -> bool:
    """Apply a tool-output-* chunk to a part; first write wins for settled parts.
    Returns True when the part changed."""
    kind = chunk.get("type")
    state = part.get("state")
    if kind == "tool-output-denied":
        if state in SETTLED_TOOL_STATES or state == "approval-responded":
            return False
        part["state"] = "output-denied"
        part["approval"] = {**(part.get("approval") or {}), "approved": False}
        return True
    if state in SETTLED_TOOL_STATES and not part.get("preliminary"):
        return False
    if kind == "tool-output-available":
        part["state"] = "output-available"
        part["output"] = chunk.get("output")
        if chunk.get("preliminary"):
            part["preliminary"] = True
        else:
            part.pop("preliminary", None)
        part.pop("errorText", None)
    else:
        part["state"] = "output-error"
        part["errorText"] = str(chunk.get("errorText", ""))
        part.pop("output", None)
    return True


def rebuild_message(message_id: str, chunk_bodies: list[str], *, base: UIMessage | None = None) -> UIMessage:
    """Reconstruct a message from its stored chunk log (orphaned streams after a restart)."""
    continuation = base is not None
    builder = MessageBuilder(base or {"id": message_id, "role": "assistant", "parts": []}, continuation=continuation)
    for body in chunk_bodies:
        try:
            chunk = json.loads(body)
        except ValueError:
            continue
        if isinstance(chunk, dict):
            builder.apply(chunk)
    return builder.finalize()
