"""Webhooks: `POST /hooks/<agent>/<name>` with the agent's webhook key starts a turn.

The body is JSON: `{"text": "…", "user": "<username>"}` (`user` picks whose session `<name>`
is; without it the anonymous namespace). The turn is queued on Celery and the response
(202) carries its request id; connected clients of that session watch it stream.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from agents_app.tasks import run_turn
from agents_app.turns.instances import resolve_session
from agents_app.turns.registry import agent_record
from agents_app.transport.json_body import BadJSONBody, json_object

MAX_TEXT_CHARS = 100_000


def _bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _parse(request: HttpRequest) -> tuple[dict[str, Any] | None, str]:
    try:
        body = json_object(request)
    except BadJSONBody as error:
        return None, str(error)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return None, 'A non-empty "text" string is required.'
    if len(text) > MAX_TEXT_CHARS:
        return None, f'"text" is longer than {MAX_TEXT_CHARS} characters.'
    if "user" in body and not isinstance(body["user"], str):
        return None, '"user" must be a username.'
    return body, ""


@csrf_exempt
@require_POST
def agent_webhook(request: HttpRequest, agent: str, name: str) -> JsonResponse:
    record = agent_record(agent)
    if record is None:
        return _error(f"Unknown agent {agent!r}.", 404)
    if not record.accepts_webhook_key(_bearer(request)):
        return _error("A valid webhook key is required (Authorization: Bearer <key>).", 401)
    body, problem = _parse(request)
    if body is None:
        return _error(problem, 400)
    username = body.get("user")
    user = None
    if username:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            return _error(f"Unknown user {username!r}.", 400)
    resolve_session(agent, name, user)
    task = run_turn.delay(agent, name, body["text"], username=username)
    return JsonResponse({"requestId": task.id, "status": "queued"}, status=202)
