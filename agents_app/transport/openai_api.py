"""An OpenAI-compatible front door: any OpenAI client library can talk to our agents.

* `GET /v1/models` lists the agents (their URL segments are the model ids).
* `POST /v1/chat/completions`, streamed or not. `model` names an agent (`chat-agent`) or an
  agent instance (`chat-agent/support`). With an instance, the session keeps the history and
  only the request's trailing new messages (after the last assistant message) are added;
  without one, every request is a fresh session seeded with the request's messages, as
  the OpenAI API is stateless. The agent answers with a normal turn (same runner, tools,
  hooks, persistence; connected WebSocket clients watch it).

Authentication: `Authorization: Bearer <api token>` (the per-user tokens of the admin).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from agents_app.storage.db_threads import db_async
from agents_app.gateway import limits
from agents_app.protocol.messages import UIMessage
from agents_app.agents.chat_agent import AIChatAgent
from agents_app.turns.instances import UnknownAgent, load_agent, resolve_session
from agents_app.turns.registry import agent_class, sync_agent_records
from agents_app.turns.runner import AdmissionFailed
from agents_app.transport.auth import user_for_token
from agents_app.transport.http_turns import HttpTurn, start_turn
from agents_app.transport.responses import sse_response
from agents_app.transport.json_body import BadJSONBody, json_object

_FINISH_REASONS = {"stop": "stop", "length": "length", "tool-calls": "tool_calls", "content-filter": "content_filter"}


def error_response(message: str, status: int, *, kind: str = "invalid_request_error", code: str | None = None, headers: dict[str, str] | None = None) -> JsonResponse:
    """The error body the OpenAI SDKs parse into their exception's message."""
    response = JsonResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def limit_response(refusal: limits.LimitExceeded) -> JsonResponse:
    """429 with Retry-After: the SDKs raise RateLimitError (and back off when they retry)."""
    return error_response(str(refusal), 429, kind="rate_limit_error", code=refusal.code, headers={"Retry-After": str(refusal.retry_after)})


def _bearer_user(request: HttpRequest) -> Any | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    return user_for_token(header[7:].strip())


def _unauthorized() -> JsonResponse:
    return error_response("A valid API token is required (Authorization: Bearer <token>).", 401, code="invalid_api_key")


