"""HTTP side of an agent instance: `get-messages` for the official client, then the agent's
own `on_request` for every other path (protocol §7)."""
from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from agents_app.runtime.instances import UnknownAgent, load_agent, resolve_session
from agents_app.runtime.registry import agent_class
from agents_app.storage import transcript
from agents_app.transport.auth import user_for_token


def _request_user(request: HttpRequest) -> Any | None:
    """The session user, or the owner of the API token in `?token=` / `Authorization: Bearer`."""
    if request.user.is_authenticated:
        return request.user
    token = request.GET.get("token")
    header = request.headers.get("Authorization", "")
    if not token and header.lower().startswith("bearer "):
        token = header[7:].strip()
    return user_for_token(token) if token else None


def _open_session(request: HttpRequest, agent: str, name: str) -> Any:
    user = _request_user(request)
    if user is None and not settings.AGENTS_ALLOW_ANONYMOUS:
        return JsonResponse({"error": "Authentication required: log in or pass ?token=<api token>."}, status=401)
    return resolve_session(agent, name, user)


async def agent_endpoint(request: HttpRequest, agent: str, name: str, rest: str = "") -> HttpResponse:
    if agent_class(agent) is None:
        return HttpResponse("Invalid request", status=400, content_type="text/plain")
    try:
        session = await sync_to_async(_open_session)(request, agent, name)
    except UnknownAgent:
        return HttpResponse("Invalid request", status=400, content_type="text/plain")
    if isinstance(session, HttpResponse):
        return session
    if rest.rstrip("/").split("/")[-1] == "get-messages":
        messages = await sync_to_async(transcript.transcript)(session)
        return JsonResponse(messages, safe=False)
    instance = await sync_to_async(load_agent)(session)
    return await instance.on_request(request, rest)
