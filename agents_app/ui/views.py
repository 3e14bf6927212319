"""Server-rendered chat pages (HTMX). Streaming reaches the page through the UI socket; sending
(with files), the queue, the sidebar (rename, delete, search), clear and export are plain
HTTP requests."""
from __future__ import annotations

import secrets
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from agents_app.runtime import broadcast, chat
from agents_app.runtime.agent import ThinkAgent
from agents_app.runtime.context_blocks import ContextBlockError
from agents_app.runtime.instances import UnknownAgent, load_agent, resolve_session
from agents_app.runtime.registry import agent_record, sync_agent_records
from agents_app.storage import transcript
from agents_app.storage.models import Agent as AgentRecord
from agents_app.storage.models import Session
from agents_app.ui import attachments, export, sending
from agents_app.ui.models import Attachment
from agents_app.ui.rendering import render_conversation, render_queue
from agents_app.ui.sidebar import grouped_sessions


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
        {"groups": grouped_sessions(request.user, query), "current_pk": _current_pk(request), "query": query},
    )


def _default_agent(agents: list[AgentRecord]) -> AgentRecord | None:
    return next((a for a in agents if a.slug == settings.AGENTS_DEFAULT_AGENT), agents[0] if agents else None)


def _render_chat(request: HttpRequest, agent: AgentRecord, name: str, session: Session | None) -> HttpResponse:
    """The chat page. Without a session (a fresh chat) nothing is stored: the first message
    sent creates the conversation."""
    history = transcript.transcript(session) if session is not None else []
    return render(
        request,
        "chat/chat.html",
        {
            "session": session,
            "messages": render_conversation(session, history) if session is not None else [],
            "queue": render_queue(session) if session is not None else "",
            "groups": grouped_sessions(request.user),
            "current_pk": session.pk if session is not None else None,
            "agents": sync_agent_records(),
            "agent_record": agent,
            "agent": agent.slug,
            "name": name,
            "memory": _memory_context(session) if session is not None else None,
            "accept": attachments.ACCEPT,
        },
    )


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """A fresh chat with the default agent (or `?agent=`), ready to type into."""
    agents = sync_agent_records()
    chosen = next((a for a in agents if a.slug == request.GET.get("agent")), None) or _default_agent(agents)
    if chosen is None:
        return render(request, "chat/home.html", {"groups": grouped_sessions(request.user)})
    return _render_chat(request, chosen, new_chat_name(), None)


def new_chat_name() -> str:
    return f"chat-{secrets.token_hex(4)}"


@login_required
@require_GET
def chat_page(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    record = agent_record(agent)
    if record is None:
        raise Http404("Unknown agent")
    session = Session.objects.select_related("agent").filter(agent=record, name=name, owner=request.user).first()
    return _render_chat(request, record, name, session)


def _page_error(text: str) -> HttpResponse:
    """Shown above the composer; the typed message stays in the composer."""
    return HttpResponse(render_to_string("chat/_error.html", {"text": text}))


@login_required
@require_POST
def send(request: HttpRequest) -> HttpResponse:
    """The composer: text and files, sent now or queued while the agent answers. The first
    message of a fresh chat creates the conversation and reloads the page onto it."""
    text = request.POST.get("message", "").strip()
    uploads = request.FILES.getlist("files")
    name = request.POST.get("name", "").strip()[:200]
    if not text and not uploads:
        return _page_error("Type a message or attach a file.")
    if not name:
        return _page_error("This chat has no name; reload the page.")
    try:
        attachments.check(uploads)
    except attachments.AttachmentError as refused:
        return _page_error(str(refused))
    existing = Session.objects.select_related("agent").filter(agent__slug=request.POST.get("agent", ""), name=name, owner=request.user).first()
    try:
        session = existing or resolve_session(request.POST.get("agent", ""), name, request.user)
    except UnknownAgent:
        return _page_error("Pick an agent to talk to.")
    try:
        with transaction.atomic():
            file_parts = attachments.store(session, uploads)
        queued = async_to_sync(sending.send)(session, text, file_parts)
    except (attachments.AttachmentError, sending.SendRefused) as refused:
        if existing is None and not session.messages.exists():
            session.delete()  # nothing was sent: the fresh chat stays unstored
        return _page_error(str(refused))
    if existing is None:
        return HttpResponseClientRedirect(reverse("chat-page", args=[session.agent.slug, session.name]))
    response = HttpResponse(render_queue(session, swap_oob=True) + render_to_string("chat/_error.html", {"text": ""}))
    response["HX-Trigger"] = "composer-sent"
    if queued:
        async_to_sync(broadcast.session_changed)(session.pk)
    return response


@login_required
@require_POST
def queued_message(request: HttpRequest, agent: str, name: str, queued_id: int, change: str) -> HttpResponse:
    """Edit or cancel a queued message, until it is sent."""
    session = _own_session(request, agent, name)
    if change == "cancel":
        done = sending.cancel_queued(session, queued_id)
    else:
        text = request.POST.get("message", "").strip()
        done = bool(text) and sending.edit_queued(session, queued_id, text)
    html = render_queue(session, swap_oob=True)
    if not done:
        html += render_to_string("chat/_error.html", {"text": "That message has already been sent."})
    async_to_sync(broadcast.session_changed)(session.pk)
    return HttpResponse(html)


@login_required
@require_GET
def attachment(request: HttpRequest, key: str) -> HttpResponse:
    """An attached file, for its owner only; images inline, every other file as a download."""
    found = get_object_or_404(Attachment.objects.select_related("session"), key=key, session__owner=request.user)
    inline = found.media_type in attachments.IMAGE_TYPES
    response = HttpResponse(bytes(found.data), content_type=found.media_type if inline else "application/octet-stream")
    disposition = "inline" if inline else "attachment"
    response["Content-Disposition"] = f'{disposition}; filename="{found.filename}"'
    response["Cache-Control"] = "private, max-age=3600"
    return response


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