async def list_models(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return error_response("Use GET.", 405)
    if await db_async(_bearer_user)(request) is None:
        return _unauthorized()
    records = await db_async(sync_agent_records)()
    data = [
        {"id": record.slug, "object": "model", "created": int(record.created_at.timestamp()), "owned_by": "agents", "description": record.description}
        for record in records
        if issubclass(agent_class(record.slug) or object, AIChatAgent)
    ]
    return JsonResponse({"object": "list", "data": data})


async def budget(request: HttpRequest) -> HttpResponse:
    """`GET /v1/budget`: the caller's use this month and what is left of their budget."""
    user = await db_async(_bearer_user)(request)
    if user is None:
        return _unauthorized()
    return JsonResponse(await db_async(limits.budget_status)(user.pk))


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(item.get("text", "") for item in content if isinstance(item, dict) and item.get("type") == "text")
    return ""


def to_ui_messages(messages: list[dict[str, Any]]) -> list[UIMessage]:
    """Chat-completions messages → UIMessages (text only; tool messages of the client's own
    tool loop have no place in the agent's conversation)."""
    converted: list[UIMessage] = []
    for message in messages:
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            continue
        text = _message_text(message.get("content"))
        if text:
            converted.append({"id": f"oai_{uuid.uuid4().hex[:16]}", "role": role, "parts": [{"type": "text", "text": text}]})
    return converted


def _new_messages(messages: list[UIMessage], stateful: bool) -> list[UIMessage]:
    """With a session, only what came after the last assistant message is new."""
    if not stateful:
        return messages
    last_assistant = max((index for index, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return messages[last_assistant + 1 :]


class _BadRequest(ValueError):
    pass


def _parse(request: HttpRequest) -> dict[str, Any]:
    try:
        payload = json_object(request)
    except BadJSONBody as error:
        raise _BadRequest(str(error)) from error
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise _BadRequest("`model` must name an agent, e.g. chat-agent or chat-agent/<session name>.")
    if not isinstance(payload.get("messages"), list) or not payload["messages"]:
        raise _BadRequest("`messages` must be a non-empty list.")
    return payload


def _open_agent(user: Any, model: str) -> tuple[AIChatAgent, bool]:
    segment, _, name = model.partition("/")
    stateful = bool(name)
    session = resolve_session(segment, name or f"completion-{uuid.uuid4().hex[:12]}", user)
    agent = load_agent(session)
    if not isinstance(agent, AIChatAgent):
        raise UnknownAgent(segment)
    return agent, stateful


@csrf_exempt  # token-authenticated only: no ambient credentials to forge
async def chat_completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error_response("Use POST.", 405)
    user = await db_async(_bearer_user)(request)
    if user is None:
        return _unauthorized()
    try:
        payload = _parse(request)
    except _BadRequest as error:
        return error_response(str(error), 400)
    try:
        agent, stateful = await db_async(_open_agent)(user, payload["model"])
    except UnknownAgent:
        return error_response(f"The model {payload['model']!r} does not exist: see GET /v1/models.", 404, code="model_not_found")
    messages = _new_messages(to_ui_messages(payload["messages"]), stateful)
    if not messages:
        return error_response("There is no new user message to answer.", 400)
    try:
        await db_async(limits.check)(user.pk, agent.record.slug)
    except limits.LimitExceeded as refusal:
        return limit_response(refusal)
    try:
        turn = await start_turn(agent, messages)
    except AdmissionFailed as failure:
        return error_response(str(failure), 503, kind="server_error", headers={"Retry-After": "1"})
    completion_id = f"chatcmpl-{turn.request_id}"
    if payload.get("stream"):
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        return sse_response(
            _stream(turn, completion_id, payload["model"], include_usage), done_marker="[DONE]", headers={"X-Request-Id": turn.request_id}
        )
    return await _complete(turn, completion_id, payload["model"])


def _usage(message: UIMessage | None) -> dict[str, int]:
    usage = ((message or {}).get("metadata") or {}).get("usage") or {}
    prompt, completion = int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(message: UIMessage | None) -> str:
    metadata = (message or {}).get("metadata") or {}
    return _FINISH_REASONS.get(str(metadata.get("finishReason", "stop")), "stop")


def _text_of(message: UIMessage | None) -> str:
    return "".join(p.get("text", "") for p in (message or {}).get("parts", []) if p.get("type") == "text")


async def _complete(turn: HttpTurn, completion_id: str, model: str) -> HttpResponse:
    outcome = await turn.outcome()
    if outcome.status == "error":
        return error_response(outcome.error or "The agent failed to answer.", 502, kind="agent_error")
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": _text_of(outcome.message)}, "finish_reason": _finish_reason(outcome.message)}
            ],
            "usage": _usage(outcome.message),
        },
        headers={"X-Request-Id": turn.request_id},
    )


async def _stream(turn: HttpTurn, completion_id: str, model: str, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    usage: dict[str, Any] = {}
    finish = "stop"
    async for ui_chunk in turn.chunks():
        kind = ui_chunk.get("type")
        if kind == "text-delta":
            yield chunk({"content": ui_chunk.get("delta", "")})
        elif kind == "error":
            # The SDKs raise an APIError for an event carrying `error`.
            yield {"error": {"message": ui_chunk.get("errorText", ""), "type": "agent_error", "param": None, "code": None}}
            return
        elif kind in ("finish", "message-metadata"):
            metadata = ui_chunk.get("messageMetadata") or {}
            usage = metadata.get("usage") or usage
            finish = _FINISH_REASONS.get(str(ui_chunk.get("finishReason") or metadata.get("finishReason") or "stop"), "stop")
    yield chunk({}, finish)
    if include_usage:
        prompt, completion = int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))
        yield {
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
