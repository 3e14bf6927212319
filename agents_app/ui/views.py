"""Server-rendered chat pages (HTMX). Streaming reaches the page through the UI socket; sending
(with files), the queue, the sidebar (rename, delete, search), clear and export are plain
HTTP requests."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from agents_app.storage.db_threads import db_async
from agents_app.limits import LimitReached
from agents_app.turns import broadcast, chat
from agents_app.turns.instances import InvalidSessionName, UnknownAgent, check_session_name, load_agent, resolve_session
from agents_app.turns.registry import agent_record, sync_agent_records
from agents_app.storage import transcript
from agents_app.storage.models import Agent as AgentRecord
from agents_app.storage.models import Session, ToolGrant
from agents_app.ui import attachments, export, sending
from agents_app.ui.memory import memory_context
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
            "memory": memory_context(session) if session is not None else None,
            "approvals": _approvals_context(request, session) if session is not None else None,
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
    try:
        check_session_name(name)
    except InvalidSessionName as error:
        return HttpResponseBadRequest(str(error))
    session = Session.objects.select_related("agent").filter(agent=record, name=name, owner=request.user).first()
    return _render_chat(request, record, name, session)


def _page_error(text: str) -> HttpResponse:
    """Shown above the composer; the typed message stays in the composer."""
    return HttpResponse(render_to_string("chat/_error.html", {"text": text}))


@dataclass
class _Outgoing:
    session: Session
    created: bool
    file_parts: list[dict[str, Any]]


def _prepare_send(request: HttpRequest, text: str) -> _Outgoing | str:
    """The session (created for the first message of a fresh chat) and the stored files, or
    why nothing can be sent."""
    uploads = request.FILES.getlist("files")
    name = request.POST.get("name", "").strip()[:200]
    if not text and not uploads:
        return "Type a message or attach a file."
    if not name:
        return "This chat has no name; reload the page."
    try:
        attachments.check(uploads)
    except attachments.AttachmentError as refused:
        return str(refused)
    agent = request.POST.get("agent", "")
    existing = Session.objects.select_related("agent").filter(agent__slug=agent, name=name, owner=request.user).first()
    try:
        with transaction.atomic():
            session = existing or resolve_session(agent, name, request.user, limit_creation=True)
            return _Outgoing(session, existing is None, attachments.store(session, uploads))
    except UnknownAgent:
        return "Pick an agent to talk to."
    except (InvalidSessionName, LimitReached) as refused:
        return str(refused)
    except attachments.AttachmentError as refused:
        return str(refused)


def _forget_unsent(session: Session) -> None:
    if not session.messages.exists():
        session.delete()  # nothing was sent: the fresh chat stays unstored


@login_required
@require_POST
async def send(request: HttpRequest) -> HttpResponse:
    """The composer: text and files, sent now or queued while the agent answers. The first
    message of a fresh chat creates the conversation and loads the page onto it. Async: the
    turn it starts runs on the server's event loop, after the response."""
    request.user = await request.auser()  # resolved here: the sync helpers read it in a thread
    text = request.POST.get("message", "").strip()
    outgoing = await db_async(_prepare_send)(request, text)
    if isinstance(outgoing, str):
        return _page_error(outgoing)
    session = outgoing.session
    try:
        queued = await sending.send(session, text, outgoing.file_parts)
    except sending.SendRefused as refused:
        if outgoing.created:
            await db_async(_forget_unsent)(session)
        return _page_error(str(refused))
    if outgoing.created:
        return HttpResponseClientRedirect(reverse("chat-page", args=[session.agent.slug, session.name]))
    queue_html = await db_async(render_queue)(session, swap_oob=True)
    response = HttpResponse(queue_html + render_to_string("chat/_error.html", {"text": ""}))
    response["HX-Trigger"] = "composer-sent"
    if queued:
        await broadcast.session_changed(session.pk)
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
    """JSON: the whole tree (re-importable); Markdown: the conversation as shown."""
    session = _own_session(request, agent, name)
    if fmt == "json":
        body, content_type = export.as_json(session), "application/json"
    else:
        messages = [transcript.strip_computed_metadata(m) for m in transcript.transcript(session)]
        body, content_type = export.as_markdown(session, messages), "text/markdown"
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    filename = slugify(session.title or session.name) or "conversation"
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


@login_required
@require_POST
def import_conversation(request: HttpRequest) -> HttpResponse:
    """A conversation file (Export JSON) becomes a new conversation of the signed-in user."""
    upload = request.FILES.get("conversation")
    if upload is None:
        return _page_error("Choose a conversation file (.json) to import.")
    if upload.size > settings.AGENTS_IMPORT_MAX_BYTES:
        return _page_error(f"The file is {upload.size} bytes; imports are limited to {settings.AGENTS_IMPORT_MAX_BYTES} bytes.")
    try:
        session = export.import_conversation(upload.read(), request.user, new_chat_name())
    except export.ImportRefused as refused:
        return _page_error(str(refused))
    return HttpResponseClientRedirect(reverse("chat-page", args=[session.agent.slug, session.name]))


def _approvals_context(request: HttpRequest, session: Session, *, open_panel: bool = False) -> dict[str, Any]:
    grants = ToolGrant.objects.filter(user=request.user, agent=session.agent.slug).values_list("tool", flat=True)
    return {
        "in_chat": list(session.allowed_tools or []),
        "for_agent": list(grants),
        "agent": session.agent.slug,
        "agent_title": session.agent.title or session.agent.slug,
        "name": session.name,
        "open": open_panel,
    }


@login_required
@require_GET
def approvals_panel(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    session = _own_session(request, agent, name)
    return render(request, "chat/_approvals.html", _approvals_context(request, session, open_panel=True))


@login_required
@require_POST
def revoke_approval(request: HttpRequest, agent: str, name: str, scope: str, tool: str) -> HttpResponse:
    """The tool asks for approval again: in this chat, or in every chat with this agent."""
    session = _own_session(request, agent, name)
    if scope == "agent":
        ToolGrant.objects.filter(user=request.user, agent=session.agent.slug, tool=tool).delete()
    else:
        with transaction.atomic():
            locked = Session.objects.select_for_update().get(pk=session.pk)
            locked.allowed_tools = [t for t in locked.allowed_tools if t != tool]
            locked.save(update_fields=["allowed_tools", "updated_at"])
        session.refresh_from_db()
    return render(request, "chat/_approvals.html", _approvals_context(request, session, open_panel=True))
