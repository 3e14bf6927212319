"""Auto-continuation after client tool results and approval decisions (protocol §9.3, §9.4).

The continuation is a turn of its own (server-generated request id, `continuation: true`)
that extends the last assistant message. It is admitted as soon as every tool call of that
message is answered — so resume probes see it as pending at once — and starts after a short
coalescing window, through the same turn queue as every other turn.
"""
from __future__ import annotations

from typing import Any

from django.db import transaction

from agents_app.protocol.messages import is_tool_part
from agents_app.turns import repair, runner
from agents_app.turns.instances import load_agent
from agents_app.turns.types import TurnRequest, new_request_id
from agents_app.storage import transcript
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session, Turn

COALESCE_SECONDS = 0.05
_CONTINUATION_REQUESTED = "continuationRequested"


def _admit_if_ready(session_id: int, wants_continuation: bool, client_tools: list[dict[str, Any]] | None) -> tuple[TurnRequest, Turn] | None:
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        context = dict(session.request_context or {})
        if not (wants_continuation or context.get(_CONTINUATION_REQUESTED)):
            return None
        waiting_for = load_agent(session).client_tool_names()  # the result's clientTools are stored by now
        latest = transcript.latest_assistant(session)
        # Only the user or the browser can still answer; a call whose process died never will
        # (the continuation's transcript repair gives it an errored result).
        if any(is_tool_part(p) and repair.awaits_client(p, waiting_for) for p in (latest or {}).get("parts", [])):
            # A sibling call is still open: remember that someone opted in (§9.3a).
            context[_CONTINUATION_REQUESTED] = True
            Session.objects.filter(pk=session_id).update(request_context=context)
            return None
        context.pop(_CONTINUATION_REQUESTED, None)
        Session.objects.filter(pk=session_id).update(request_context=context)
        already_pending = Turn.objects.filter(session_id=session_id, is_continuation=True, status=Turn.Status.QUEUED).exists()
        if already_pending:
            return None
        request = TurnRequest(
            session_id=session_id,
            request_id=new_request_id(),
            source=Turn.Source.CONTINUATION,
            continuation=True,
            client_tools=client_tools or context.get("lastClientTools"),
            body=context.get("lastBody"),
        )
        turn, _ = runner.admit(request)
        return request, turn


async def after_tool_answer(
    session: Session, *, wants_continuation: bool, client_tools: list[dict[str, Any]] | None
) -> str | None:
    """Admit and schedule the continuation when it is due; returns its request id."""
    admitted = await db_async(_admit_if_ready)(session.pk, wants_continuation, client_tools)
    if admitted is None:
        return None
    request, turn = admitted
    await runner.start_turn(request, admitted=turn, delay=COALESCE_SECONDS)
    return request.request_id
