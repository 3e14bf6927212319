"""The memory panel: a Think agent's context blocks as their owner sees them, every write
with what it changed, and the owner's edits, undo and clear (each write keeps the previous
content as a version, think/context_blocks.py)."""
from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from agents_app.agents.think_agent import ThinkAgent
from agents_app.think.context_blocks import ContextBlockError, undo_last_write
from agents_app.turns.instances import load_agent
from agents_app.storage.models import ContextBlock, ContextBlockVersion, Session

HISTORY_LENGTH = 20
WRITERS = {"model": "the assistant", "user": "you", "admin": "an administrator", "code": "the agent's code"}


def block_history(session: Session, label: str) -> list[dict[str, Any]]:
    """The block's writes, newest first: who wrote, when, and the content it left."""
    block = ContextBlock.objects.filter(session=session, label=label).first()
    if block is None:
        return []
    versions = list(ContextBlockVersion.objects.filter(block=block).order_by("id"))
    writes = []
    for index, version in enumerate(versions):
        after = versions[index + 1].content if index + 1 < len(versions) else block.content
        writes.append({"by": WRITERS.get(version.source, version.source), "at": version.created_at, "before": version.content, "after": after})
    return list(reversed(writes))[:HISTORY_LENGTH]


def memory_context(session: Session, *, error: str = "", open_panel: bool = False) -> dict[str, Any] | None:
    """The context blocks of a Think agent's session, for the memory panel (None: no panel)."""
    agent = load_agent(session)
    # Read through the agent: configure_session and add_context may give it blocks its class lacks.
    blocks = async_to_sync(agent.get_context_blocks)() if isinstance(agent, ThinkAgent) else []
    if not blocks:
        return None
    for block in blocks:
        block["history"] = block_history(session, block["label"]) if block["writable"] else []
    return {"blocks": blocks, "agent": session.agent.slug, "name": session.name, "error": error, "open": open_panel}


def _own_think_session(request: HttpRequest, agent: str, name: str) -> tuple[Session, ThinkAgent] | None:
    session = get_object_or_404(Session.objects.select_related("agent"), agent__slug=agent, name=name, owner=request.user)
    instance = load_agent(session)
    has_blocks = isinstance(instance, ThinkAgent) and bool(async_to_sync(instance.get_context_blocks)())
    return (session, instance) if has_blocks else None


@login_required
@require_GET
def memory_panel(request: HttpRequest, agent: str, name: str) -> HttpResponse:
    found = _own_think_session(request, agent, name)
    if found is None:
        return HttpResponseBadRequest("This agent has no memory panel")
    return render(request, "chat/_memory.html", memory_context(found[0], open_panel=True))


@login_required
@require_POST
def memory_change(request: HttpRequest, agent: str, name: str, label: str, change: str = "save") -> HttpResponse:
    """The owner saves new content, clears the block, or undoes its latest write."""
    found = _own_think_session(request, agent, name)
    if found is None:
        return HttpResponseBadRequest("This agent has no memory panel")
    session, instance = found
    error = ""
    if change == "undo":
        spec = instance.context.specs.get(label)
        block = ContextBlock.objects.filter(session=session, label=label).first()
        if spec is None or not spec.writable or block is None or not undo_last_write(block):
            error = f'Block "{label}" has nothing to undo.'
    elif change in ("save", "clear"):
        try:
            async_to_sync(instance.set_context_block)(label, "" if change == "clear" else request.POST.get("content", ""))
        except ContextBlockError as refused:
            error = str(refused)
    else:
        raise Http404(change)
    return render(request, "chat/_memory.html", memory_context(session, error=error, open_panel=True))
