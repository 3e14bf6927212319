"""A turn's last writes: the rest of its chunk log, its reply and its outcome, in one transaction.

A streamed turn used to end with four database calls, each a hop to a database thread and
(but one) a transaction of its own: the chunk log's last batch, the reply, the trim to
`max_persisted_messages`, the turn's status. Turns that end together (they began together)
queue every one of those calls on the database threads and, on SQLite, on its one write
lock, and no done frame leaves before its turn's writes are done. Here they are one call and
one commit, with the turn's model-call log lines (gateway/call_log.HeldCalls), which its
model calls used to write each in a call of their own just before the stream's last chunks.
A failure leaves none of them written: the runner's failure path then stores what it can
step by step, as after a failure anywhere else in a turn.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from agents_app.protocol.messages import UIMessage
from agents_app.storage import chunk_log, row_writes, transcript
from agents_app.storage.models import Session, Turn
from agents_app.testing import faults


@dataclass(frozen=True)
class Outcome:
    """How a turn ended, as its row records it."""

    status: str  # a Turn.Status value
    error: str = ""
    message_uid: str = ""  # the reply's id, "" without one


@dataclass(frozen=True)
class Reply:
    """A turn's answer, stored right after the message it answers (`anchor_uid`)."""

    session: Session
    message: UIMessage
    anchor_uid: str | None
    keep_at_most: int | None  # the agent's max_persisted_messages
    succeeded: bool  # the session's last failure is cleared in the reply's own write


def record_outcome(turn: Turn, outcome: Outcome, *, terminal_settled: bool = False) -> None:
    """The turn's status, and the session's last failure: this turn's error, or none.
    `terminal_settled`: the reply's write already cleared it."""
    row_writes.update(
        Turn, {"pk": turn.pk}, status=outcome.status, finished_at=timezone.now(), error_text=outcome.error, message_uid=outcome.message_uid
    )
    if not terminal_settled:
        terminal = {"requestId": turn.request_id, "body": outcome.error} if outcome.status == Turn.Status.ERROR else None
        row_writes.update(Session, {"pk": turn.session_id}, terminal=terminal)


def save_reply(reply: Reply) -> None:
    transcript.save_reply(reply.session, reply.message, reply.anchor_uid, clear_terminal=reply.succeeded)
    transcript.trim_to(reply.session, reply.keep_at_most)


def store(
    turn: Turn, chunks: chunk_log.Batch | None, reply: Reply | None, outcome: Outcome, *, also: Callable[[], object] | None = None
) -> None:
    """Everything a turn still has to write once its stream has ended, all or nothing.
    `also`: writes of the floors above (the gateway's call log), made first in the same
    transaction; one that must not fail the ending catches its own errors."""
    with transaction.atomic():
        if also is not None:
            also()
        if chunks is not None:
            chunk_log.write_batch(*chunks)
        if reply is not None:
            faults.point("reply_write")
            save_reply(reply)
        settled = reply is not None and reply.succeeded and outcome.status != Turn.Status.ERROR
        record_outcome(turn, outcome, terminal_settled=settled)
