"""Client → server frames parsed into typed values (protocol §2, §5).

A frame the chat protocol does not recognise is returned as `AppMessage` for the agent's
own `on_message`; a frame that looks like a protocol frame but is malformed raises
`ProtocolError` with a message the client can read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents_app.protocol import frames, json_safety
from agents_app.protocol.messages import InvalidMessage, UIMessage, normalize_messages


# Turn.request_id's column width: a longer id could not be stored.
MAX_REQUEST_ID_LENGTH = 64
TRIGGERS = frozenset({"submit-message", "regenerate-message"})


class ProtocolError(ValueError):
    def __init__(self, message: str, *, frame_type: str | None = None, request_id: str | None = None):
        super().__init__(message)
        self.frame_type = frame_type
        self.request_id = request_id


@dataclass(frozen=True)
class ChatRequest:
    request_id: str
    messages: list[UIMessage]
    trigger: str
    client_tools: list[dict[str, Any]] | None
    body: dict[str, Any] | None


@dataclass(frozen=True)
class CancelRequest:
    request_id: str


@dataclass(frozen=True)
class ClearRequest:
    pass


@dataclass(frozen=True)
class SetMessages:
    messages: list[UIMessage]


@dataclass(frozen=True)
class ToolResult:
    tool_call_id: str
    tool_name: str
    output: Any
    is_error: bool
    error_text: str | None
    auto_continue: bool
    client_tools: list[dict[str, Any]] | None


@dataclass(frozen=True)
class ToolApproval:
    tool_call_id: str
    approved: bool
    auto_continue: bool


@dataclass(frozen=True)
class ResumeRequest:
    probe_id: str | None


@dataclass(frozen=True)
class ResumeAck:
    request_id: str


@dataclass(frozen=True)
class StateUpdate:
    state: Any


@dataclass(frozen=True)
class RpcCall:
    call_id: str
    method: str
    args: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class AppMessage:
    """Anything that is not a protocol frame: non-JSON text or an unknown `type`."""

    text: str
    data: Any


InboundFrame = (
    ChatRequest
    | CancelRequest
    | ClearRequest
    | SetMessages
    | ToolResult
    | ToolApproval
    | ResumeRequest
    | ResumeAck
    | StateUpdate
    | RpcCall
    | AppMessage
)


def _require_str(data: dict[str, Any], key: str, frame_type: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{frame_type} needs a non-empty string '{key}'", frame_type=frame_type)
    return value


def _client_tools(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list) or not value:
        return None
    return [tool for tool in value if isinstance(tool, dict) and isinstance(tool.get("name"), str)]


def _parse_chat_request(data: dict[str, Any]) -> ChatRequest | AppMessage | None:
    request_id = _require_str(data, "id", frames.USE_CHAT_REQUEST)
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise ProtocolError(f"the request id must be at most {MAX_REQUEST_ID_LENGTH} characters", request_id=request_id)
    init = data.get("init")
    if not isinstance(init, dict):
        raise ProtocolError("cf_agent_use_chat_request needs an 'init' object", request_id=request_id)
    if init.get("method") != "POST":
        return None
    raw_body = init.get("body")
    if not isinstance(raw_body, str) or not raw_body.strip():
        raise ProtocolError("the chat request has an empty body", request_id=request_id)
    try:
        body = json_safety.loads(raw_body)
    except json_safety.UnsafeJSON as exc:
        raise ProtocolError(f"the chat request body is refused: {exc}", request_id=request_id) from exc
    except ValueError as exc:
        raise ProtocolError(f"the chat request body is not valid JSON: {exc}", request_id=request_id) from exc
    if not isinstance(body, dict):
        raise ProtocolError("the chat request body must be a JSON object", request_id=request_id)
    try:
        messages = normalize_messages(body.pop("messages", None))
    except InvalidMessage as exc:
        raise ProtocolError(f"invalid messages: {exc}", request_id=request_id) from exc
    trigger = body.pop("trigger", None)
    if trigger is not None and not isinstance(trigger, str):
        raise ProtocolError("'trigger' must be \"submit-message\" or \"regenerate-message\"", request_id=request_id)
    if trigger not in TRIGGERS:
        trigger = "submit-message"
    client_tools = _client_tools(body.pop("clientTools", None))
    return ChatRequest(request_id, messages, trigger, client_tools, body or None)


def parse_frame(text: str) -> InboundFrame | None:
    """Parse one text frame. Returns None for frames that need no handling at all."""
    try:
        data = json_safety.loads(text)
    except json_safety.UnsafeJSON as exc:
        raise ProtocolError(f"Frame refused: {exc}.") from exc
    except ValueError:
        return AppMessage(text, None)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return AppMessage(text, data)
    kind = data["type"]
    if kind == frames.USE_CHAT_REQUEST:
        return _parse_chat_request(data)
    if kind == frames.CHAT_REQUEST_CANCEL:
        return CancelRequest(_require_str(data, "id", kind))
    if kind == frames.CHAT_CLEAR:
        return ClearRequest()
    if kind == frames.CHAT_MESSAGES:
        try:
            return SetMessages(normalize_messages(data.get("messages")))
        except InvalidMessage as exc:
            raise ProtocolError(f"invalid messages: {exc}", frame_type=kind) from exc
    if kind == frames.TOOL_RESULT:
        is_error = data.get("state") == "output-error"
        error_text = data.get("errorText")
        return ToolResult(
            tool_call_id=_require_str(data, "toolCallId", kind),
            tool_name=str(data.get("toolName") or ""),
            output=data.get("output"),
            is_error=is_error,
            error_text=error_text if isinstance(error_text, str) else None,
            auto_continue=bool(data.get("autoContinue")) and not is_error,
            client_tools=_client_tools(data.get("clientTools")),
        )
    if kind == frames.TOOL_APPROVAL:
        if not isinstance(data.get("approved"), bool):
            raise ProtocolError("cf_agent_tool_approval needs a boolean 'approved'", frame_type=kind)
        return ToolApproval(_require_str(data, "toolCallId", kind), data["approved"], bool(data.get("autoContinue")))
    if kind == frames.STREAM_RESUME_REQUEST:
        probe = data.get("probeId")
        return ResumeRequest(probe if isinstance(probe, str) else None)
    if kind == frames.STREAM_RESUME_ACK:
        return ResumeAck(_require_str(data, "id", kind))
    if kind == frames.STATE and "state" in data:
        return StateUpdate(data["state"])
    if kind == frames.RPC:
        if isinstance(data.get("id"), str) and isinstance(data.get("method"), str) and isinstance(data.get("args"), list):
            return RpcCall(data["id"], data["method"], data["args"])
        raise ProtocolError("rpc frames need a string 'id', a string 'method' and an 'args' array", frame_type=kind)
    return AppMessage(text, data)
