"""Server-rendered chat pages (HTMX). Streaming reaches the page through the UI socket."""
from __future__ import annotations

import secrets

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents_app.runtime.instances import UnknownAgent, resolve_session
from agents_app.runtime.registry import sync_agent_records
from agents_app.storage import transcript
from agents_app.ui.rendering import render_message_html


@login_required
def home(request: HttpRequest) -> HttpResponse:
    sessions = request.user.agent_sessions.select_related("agent").order_by("-updated_at")
    return render(request, "chat/home.html", {"sessions": sessions, "agents": sync_agent_records()})


@login_required
@require_POST
def new_chat(request: HttpRequest) -> HttpResponse:
    agent = request.POST.get("agent", "")
    name = request.POST.get("name", "").strip() or f"chat-{secrets.token_hex(3)}"
    try:
        resolve_session(agent, name, request.user)
    except UnknownAgent:
        return HttpResponseBadRequest("Unknown agent")
    return redirect("chat-page", agent=agent, name=name)


@login_required
def chat_page(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    try:
        session = resolve_session(agent, name, request.user)
    except UnknownAgent:
        return HttpResponseBadRequest("Unknown agent")
    messages = [render_message_html(m) for m in transcript.transcript(session)]
    sessions = request.user.agent_sessions.select_related("agent").order_by("-updated_at")
    return render(
        request,
        "chat/chat.html",
        {"session": session, "messages": messages, "sessions": sessions, "agents": sync_agent_records(), "agent": agent, "name": name},
    )
