"""The one turn runner. Every turn — WebSocket, HTTP, Celery, programmatic, continuation —
is admitted, run, streamed, persisted and broadcast here, never bound to a connection.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from agents_app import limits
from agents_app.gateway import call_log
from agents_app.gateway import scope as gateway_scope
from agents_app.protocol import frames
from agents_app.protocol.message_builder import MessageBuilder
from agents_app.protocol.messages import UIMessage, normalize_messages
from agents_app.turns import broadcast, cancellation, chat_errors, concurrency, repair, response_stream, transcript_sync, turn_end, turn_listeners, turn_loading, turn_lock
from agents_app.turns.agent_interface import ChatAgent
from agents_app.turns.stream_publisher import StreamPublisher
from agents_app.turns.types import ChatErrorContext, ChatOptions, ChatResponseResult, TurnRequest, TurnResult
from agents_app.storage import chunk_log, db_threads, query_count, row_writes, transcript, turn_ending
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session, Turn
from agents_app.testing import faults

logger = logging.getLogger(__name__)

# Keeps background turns referenced until they finish.
_tasks: set[asyncio.Task[Any]] = set()

ADMISSION_FAILED = "The server could not start this turn. Please try again."


class AdmissionFailed(Exception):
    """A turn could not even be recorded; callers answer with their own error outcome."""


def admit(request: TurnRequest, *, session_busy: bool | None = None, holds_lock: bool = False) -> tuple[Turn, bool]:
    """Record an accepted turn (status queued). Returns (turn, created); a repeated request id
    returns the existing turn so that a turn never runs twice. `session_busy`: whether another
    turn is queued or running, when the caller already knows (`limits.check_turn_admission`).
    `holds_lock`: the caller's transaction took the session's turn lock for this request id,
    so the turn is recorded as running (turn_lock.running_now)."""
    faults.point("admission")
    subject_to_concurrency = request.source == Turn.Source.WEBSOCKET and request.trigger == "submit-message"
    turn = Turn(
        session_id=request.session_id,
        request_id=request.request_id,
        source=request.source,
        trigger=request.trigger,
        is_continuation=request.continuation,
        recovery_root=request.recovery_root,
        overlapping=subject_to_concurrency
        and (concurrency.is_busy(request.session_id) if session_busy is None else session_busy),
        **(turn_lock.running_now() if holds_lock else {"heartbeat_at": timezone.now()}),
    )
    # A repeated request id inserts nothing (no savepoint: the caller's transaction goes on).
    if row_writes.insert(turn, unless_conflict_on=("session", "request_id")):
        return turn, True
    return Turn.objects.get(session_id=request.session_id, request_id=request.request_id), False


async def admit_turn(request: TurnRequest, *, limited: bool = False, owner_id: int | None = None) -> tuple[Turn, bool]:
    """`admit` from async code; with `limited`, inside one transaction with the deployment's
    turn limits for `owner_id` (LimitReached passes through). Whatever else fails is logged
    and raised as AdmissionFailed."""
    try:
        if limited:
            return await db_async(_admit_within_limits)(request, owner_id)
        return await db_async(admit)(request)
    except limits.LimitReached:
        raise
    except Exception as error:
        logger.exception("turn %s could not be admitted", request.request_id)
        raise AdmissionFailed(ADMISSION_FAILED) from error


@transaction.atomic
def _admit_within_limits(request: TurnRequest, owner_id: int | None) -> tuple[Turn, bool]:
    session_busy = limits.check_turn_admission(request.session_id, owner_id)
    return admit(request, session_busy=session_busy)


@dataclass
class StartedTurn:
    """What `start_turn` did: the turn row (a repeated request id finds the existing one),
    and the task running it when this call created it."""

    turn: Turn
    task: asyncio.Task[TurnResult] | None

    @property
    def created(self) -> bool:
        return self.task is not None

    async def result(self) -> TurnResult:
        """The turn's outcome once it ends; "skipped" for a request id that already existed."""
        if self.task is None:
            return TurnResult(self.turn.request_id, "skipped")
        return await self.task


