"""HTTP side of an agent instance: `get-messages` for the official client, `streams/<request
id>` to (re-)attach to a turn's stream, `POST chat` for a turn over HTTP (chat agents), then
the agent's own `on_request` for every other path (protocol §7)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from agents_app import limits
from agents_app.storage.db_threads import db_async
from agents_app.agents.chat_agent import AIChatAgent
from agents_app.gateway.workers_ai import AiTextStream
from agents_app.turns.instances import (
    InvalidSessionName,
    UnknownAgent,
    find_session,
    load_agent,
    resolve_session,
    transient_session,
)
from agents_app.turns.registry import agent_class
from agents_app.storage import search, transcript
from agents_app.storage.models import Session
from agents_app.transport import chat_endpoint, http_turns
from agents_app.transport.auth import user_for_token
from agents_app.transport.json_body import BadJSONBody, json_object
from agents_app.transport.responses import sse_response

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}


def _request_user(request: HttpRequest) -> Any | None:
    """The session user, or the owner of the API token in `?token=` / `Authorization: Bearer`."""
    if request.user.is_authenticated:
        return request.user
    token = request.GET.get("token")
    header = request.headers.get("Authorization", "")
    if not token and header.lower().startswith("bearer "):
        token = header[7:].strip()
    return user_for_token(token) if token else None


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    """Cookie-authenticated writes need Django's CSRF token; token-authenticated clients
    (curl, SDKs) carry no ambient credentials and are exempt."""
    if request.method in _SAFE_METHODS or not request.user.is_authenticated:
        return None
    return CsrfViewMiddleware(lambda _: HttpResponse()).process_view(request, None, (), {})


def _open_session(request: HttpRequest, agent: str, name: str) -> Any:
    """The caller's session; None for a safe method on a session that does not exist yet
    (only writes create sessions)."""
    user = _request_user(request)
    if user is None and not settings.AGENTS_ALLOW_ANONYMOUS:
        return JsonResponse({"error": "Authentication required: log in or pass ?token=<api token>."}, status=401)
    refused = _csrf_failure(request)
    if refused is not None:
        return refused
    if request.method in _SAFE_METHODS:
        return find_session(agent, name, user) or transient_session(agent, name, user)
    return resolve_session(agent, name, user, limit_creation=True)


async def _reattach(request: HttpRequest, session: Any, request_id: str) -> HttpResponse:
    """Replay and follow one turn's stream (from `?from=<seq>`), however the turn was started."""
    try:
        turn = await db_async(http_turns.find_turn)(session.pk, request_id)
    except http_turns.UnknownTurn:
        return JsonResponse({"error": f"No turn {request_id!r} in this session."}, status=404)
    from_seq = request.GET.get("from", "0")
    if not from_seq.isdigit():
        return JsonResponse({"error": "?from= must be a sequence number."}, status=400)
    return await http_turns.turn_response(turn, chat_endpoint.response_format(request), from_seq=int(from_seq))


@csrf_exempt  # enforced in _open_session for cookie-authenticated requests only
async def agent_endpoint(request: HttpRequest, agent: str, name: str, rest: str = "") -> HttpResponse:
    if agent_class(agent) is None:
        return HttpResponse("Invalid request", status=400, content_type="text/plain")
    try:
        session = await db_async(_open_session)(request, agent, name)
    except UnknownAgent:
        return HttpResponse("Invalid request", status=400, content_type="text/plain")
    except InvalidSessionName as error:
        return JsonResponse({"error": str(error)}, status=400)
    except limits.LimitReached as refusal:
        return JsonResponse({"error": str(refusal)}, status=429, headers={"Retry-After": str(refusal.retry_after)})
    if isinstance(session, HttpResponse):
        return session
    segments = rest.strip("/").split("/")
    action = segments[-1]
    if session.pk is None and action in ("get-messages", "search"):
        return JsonResponse([], safe=False)  # a session nobody has written to yet is empty
    if session.pk is None and len(segments) == 2 and segments[0] == "streams":
        return JsonResponse({"error": f"No turn {segments[1]!r} in this session."}, status=404)
    if action == "get-messages":
        messages = await db_async(transcript.transcript)(session)
        return JsonResponse(messages, safe=False)
    if action == "search" and request.method == "GET":
        hits = await db_async(search.search_messages)(request.GET.get("q", ""), session_ids=[session.pk], limit=_limit(request))
        return JsonResponse([hit.as_dict() for hit in hits], safe=False)
    if len(segments) == 2 and segments[0] == "streams" and request.method == "GET":
        return await _reattach(request, session, segments[1])
    instance = await db_async(load_agent)(session)
    if action == "switch-branch" and request.method == "POST":
        return await _switch_branch(request, instance)
    if rest.strip("/") == "chat" and isinstance(instance, AIChatAgent):
        return await chat_endpoint.chat_endpoint(instance, request)  # chat agents' built-in HTTP turn
    response = await instance.on_request(request, rest)
    if isinstance(response, AiTextStream):  # Workers AI's streamed form, sent in its own format
        return sse_response(response, done_marker="[DONE]")
    return response


def _limit(request: HttpRequest) -> int:
    try:
        return max(1, min(int(request.GET.get("limit", "20")), 100))
    except ValueError:
        return 20


async def _switch_branch(request: HttpRequest, instance: Any) -> HttpResponse:
    """`POST …/switch-branch` {"messageId": …}: the conversation continues on that branch
    (every tab follows); answers with the new active path."""
    try:
        message_id = json_object(request).get("messageId")
    except BadJSONBody:
        message_id = None
    if not isinstance(message_id, str) or not isinstance(instance, AIChatAgent):
        return JsonResponse({"error": 'Send {"messageId": "<id of a message in this session>"}.'}, status=400)
    try:
        messages = await instance.switch_branch(message_id)
    except ValueError as error:
        return JsonResponse({"error": str(error)}, status=404)
    return JsonResponse(messages, safe=False)


async def search_sessions(request: HttpRequest) -> HttpResponse:
    """`GET /agents/search?q=…`: full-text search across every session of the requesting user."""
    user = await db_async(_request_user)(request)
    if user is None:
        return JsonResponse({"error": "Authentication required: log in or pass ?token=<api token>."}, status=401)

    def run() -> list[dict[str, Any]]:
        hits = search.search_messages(request.GET.get("q", ""), owner=user, limit=_limit(request))
        sessions = {s.pk: s for s in Session.objects.filter(pk__in={h.session_id for h in hits}).select_related("agent")}
        return [{**hit.as_dict(), "agent": sessions[hit.session_id].agent.slug, "name": sessions[hit.session_id].name} for hit in hits]

    return JsonResponse(await db_async(run)(), safe=False)
