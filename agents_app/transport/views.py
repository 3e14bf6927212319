"""HTTP side of an agent instance: `get-messages` for the official client, `streams/<request
id>` to (re-)attach to a turn's stream, then the agent's own `on_request` for every other
path (protocol §7)."""
from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from agents_app.runtime.instances import UnknownAgent, load_agent, resolve_session
from agents_app.runtime.registry import agent_class
from agents_app.storage import transcript
from agents_app.transport import http_streams
from agents_app.transport.auth import user_for_token

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
    user = _request_user(request)
    if user is None and not settings.AGENTS_ALLOW_ANONYMOUS:
        return JsonResponse({"error": "Authentication required: log in or pass ?token=<api token>."}, status=401)
    refused = _csrf_failure(request)
    if refused is not None:
        return refused
    return resolve_session(agent, name, user)


async def _reattach(request: HttpRequest, session: Any, request_id: str) -> HttpResponse:
    """Replay and follow one turn's stream (from `?from=<seq>`), however the turn was started."""
    try:
        turn = await sync_to_async(http_streams.find_turn)(session.pk, request_id)
    except http_streams.UnknownTurn:
        return JsonResponse({"error": f"No turn {request_id!r} in this session."}, status=404)
    from_seq = request.GET.get("from", "0")
    if not from_seq.isdigit():
        return JsonResponse({"error": "?from= must be a sequence number."}, status=400)
    return await http_streams.turn_response(turn, http_streams.response_format(request), from_seq=int(from_seq))


@csrf_exempt  # enforced in _open_session for cookie-authenticated requests only
async def agent_endpoint(request: HttpRequest, agent: str, name: str, rest: str = "") -> HttpResponse:
    if agent_class(agent) is None:
        return HttpResponse("Invalid request", status=400, content_type="text/plain")
    try:
        session = await sync_to_async(_open_session)(request, agent, name)
    except UnknownAgent:
        return HttpResponse("Invalid request", status=400, content_type="text/plain")
    if isinstance(session, HttpResponse):
        return session
    segments = rest.strip("/").split("/")
    if segments[-1] == "get-messages":
        messages = await sync_to_async(transcript.transcript)(session)
        return JsonResponse(messages, safe=False)
    if len(segments) == 2 and segments[0] == "streams" and request.method == "GET":
        return await _reattach(request, session, segments[1])
    instance = await sync_to_async(load_agent)(session)
    return await instance.on_request(request, rest)
