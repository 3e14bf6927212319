"""`POST /agents/<agent>/<name>/chat`: the built-in HTTP turn of chat agents, answered as a UI
message stream, SSE, streamed text or JSON."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse

from agents_app import limits as agent_limits
from agents_app.storage.db_threads import db_async
from agents_app.gateway import limits
from agents_app.protocol.messages import InvalidMessage, UIMessage, normalize_messages, user_text_message
from agents_app.transport.http_turns import start_turn, turn_response
from agents_app.transport.json_body import BadJSONBody, json_object
from agents_app.transport.responses import json_response
from agents_app.turns import runner

if TYPE_CHECKING:
    from agents_app.agents.chat_agent import AIChatAgent

RESPONSE_FORMATS = ("ui", "sse", "text", "json")


class BadChatRequest(ValueError):
    pass


def parse_chat_request(request: HttpRequest) -> tuple[list[UIMessage], dict[str, Any] | None, str | None]:
    """`{"text": "…"}` or `{"messages": [UIMessage, …]}`, optional `"body"` (the turn's custom
    body, as `useChat`'s `body` option) and `"requestId"` (idempotency)."""
    try:
        payload = json_object(request)
    except BadJSONBody as error:
        raise BadChatRequest(str(error)) from error
    if isinstance(payload.get("text"), str) and payload["text"].strip():
        messages = [user_text_message(payload["text"])]
    elif isinstance(payload.get("messages"), list) and payload["messages"]:
        try:
            messages = normalize_messages(payload["messages"])
        except InvalidMessage as error:
            raise BadChatRequest(f"Invalid messages: {error}") from error
    else:
        raise BadChatRequest('Send {"text": "…"} or {"messages": [UIMessage, …]}.')
    body = payload.get("body")
    if body is not None and not isinstance(body, dict):
        raise BadChatRequest('"body" must be a JSON object.')
    request_id = payload.get("requestId")
    if request_id is not None and (not isinstance(request_id, str) or not 0 < len(request_id) <= 64):
        raise BadChatRequest('"requestId" must be a string of at most 64 characters.')
    return messages, body, request_id


def response_format(request: HttpRequest) -> str:
    """`?format=` wins; otherwise `Accept: text/plain` → text, `application/json` → json, else ui."""
    chosen = request.GET.get("format")
    if chosen in RESPONSE_FORMATS:
        return chosen
    accept = request.headers.get("Accept", "")
    if "text/plain" in accept:
        return "text"
    if "application/json" in accept and "text/event-stream" not in accept:
        return "json"
    return "ui"


async def chat_endpoint(agent: AIChatAgent, request: HttpRequest) -> HttpResponse:
    """`POST /agents/<agent>/<name>/chat`: a turn over HTTP, answered in the chosen format."""
    if request.method != "POST":
        return json_response({"error": "Use POST."}, status=405, headers={"Allow": "POST"})
    try:
        messages, body, request_id = parse_chat_request(request)
    except BadChatRequest as error:
        return json_response({"error": str(error)}, status=400)
    try:
        await db_async(limits.check)(agent.session.owner_id, agent.record.slug)
    except limits.LimitExceeded as refusal:
        return json_response({"error": str(refusal), "code": refusal.code}, status=429, headers={"Retry-After": str(refusal.retry_after)})
    try:
        turn = await start_turn(agent, messages, body=body, request_id=request_id)
    except runner.AdmissionFailed as failure:
        return json_response({"error": str(failure)}, status=503, headers={"Retry-After": "1"})
    except agent_limits.LimitReached as refusal:
        return json_response({"error": str(refusal)}, status=429, headers={"Retry-After": str(refusal.retry_after)})
    return await turn_response(turn, response_format(request))