async def start_turn(
    request: TurnRequest,
    *,
    admitted: Turn | None = None,
    taken: turn_loading.TakenAtAdmission | None = None,
    limited: bool = False,
    owner_id: int | None = None,
    delay: float = 0.0,
) -> StartedTurn:
    """The one way a turn starts: admit it (`admit_turn`; AdmissionFailed and LimitReached
    pass through), then run it in the background of this process, after `delay` seconds.
    A caller that must admit inside its own transaction (with the writes that go with the
    turn) passes the row as `admitted`, and what its admission's call took and loaded as
    `taken` (turn_loading.load_after_admission). A request id already admitted starts nothing."""
    if admitted is None:
        admitted, created = await admit_turn(request, limited=limited, owner_id=owner_id)
        if not created:
            return StartedTurn(admitted, None)
    turn = admitted

    async def run_after_delay() -> TurnResult:
        if delay:
            await asyncio.sleep(delay)
        return await _run(request, turn, taken)

    # The turn's database calls, and its tasks', rank by when it began (db_threads).
    with db_threads.oldest_first(db_threads.turn_began()):
        return StartedTurn(turn, keep(asyncio.create_task(run_after_delay())))


def keep(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Hold a reference to a background task until it finishes (asyncio only keeps weak ones)."""
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


async def cancel(session_id: int, request_id: str) -> None:
    """Abort this session's turn `request_id` wherever it runs; unknown or finished ids, and
    other sessions' turns, are a no-op."""
    await cancellation.request_cancel(session_id, request_id)


async def _run(request: TurnRequest, turn: Turn, taken: turn_loading.TakenAtAdmission | None) -> TurnResult:
    """Run an admitted turn to its one outcome. Never raises for a failure inside the turn:
    every exception ends it through `_fail`, so every waiter learns how it ended."""
    with query_count.turn(request.request_id):
        result = await _run_to_outcome(request, turn, taken)
    # Outside the turn's gateway scope: a listener's model calls are not this turn's.
    turn_listeners.notify(request.session_id, result)
    return result


async def _run_to_outcome(request: TurnRequest, turn: Turn, taken: turn_loading.TakenAtAdmission | None) -> TurnResult:
    progress = _Progress()
    try:
        return await _run_locked(progress, request, turn, taken)
    except Exception as error:
        if progress.result is not None:  # raised after the outcome was delivered
            logger.exception("turn %s: cleanup after the outcome failed", request.request_id)
            return progress.result
        result = await _fail(progress, request, turn, error)
        await _release(request)
        return result


@dataclass
class _Progress:
    """How far a turn got: what the one failure path must keep and who it must tell."""

    agent: ChatAgent | None = None
    session: Session | None = None
    anchor: str | None = None
    builder: MessageBuilder | None = None
    publisher: StreamPublisher | None = None
    reply_saved: bool = False
    terminal_cleared: bool = False  # the reply's write also cleared the session's last failure
    held_calls: call_log.HeldCalls = field(default_factory=call_log.HeldCalls)  # written with the ending
    result: TurnResult | None = None  # set once the outcome is delivered


async def _run_locked(progress: _Progress, request: TurnRequest, turn: Turn, taken: turn_loading.TakenAtAdmission | None) -> TurnResult:
    heartbeat: asyncio.Task[None] | None = None
    with contextlib.ExitStack() as gateway:
        async with cancellation.abort_signal(request.session_id, request.request_id) as abort:
            try:
                if taken is not None:
                    loaded: turn_loading.Loaded | None = taken.result()
                else:
                    loaded = await turn_lock.acquire(request.session_id, turn.pk, turn.request_id, functools.partial(turn_loading.load_for_turn, request, turn))
                if loaded is None:
                    await _skip(request, turn)
                    return TurnResult(request.request_id, "skipped")
                heartbeat = asyncio.create_task(_keep_alive(turn.pk))
                progress.agent = loaded.agent
                # The gateway attributes the turn's model calls (log, limits, budgets) to this scope.
                gateway.enter_context(gateway_scope.turn_scope(request.session_id, request.request_id, request.body, loaded.caller, progress.held_calls))
                if not await _admitted_by_policy(progress.agent, turn):
                    await _skip(request, turn)
                    return TurnResult(request.request_id, "skipped")
                result = await _execute(progress, request, turn, abort, loaded.context)
            except Exception as error:
                result = await _fail(progress, request, turn, error)
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                await _release(request)
        await _attempt(request, "sweeping stream buffers", _sweep_stale_buffers())
        await _write_held_calls(request, progress)  # a turn that ended before its outcome was sent
        if progress.agent is not None:
            await _safe_on_chat_response(progress.agent, request, result)
    return result


async def _release(request: TurnRequest) -> None:
    """The lock is released whatever happened; should even that fail, the turn row is
    finished, so the next turn takes the lock over at once."""
    try:
        faults.point("lock_release")
        await turn_lock.release(request.session_id, request.request_id)
    except Exception:
        logger.exception("turn %s: releasing the turn lock failed", request.request_id)
        with contextlib.suppress(Exception):
            await turn_lock.release(request.session_id, request.request_id)


async def _fail(progress: _Progress, request: TurnRequest, turn: Turn, error: Exception) -> TurnResult:
    """The one ending of a turn that raised, wherever: what streamed is kept as the partial
    answer, and every waiter gets the error outcome. Each step is attempted on its own, so
    a database or channel-layer outage still lets the others through."""
    exists = await _attempt(request, "checking the session", db_async(Session.objects.filter(pk=request.session_id).exists)())
    if exists is False:
        return TurnResult(request.request_id, "aborted")  # destroyed while the turn ran: nothing to persist to
    logger.error("turn %s failed: %s", request.request_id, error, exc_info=error)
    text = chat_errors.error_text(progress.agent, error, ChatErrorContext("turn", request.request_id), "The agent failed to answer.")
    message = None
    if progress.publisher is not None:
        await _attempt(request, "storing the streamed chunks", progress.publisher.flush())
    if progress.builder is not None and progress.publisher is not None:
        message = progress.builder.finalize()
        has_content = any(part.get("type") != "step-start" for part in message["parts"])
        if has_content and not progress.reply_saved:
            await _attempt(request, "keeping the partial answer", _retrying(lambda: _save_reply(progress, message, checked=False)))
    return await _conclude(progress, request, turn, response_stream.StreamOutcome("error", text), message)


async def _attempt(request: TurnRequest, what: str, step: Any) -> Any:
    """Await one step of ending a turn; a failure is logged and the next step still runs."""
    try:
        return await step
    except Exception:
        logger.exception("turn %s: %s failed", request.request_id, what)
        return None


async def _retrying(write: Callable[[], Awaitable[None]]) -> None:
    """A database write of a turn's ending, retried for a few seconds: long enough to ride
    out a database restart, short enough that clients hear the outcome in seconds."""
    deadline = time.monotonic() + DATABASE_RETRY_SECONDS
    while True:
        try:
            return await write()
        except DatabaseError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.25)


