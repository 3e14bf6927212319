"""Server-rendered chat pages (HTMX). Streaming reaches the page through the UI socket; the
sidebar (rename, delete, search), clear and export are plain HTTP requests."""
from __future__ import annotations

import secrets
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from agents_app.runtime import chat
from agents_app.runtime.agent import ThinkAgent
from agents_app.runtime.context_blocks import ContextBlockError
from agents_app.limits import LimitReached
from agents_app.runtime.instances import InvalidSessionName, UnknownAgent, find_session, load_agent, resolve_session
from agents_app.runtime.registry import sync_agent_records
from agents_app.storage import transcript
from agents_app.storage.models import Session
from agents_app.ui import export
from agents_app.ui.rendering import render_message_html
from agents_app.ui.search import search_sessions


def _own_session(request: HttpRequest, agent: str, name: str) -> Session:
    """Only the signed-in user's own sessions: anyone else's is a 404, never a 403 that
    would confirm it exists."""
    return get_object_or_404(Session.objects.select_related("agent"), agent__slug=agent, name=name, owner=request.user)


def _current_pk(request: HttpRequest) -> int | None:
    value = request.POST.get("current") or request.GET.get("current")
    return int(value) if value and value.isdigit() else None


def _session_list(request: HttpRequest, query: str = "") -> HttpResponse:
    return render(
        request,
        "chat/_session_list.html",
        {"sessions": search_sessions(request.user, query), "current_pk": _current_pk(request), "query": query},
    )


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/home.html", {"sessions": search_sessions(request.user, ""), "agents": sync_agent_records()})


@login_required
@require_POST
def new_chat(request: HttpRequest) -> HttpResponse:
    agent = request.POST.get("agent", "")
    name = request.POST.get("name", "").strip() or f"chat-{secrets.token_hex(3)}"
    try:
        resolve_session(agent, name, request.user, limit_creation=True)
    except UnknownAgent:
        return HttpResponseBadRequest("Unknown agent")
    except InvalidSessionName as error:
        return HttpResponseBadRequest(str(error))
    except LimitReached as refusal:
        return HttpResponse(str(refusal), status=429, content_type="text/plain")
    return redirect("chat-page", agent=agent, name=name)


@login_required
def chat_page(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    try:
        session = find_session(agent, name, request.user)
    except UnknownAgent:
        return HttpResponseBadRequest("Unknown agent")
    except InvalidSessionName as error:
        return HttpResponseBadRequest(str(error))
    if session is None:
        # A link must not plant a session in the sidebar: starting it takes a (CSRF-checked) POST.
        context = {"sessions": search_sessions(request.user, ""), "agents": sync_agent_records(), "agent": agent, "name": name}
        return render(request, "chat/start.html", context)
    messages = [render_message_html(m) for m in transcript.transcript(session)]
    return render(
        request,
        "chat/chat.html",
        {
            "session": session,
            "messages": messages,
            "sessions": search_sessions(request.user, ""),
            "current_pk": session.pk,
            "agents": sync_agent_records(),
            "agent": agent,
            "name": name,
            "memory": _memory_context(session),
        },
    )


@login_required
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    return _session_list(request, request.GET.get("q", ""))


@login_required
@require_POST
def rename(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    session = _own_session(request, agent, name)
    title = request.POST.get("title", "").strip()[:200]
    if title:
        session.title = title
        session.save(update_fields=["title", "updated_at"])
    return _session_list(request)


@login_required
@require_POST
def delete(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    """Through Agent.destroy(): running turns are cancelled and open tabs are told."""
    session = _own_session(request, agent, name)
    was_open = session.pk == _current_pk(request)
    async_to_sync(load_agent(session).destroy)()
    if was_open:
        return HttpResponseClientRedirect(reverse("chat-home"))
    return _session_list(request)


@login_required
@require_POST
def clear(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    """Like cf_agent_chat_clear: turns are aborted and every open tab empties its page."""
    async_to_sync(chat.clear)(_own_session(request, agent, name), None)
    return HttpResponse(status=204)


@login_required
@require_GET
def export_conversation(request: HttpRequest, agent: str, name: str, fmt: str) -> HttpResponse:
    session = _own_session(request, agent, name)
    messages = transcript.transcript(session)
    for message in messages:  # branch positions and compaction marks are views, not conversation content
        for computed in ("branch", "compaction"):
            (message.get("metadata") or {}).pop(computed, None)
    body, content_type = (
        (export.as_json(session, messages), "application/json") if fmt == "json" else (export.as_markdown(session, messages), "text/markdown")
    )
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    filename = slugify(session.title or session.name) or "conversation"
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


def _memory_context(session: Session, *, error: str = "", open_panel: bool = False) -> dict[str, Any] | None:
    """The context blocks of a Think agent's session, for the memory panel (None: no panel)."""
    agent = load_agent(session)
    if not isinstance(agent, ThinkAgent) or not agent.context_blocks:
        return None
    blocks = async_to_sync(agent.get_context_blocks)()
    return {"blocks": blocks, "agent": session.agent.slug, "name": session.name, "error": error, "open": open_panel}


@login_required
@require_GET
def memory_panel(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    context = _memory_context(_own_session(request, agent, name), open_panel=True)
    if context is None:
        return HttpResponseBadRequest("This agent has no memory panel")
    return render(request, "chat/_memory.html", context)


@login_required
@require_POST
def memory_save(request: HttpRequest, agent: str, name: str, label: str) -> HttpResponse:
    """The owner rewrites a writable block; the previous content is kept as a version."""
    session = _own_session(request, agent, name)
    instance = load_agent(session)
    if not isinstance(instance, ThinkAgent):
        return HttpResponseBadRequest("This agent has no memory panel")
    error = ""
    try:
        async_to_sync(instance.set_context_block)(label, request.POST.get("content", ""))
    except ContextBlockError as refused:
        error = str(refused)
    return render(request, "chat/_memory.html", _memory_context(session, error=error, open_panel=True))
