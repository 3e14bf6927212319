"""Sending from the chat page, and the visible queue.

A message sent while the agent is answering (or while earlier messages still wait) is held
as a queued bubble the user can edit or cancel. When the turn ends, the queue is released
the way the agent's message concurrency strategy (protocol §9.12) treats overlapping
messages: `queue` sends them one turn at a time, `latest` and `debounce` send only the
newest, `merge` sends them joined as one message; `drop` refuses a message sent meanwhile.
Releasing runs after every turn, whatever started it (turns/turn_listeners.py).
"""
from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from agents_app.protocol.inbound import ChatRequest
from agents_app.protocol.messages import UIMessage
from agents_app.turns import chat
from agents_app.turns.types import new_request_id
from agents_app.turns.concurrency import Concurrency, is_busy
from agents_app.turns.instances import load_agent, session_with_agent
from agents_app.turns.turn_listeners import on_turn_finished
from agents_app.turns.types import TurnResult
from agents_app.storage import transcript
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session
from agents_app.ui.models import QueuedMessage


class SendRefused(ValueError):
    """The message was not sent; the text says why."""


def user_message(text: str, file_parts: list[dict[str, Any]]) -> UIMessage:
    parts: list[dict[str, Any]] = [*file_parts]
    if text:
        parts.append({"type": "text", "text": text})
    return {"id": uuid.uuid4().hex[:16], "role": "user", "parts": parts}


def strategy_of(session: Session) -> Concurrency:
    return Concurrency.parse(getattr(load_agent(session), "message_concurrency", "queue"))


def _must_wait(session: Session) -> bool:
    return is_busy(session.pk) or QueuedMessage.objects.filter(session=session).exists()


async def submit(session: Session, message: UIMessage) -> None:
    history = await db_async(transcript.transcript)(session)
    await chat.submit(session, None, ChatRequest(new_request_id(), [*history, message], "submit-message", None, None))


async def send(session: Session, text: str, file_parts: list[dict[str, Any]]) -> bool:
    """Send now, or queue while the agent answers. True when the message was queued."""
    if await db_async(_must_wait)(session):
        if (await db_async(strategy_of)(session)).strategy == "drop":
            raise SendRefused("The assistant is still answering and this agent ignores messages sent meanwhile. Wait for the answer or stop it.")
        await db_async(QueuedMessage.objects.create)(session=session, text=text, files=file_parts)
        await release(session.pk)  # the answer may have ended while the message was stored
        return True
    await submit(session, user_message(text, file_parts))
    return False


@transaction.atomic
def _claim(session: Session) -> UIMessage | None:
    """Take what the strategy sends next out of the queue; None when nothing is due.
    Deleting is the claim: of two releases racing, only the one that deleted sends."""
    queued = list(QueuedMessage.objects.filter(session=session).order_by("id"))
    if not queued or is_busy(session.pk):
        return None
    strategy = strategy_of(session).strategy
    if strategy in ("latest", "debounce"):
        taken, sent = queued, [queued[-1]]
    elif strategy == "merge":
        taken = sent = queued
    else:
        taken = sent = queued[:1]
    deleted, _ = QueuedMessage.objects.filter(pk__in=[q.pk for q in taken]).delete()
    if deleted != len(taken):
        return None
    text = "\n\n".join(q.text for q in sent if q.text)
    return user_message(text, [part for q in sent for part in q.files])


# Whether a session has a queued message: asked after every turn of every chat.
_ANY_QUEUED = CompiledQuery(lambda pk: QueuedMessage.objects.filter(session_id=pk).values_list("pk")[:1])


async def release(session_id: int) -> None:
    # After every turn of every chat: on the database threads, not asgiref's one shared thread,
    # and one compiled query when nothing is queued (the usual case).
    if await db_async(_ANY_QUEUED.row)(session_id) is None:
        return
    session = await db_async(session_with_agent)(session_id)
    if session is None:
        return
    message = await db_async(_claim)(session)
    if message is not None:
        await submit(session, message)


@on_turn_finished
async def release_after_turn(session_id: int, result: TurnResult) -> None:
    await release(session_id)


def edit_queued(session: Session, queued_id: int, text: str) -> bool:
    """False when the message has been sent (or cancelled) meanwhile."""
    return QueuedMessage.objects.filter(session=session, pk=queued_id).update(text=text) == 1


def cancel_queued(session: Session, queued_id: int) -> bool:
    deleted, _ = QueuedMessage.objects.filter(session=session, pk=queued_id).delete()
    return deleted == 1


def queued(session: Session) -> list[QueuedMessage]:
    return list(QueuedMessage.objects.filter(session=session).order_by("id"))