async def _keep_alive(turn_id: int) -> None:
    """Heart-beat while this process runs the turn: a turn that stops beating was lost with
    its process and is recovered elsewhere (see recovery.py)."""
    interval = settings.AGENTS_TURN_STALE_SECONDS / 4
    while True:
        await asyncio.sleep(interval)
        try:
            await db_async(row_writes.update)(Turn, {"pk": turn_id}, heartbeat_at=timezone.now())
        except DatabaseError:  # a database restart: the turn itself fails or carries on
            logger.warning("turn %s: heartbeat failed", turn_id, exc_info=True)


_last_sweep = 0.0
SWEEP_INTERVAL = 60.0
DATABASE_RETRY_SECONDS = 5.0


async def _sweep_stale_buffers() -> None:
    """Drop chunk logs nobody can resume any more, at most once a minute per process."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep >= SWEEP_INTERVAL:
        _last_sweep = now
        await db_async(chunk_log.sweep)()


async def _admitted_by_policy(agent: ChatAgent, turn: Turn) -> bool:
    """Message concurrency at the moment a queued submit starts (protocol §9.12)."""
    policy = turn_loading.policy_at_start(agent, turn)
    if policy is None:
        return True
    if policy.strategy == "debounce" and turn.overlapping:  # the first submit on an idle agent runs at once
        await concurrency.wait_for_quiet_window(turn, policy)
    if await db_async(concurrency.has_newer_overlapping_submit)(turn):
        return False
    if policy.strategy == "merge" and agent.merges_queued_user_messages:
        if await db_async(concurrency.merge_trailing_user_messages)(agent.session):
            # Every tab, the senders included, still shows the separate messages it sent.
            merged = await db_async(transcript.transcript)(agent.session)
            await broadcast.broadcast(turn.session_id, [frames.chat_messages(merged)])
    return True


async def _skip(request: TurnRequest, turn: Turn) -> None:
    """A skipped turn answers its own requester only, and settles without releasing parked
    connections while a successor may still stream."""
    await db_async(turn_ending.record_outcome)(turn, turn_ending.Outcome(Turn.Status.SKIPPED))
    if request.origin is not None:
        await broadcast.send_to_channel(request.origin.channel_name, [frames.chat_response(request.request_id, done=True)])
    await turn_end.settle(turn, streamed=False)


async def _safe_on_chat_response(agent: ChatAgent, request: TurnRequest, result: TurnResult) -> None:
    try:
        faults.point("on_chat_response")
        await agent.on_chat_response(
            ChatResponseResult(result.message, request.request_id, request.continuation, result.status, result.error)
        )
    except Exception:  # a failing hook must not break the turn that already completed
        logger.exception("on_chat_response failed for %s", request.request_id)


async def _persist_new_messages(request: TurnRequest, session: Session) -> turn_loading.TurnContext:
    """Store the turn's new messages (an HTTP turn's, save_messages'), and read its context in
    the same database call; every connection gets the transcript. The function form of
    save_messages sees the transcript as it is when the turn starts."""
    new = request.new_messages
    if callable(new):
        new = new(await db_async(transcript.transcript)(session))
        if inspect.isawaitable(new):
            new = await new
    context = await db_async(turn_loading.store_then_load)(request, session, normalize_messages(new))
    await broadcast.broadcast(session.pk, [frames.chat_messages(context[1])])
    return context


async def _execute(progress: _Progress, request: TurnRequest, turn: Turn, abort: asyncio.Event, context: turn_loading.TurnContext | None) -> TurnResult:
    agent = progress.agent
    assert agent is not None
    if request.new_messages is not None:
        context = await _persist_new_messages(request, agent.session)
    session, messages = context or await db_async(turn_loading.load_turn_context)(request, agent.session)
    messages = _up_to_answered(await repair.repair_before_turn(agent, session, messages), request.answers)
    progress.session = session
    progress.anchor = messages[-1]["id"] if messages else None
    options = ChatOptions(
        request_id=request.request_id,
        abort=abort,
        messages=messages,
        client_tools=request.client_tools,
        body=request.body,
        continuation=request.continuation,
    )
    base = transcript.last_assistant(messages) if request.continuation else None
    builder = MessageBuilder(
        base or {"id": agent.new_message_id(), "role": "assistant", "parts": []},
        continuation=base is not None,
        finish_reason_in_metadata=agent.finish_reason_in_metadata,
    )
    progress.builder = builder
    response = await agent.on_chat_message(options)
    if response is None:
        return await _conclude(progress, request, turn, response_stream.StreamOutcome("completed", body=frames.NO_RESPONSE_TEXT), None)

    publisher = StreamPublisher(session.pk, turn.pk, request.request_id, continuation=request.continuation)
    publisher.begin(builder.message["id"])  # the model call starts while the turn is marked as streaming
    progress.publisher = publisher
    outcome = await response_stream.drain(response, builder, publisher, abort, agent, request.request_id)
    if outcome.status == "aborted":
        publisher.publish({"type": "abort"})  # as AI SDK streams end when aborted
    message = builder.finalize()
    if request.trigger == "regenerate-message" and not request.continuation and message["parts"]:
        # Its stream ends with the branch its stored reply is on: written step by step.
        await publisher.flush()
        await _save_reply(progress, message, succeeded=outcome.status != "error")
        await _stream_branch(publisher, session, message["id"])
        return await _conclude(progress, request, turn, outcome, message)
    await publisher.broadcast_all()
    await _store_ending(progress, turn, publisher, outcome, message if message["parts"] else None)
    return await _conclude(progress, request, turn, outcome, message, recorded=True)


async def _stream_branch(publisher: StreamPublisher, session: Session, reply_uid: str) -> None:
    """A regenerated reply has siblings, and a transcript read shows them in its
    `metadata.branch`. Its stream carries the same, last: a client that reads the stream's
    end and the transcript after it in one batch applies them out of order, and must still
    end up with the message the server stored."""
    branch = await db_async(transcript.branch_metadata)(session, reply_uid)
    if branch is not None:
        publisher.publish({"type": "message-metadata", "messageMetadata": {"branch": branch}})
        await publisher.flush()


async def _save_reply(progress: _Progress, message: UIMessage, *, checked: bool = True, succeeded: bool = False) -> None:
    """Persist the reply right after the message it answers (the turn's whole answer, or
    the partial one a failure left)."""
    if checked:
        faults.point("reply_write")
    await db_async(turn_ending.save_reply)(_reply(progress, message, succeeded))
    progress.reply_saved = True
    progress.terminal_cleared = succeeded


async def _store_ending(
    progress: _Progress, turn: Turn, publisher: StreamPublisher, outcome: response_stream.StreamOutcome, message: UIMessage | None
) -> None:
    """What a streamed turn still has to write, in one call: the chunk log's last batch,
    the reply, the outcome and its model calls' log lines (storage/turn_ending.py). Retried through a database restart,
    like every write of a turn's ending; a failure writes none of it, and `_fail` then
    stores what it can one step at a time."""
    chunks = publisher.pending_store()
    reply = _reply(progress, message, outcome.status != "error") if message is not None else None
    recorded = turn_ending.Outcome(outcome.status, outcome.error or "", message["id"] if message is not None else "")
    progress.held_calls.close()
    calls = progress.held_calls.pending()
    log_calls = functools.partial(call_log.save_all, calls) if calls else None
    await _retrying(lambda: db_async(turn_ending.store)(turn, chunks, reply, recorded, also=log_calls))
    progress.held_calls.take()
    if chunks is not None:
        publisher.mark_stored(chunks)
    if reply is not None:
        progress.reply_saved = True
        progress.terminal_cleared = reply.succeeded


async def _write_held_calls(request: TurnRequest, progress: _Progress) -> None:
    """The call-log lines the turn held and its ending did not write (it failed, or had no
    stream), before its outcome is sent; model calls made from now on write their own."""
    progress.held_calls.close()
    calls = progress.held_calls.take()
    if calls:
        await _attempt(request, "writing the call log", db_async(call_log.save_all)(calls))


def _reply(progress: _Progress, message: UIMessage, succeeded: bool) -> turn_ending.Reply:
    assert progress.session is not None and progress.agent is not None
    return turn_ending.Reply(progress.session, message, progress.anchor, progress.agent.max_persisted_messages, succeeded)


async def _conclude(
    progress: _Progress, request: TurnRequest, turn: Turn, outcome: response_stream.StreamOutcome, message: UIMessage | None, *, recorded: bool = False
) -> TurnResult:
    """Record and deliver a turn's one outcome, once its answer is stored: the turn row
    (unless `recorded` with the answer already), the final frames (error, done) to every
    connection, the transcript, and the release of parked connections. Each is attempted
    even when another fails."""
    if not recorded:
        uid = message["id"] if message is not None else ""
        ending = turn_ending.Outcome(outcome.status, outcome.error or "", uid)
        settled = progress.terminal_cleared and outcome.status != "error"
        await _attempt(
            request, "recording the outcome", _retrying(lambda: db_async(turn_ending.record_outcome)(turn, ending, terminal_settled=settled))
        )
    await _write_held_calls(request, progress)
    final = outcome.final_frames(request.request_id, request.continuation)
    streamed = progress.publisher is not None and progress.publisher.started
    if streamed:
        await _attempt(request, "sending the final frames", progress.publisher.send_final(final))
    else:
        await _attempt(request, "sending the final frames", broadcast.broadcast(turn.session_id, final))
    db_threads.rank_from_now()
    if progress.reply_saved and progress.session is not None:
        spared = transcript_sync.spared_requester(request, progress.agent)
        await _attempt(request, "broadcasting the transcript", transcript_sync.send_to_others(progress.session, spared, reply=message))
    await _attempt(request, "settling parked connections", turn_end.settle(turn, streamed=streamed))
    progress.result = TurnResult(request.request_id, outcome.status, outcome.error, message)
    return progress.result


def _up_to_answered(messages: list[UIMessage], answers: str) -> list[UIMessage]:
    """A queued turn answers its own message: the model sees the conversation up to it (with
    the answers given meanwhile), not the messages queued after it."""
    ids = [message["id"] for message in messages]
    return messages[: ids.index(answers) + 1] if answers in ids else messages
