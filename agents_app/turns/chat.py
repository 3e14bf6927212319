"""Chat protocol operations that change a session: new turns, clear, client message lists.

Called by the WebSocket consumer (and by HTTP views); the turn itself runs in the runner.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction

from agents_app import limits
from agents_app.protocol import frames
from agents_app.protocol.inbound import ChatRequest
from agents_app.protocol.messages import UIMessage
from agents_app.turns import broadcast, runner, transcript_sync, turn_loading
from agents_app.turns.concurrency import Concurrency, is_busy
from agents_app.turns.instances import load_agent
from agents_app.turns.registry import agent_class
from agents_app.turns.types import Connection, TurnRequest
from agents_app.storage import client_messages, transcript
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session, Turn, TurnChunk
from agents_app.testing import timeline

logger = logging.getLogger(__name__)


@dataclass
class _Accepted:
    turn: Turn
    created: bool  # False: the same request id again, which never runs twice
    taken: turn_loading.TakenAtAdmission | None


class _RepeatedRequest(Exception):
    """A request id already admitted: its admission writes nothing, and nothing runs twice."""

    def __init__(self, turn: Turn) -> None:
        super().__init__(turn.request_id)
        self.turn = turn


def _accept(session: Session, request: TurnRequest, chat: ChatRequest) -> _Accepted | None:
    """Admission and the writes it implies commit together: a turn is never left queued for
    messages that failed to store (it would block the session's queue). A turn with no other
    before it takes its session's lock in the write that stores its messages, is recorded
    as running, and is loaded in the same call once that commits, over the session's row as
    the admission read it (with what its agent class reads before every turn). None: `drop`
    concurrency rejected an overlapping submit, and nothing was stored."""
    agent_cls = agent_class(session.agent.slug)
    try:
        with transaction.atomic():
            if _drops(session, chat):
                return None
            locked = client_messages.lock_session(session.pk, limits.counted_owner(session.owner_id), agent_cls)
            session_busy = limits.check_unfinished(locked.unfinished, session.owner_id)
            stored = client_messages.admit(session, chat.messages, lock_for=None if session_busy else request.request_id, locked=locked)
            turn, created = runner.admit(request, session_busy=session_busy, holds_lock=stored.holds_lock)
            if not created:
                raise _RepeatedRequest(turn)  # undoes the messages' write and the lock
    except _RepeatedRequest as repeated:
        return _Accepted(repeated.turn, False, None)
    if not stored.holds_lock:
        return _Accepted(turn, True, None)
    return _Accepted(turn, True, turn_loading.load_after_admission(request, turn, locked.row, stored.transcript))


def _drops(session: Session, request: ChatRequest) -> bool:
    """`drop` concurrency rejects an overlapping submit before anything is stored."""
    if request.trigger != "submit-message":
        return False
    policy = Concurrency.parse(getattr(load_agent(session), "message_concurrency", "queue"))
    return policy.strategy == "drop" and is_busy(session.pk)


async def submit(session: Session, connection: Connection | None, request: ChatRequest) -> None:
    """A cf_agent_use_chat_request: persist the client's messages, then queue the turn (§5.1).
    The session's other connections get the transcript as stored; without a connection (the
    chat page's HTTP send) every socket of the session does."""
    turn_request = TurnRequest(
        session_id=session.pk,
        request_id=request.request_id,
        source=Turn.Source.WEBSOCKET,
        trigger=request.trigger,
        client_tools=request.client_tools,
        body=request.body,
        origin=connection,
        answers=request.messages[-1]["id"] if request.messages else "",
    )
    try:
        accepted = await db_async(_accept)(session, turn_request, request)
    except Exception as error:  # the turn does not exist: its requester is the only one waiting for it
        if isinstance(error, limits.LimitReached):
            text = str(error)
        else:
            logger.exception("turn %s could not be admitted", request.request_id)
            text = runner.ADMISSION_FAILED
        if connection is not None:
            await broadcast.send_to_channel(
                connection.channel_name, [frames.chat_response(request.request_id, text, done=True, error=True)]
            )
        return
    if accepted is None:  # dropped: the requester's view goes back to what is stored
        if connection is not None:
            current = await db_async(transcript.transcript)(session)
            await broadcast.send_to_channel(
                connection.channel_name, [frames.chat_messages(current), frames.chat_response(request.request_id, done=True)]
            )
        return
    if not accepted.created:
        return
    timeline.mark(request.request_id, "admitted")
    try:
        await transcript_sync.send_to_others(session, connection)
    except Exception:  # the turn runs all the same: it may hold its session's lock already
        logger.exception("turn %s: the transcript could not reach the session's other connections", request.request_id)
    await runner.start_turn(turn_request, admitted=accepted.turn, taken=accepted.taken)


def _running(session: Session) -> list[str]:
    """Request ids of the session's turns that run now (queued ones have not started)."""
    return list(
        Turn.objects.filter(session=session, status__in=(Turn.Status.RUNNING, Turn.Status.STREAMING)).values_list(
            "request_id", flat=True
        )
    )


async def stop(session: Session) -> None:
    """Abort the session's running turns, wherever they run; queued turns still run."""
    for request_id in await db_async(_running)(session):
        await runner.cancel(session.pk, request_id)


def _clear(session: Session) -> list[str]:
    running = _running(session)
    Turn.objects.filter(session=session, status=Turn.Status.QUEUED).update(status=Turn.Status.SKIPPED)
    transcript.clear_messages(session)
    TurnChunk.objects.filter(turn__session=session).delete()
    Session.objects.filter(pk=session.pk).update(terminal=None, request_context={})
    return running


async def clear(session: Session, connection: Connection | None) -> None:
    """cf_agent_chat_clear: abort and skip turns, delete the conversation, tell the others (§5.3)."""
    running = await db_async(_clear)(session)
    for request_id in running:
        await runner.cancel(session.pk, request_id)
    exclude = (connection.id,) if connection is not None else ()
    await broadcast.broadcast(session.pk, [frames.chat_clear()], exclude=exclude)
    await broadcast.release_parked(session.pk)


def _delete(session_id: int) -> None:
    """Delete a session whose aborted turn may still be writing from another thread or
    process. Its row and its turns' rows are locked first (SQLite: the transaction holds
    the write lock), so no message or chunk can be added between collecting the rows that
    cascade and deleting them; the turn's late write fails and ends the turn instead."""
    with transaction.atomic():
        list(Session.objects.select_for_update().filter(pk=session_id).values_list("pk", flat=True))
        list(Turn.objects.select_for_update().filter(session_id=session_id).values_list("pk", flat=True))
        Session.objects.filter(pk=session_id).delete()


async def destroy(session: Session) -> None:
    """Abort and skip the session's turns, tell its clients it was cleared, delete it."""
    await clear(session, None)
    await db_async(_delete)(session.pk)


async def set_messages(session: Session, connection: Connection, messages: list[UIMessage]) -> None:
    """cf_agent_chat_messages from a client: reconcile and upsert, never delete (§5.4)."""
    reconciled = await db_async(client_messages.upsert)(session, messages, move_leaf=False)
    await broadcast.broadcast(session.pk, [frames.chat_messages(reconciled)], exclude=(connection.id,))
