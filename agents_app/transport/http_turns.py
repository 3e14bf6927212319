"""Turns started over HTTP, and the HTTP responses that follow them.

A turn started over HTTP is admitted and run by the same runner as a WebSocket turn, in the
background of this process: connected WebSocket clients watch it stream, it is persisted
the same way, and it keeps running when the HTTP client goes away. The HTTP response only
*follows* the turn: from its chunk log, and, while the turn streams in this process, from the
chunks this process broadcasts (a `LiveTail`), so following is the same code whether the turn
started a moment ago on this request or elsewhere (re-attach by request id, from any server
process).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.http import HttpResponse

from agents_app.protocol.messages import UIMessage
from agents_app.storage import chunk_log, transcript
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Turn
from agents_app.transport.responses import json_response, sse_response, text_stream_response, ui_message_stream_response
from agents_app.turns import runner, stream_publisher
from agents_app.turns.types import TurnRequest, new_request_id

if TYPE_CHECKING:
    from agents_app.agents.chat_agent import AIChatAgent

# How often a follower looks for new chunks in the log and for the turn's end. Chunks a turn
# streaming in this process broadcasts wake it at once; while it follows, such a turn is
# stored every FOLLOWED_STORE_INTERVAL (0.1 s), so polling faster would only cost queries.
FOLLOW_POLL_SECONDS = 0.05
# The runner marks a turn finished, then persists the reply and releases the session's turn
# lock. A follower waits for that release (so a client reading get-messages right after the
# stream sees the reply), but no longer than this if the process died in between.
PERSIST_WAIT_SECONDS = 5.0
# A follower that cannot read the database for this long ends with an error (re-attach later).
DATABASE_OUTAGE_SECONDS = 15.0
LOST_DATABASE = "The server lost its database while following this turn. Re-attach to read how it ended."


class UnknownTurn(LookupError):
    pass


@dataclass(frozen=True)
class TurnOutcome:
    request_id: str
    status: str
    message: UIMessage | None
    error: str

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"requestId": self.request_id, "status": self.status, "message": self.message}
        if self.error:
            result["error"] = self.error
        return result


@dataclass(frozen=True)
class HttpTurn:
    """A turn of one session, addressed by its request id: follow its stream or await its end.
    `task` is the runner's task when the turn runs in this process."""

    session_id: int
    request_id: str
    task: asyncio.Task[Any] | None = field(default=None, compare=False)

    async def chunks(self, from_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Its UI chunks from `from_seq`: the stored ones first, then the live tail, until it
        ends. A failed turn ends with an `error` chunk carrying the message clients see."""
        with contextlib.ExitStack() as following:
            async for chunk in self._follow(from_seq, following):
                yield chunk

    async def _follow(self, from_seq: int, following: contextlib.ExitStack) -> AsyncIterator[dict[str, Any]]:
        """`chunks`, with the turn registered in `following` as followed once its id is known."""
        tail: stream_publisher.LiveTail | None = None
        next_seq = from_seq
        finished_at: float | None = None
        outage_since: float | None = None
        unrecorded_seen = False
        loop = asyncio.get_running_loop()
        while True:
            if tail is not None and (live := tail.take_from(next_seq)):
                # Broadcast by this process just now: no database read while the stream flows.
                for seq, body in live:
                    next_seq = seq + 1
                    yield json.loads(body)
                await tail.wait(FOLLOW_POLL_SECONDS)
                continue
            try:
                turn_id, status, error, lock_holder = await db_async(self._state)()
                if tail is None:
                    tail = following.enter_context(stream_publisher.followed(turn_id))
                    if self.task is not None:  # its end is read as soon as it is recorded
                        self.task.add_done_callback(lambda _: tail.wake())
                # Status is read before the chunks: the runner stores every chunk before it marks
                # the turn finished, so a finished status means nothing is left to arrive.
                pairs = await db_async(chunk_log.read_bodies)(turn_id, next_seq)
            except DatabaseError:
                # Waiting out a database restart; a turn that failed here ends at once.
                outage_since = outage_since or loop.time()
                failed = self._ended_here()
                if failed or loop.time() - outage_since > DATABASE_OUTAGE_SECONDS:
                    yield {"type": "error", "errorText": failed or LOST_DATABASE}
                    return
                await asyncio.sleep(FOLLOW_POLL_SECONDS * 4)
                continue
            outage_since = None
            for seq, body in pairs:
                next_seq = seq + 1
                if body is not None:
                    yield json.loads(body)
            ended = self._ended_here()
            if status not in Turn.FINISHED and ended is not None:
                if unrecorded_seen:
                    # The runner here finished but could not record it (its database write failed).
                    if ended:
                        yield {"type": "error", "errorText": ended}
                    return
                unrecorded_seen = True  # read once more: it may have been recorded just now
                continue
            if status in Turn.FINISHED:
                finished_at = finished_at or loop.time()
                if lock_holder != self.request_id or loop.time() - finished_at > PERSIST_WAIT_SECONDS:
                    if status == Turn.Status.ERROR and error:
                        yield {"type": "error", "errorText": error}
                    return
            await tail.wait(FOLLOW_POLL_SECONDS)

    def _ended_here(self) -> str | None:
        """How the turn ended in this process, when its runner task is done, else None."""
        if self.task is None or not self.task.done() or self.task.cancelled() or self.task.exception() is not None:
            return None
        result = self.task.result()
        return (result.error or "The agent failed to answer.") if result.status == "error" else ""

    async def text(self, from_seq: int = 0) -> AsyncIterator[str]:
        """Only the answer's text, as it streams."""
        async for chunk in self.chunks(from_seq):
            if chunk.get("type") == "text-delta":
                yield chunk.get("delta", "")

    async def outcome(self) -> TurnOutcome:
        """Wait for the turn to end; the persisted reply and its status."""
        failure = ""
        async for chunk in self.chunks():
            if chunk.get("type") == "error":
                failure = chunk.get("errorText", "")
        try:
            return await db_async(self._outcome)()
        except DatabaseError:
            return TurnOutcome(self.request_id, "error", None, failure or LOST_DATABASE)

    def _state(self) -> tuple[int, str, str, str]:
        row = (
            Turn.objects.filter(session_id=self.session_id, request_id=self.request_id)
            .values_list("id", "status", "error_text", "session__turn_lock")
            .first()
        )
        if row is None:
            raise UnknownTurn(self.request_id)
        return row

    def _outcome(self) -> TurnOutcome:
        turn = Turn.objects.select_related("session").get(session_id=self.session_id, request_id=self.request_id)
        message = None
        if turn.message_uid:
            path = transcript.history(turn.session, turn.message_uid)
            message = path[-1] if path and path[-1]["id"] == turn.message_uid else None
        return TurnOutcome(turn.request_id, turn.status, message, turn.error_text)


def find_turn(session_id: int, request_id: str) -> HttpTurn:
    """An existing turn of this session (raises UnknownTurn): for re-attaching to its stream."""
    if not Turn.objects.filter(session_id=session_id, request_id=request_id).exists():
        raise UnknownTurn(request_id)
    return HttpTurn(session_id, request_id)


async def start_turn(
    agent: AIChatAgent,
    messages: list[UIMessage],
    *,
    body: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> HttpTurn:
    """Store `messages` and answer them with a turn run in the background of this process.
    Returns at once; a repeated `request_id` returns the existing turn without running it again."""
    request = TurnRequest(
        session_id=agent.session.pk,
        request_id=request_id or new_request_id(),
        source=Turn.Source.HTTP,
        body=body,
        new_messages=messages,
    )
    # AdmissionFailed: 503; LimitReached: 429
    started = await runner.start_turn(request, limited=True, owner_id=agent.session.owner_id)
    return HttpTurn(agent.session.pk, started.turn.request_id, started.task)


async def turn_response(turn: HttpTurn, fmt: str, *, from_seq: int = 0) -> HttpResponse:
    """The turn in the requested format: ui (UI message stream), sse (plain `data:` events of
    the answer's text), text (streamed text) or json (after the turn ends)."""
    headers = {"X-Request-Id": turn.request_id}
    if fmt == "json":
        outcome = await turn.outcome()
        return json_response(outcome.as_dict(), headers=headers)
    if fmt == "text":
        return text_stream_response(turn.text(from_seq), headers=headers)
    if fmt == "sse":
        return sse_response(_text_events(turn, from_seq), done_marker="[DONE]", headers=headers)
    return ui_message_stream_response(turn.chunks(from_seq), request_id=turn.request_id)


async def _text_events(turn: HttpTurn, from_seq: int) -> AsyncIterator[dict[str, Any]]:
    async for chunk in turn.chunks(from_seq):
        if chunk.get("type") == "text-delta":
            yield {"text": chunk.get("delta", "")}
        elif chunk.get("type") == "error":
            yield {"error": chunk.get("errorText", "")}
