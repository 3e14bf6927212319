"""Durable recovery of turns whose process died (think.md §9, protocol §9.14).

Every running turn heart-beats into its row and records the process that runs it. A turn
whose process is gone (process_liveness.py), or whose heartbeat is older than
`AGENTS_TURN_STALE_SECONDS`, lost its process (kill -9 of a worker or of daphne). Whoever
notices first — the periodic Celery sweep, or a client acknowledging a resume offer for that
stream — claims it (one conditional UPDATE, so exactly one recoverer wins), persists the
partial message rebuilt from the chunk log, and, unless `on_chat_recovery` says otherwise,
runs a recovery turn through the normal runner: a continuation of the partial answer, or a
retry of the unanswered user message. Clients see `cf_agent_chat_recovering` true until that
turn ends.
"""
from __future__ import annotations

import inspect
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from agents_app.protocol import frames
from agents_app.protocol.message_builder import rebuild_message
from agents_app.protocol.messages import UIMessage, is_tool_part, text_of
from agents_app.turns import broadcast, process_liveness, runner, turn_lock
from agents_app.turns.agent_interface import ChatAgent, is_chat_agent
from agents_app.turns.instances import load_agent
from agents_app.turns.types import TurnRequest, TurnResult, new_request_id
from agents_app.storage import chunk_log, transcript
from agents_app.storage.models import Session, Turn

logger = logging.getLogger(__name__)

DEFAULT_TERMINAL_MESSAGE = "The assistant was interrupted and could not recover. Please try again."
RECOVERING_TTL = timedelta(minutes=15)


@dataclass(frozen=True)
class RecoveryConfig:
    """The budgets of one recovery chain (think.md §9.1); `chat_recovery` on the agent."""

    max_attempts: int = 10
    terminal_message: str = DEFAULT_TERMINAL_MESSAGE
    no_progress_timeout_ms: int = 300_000
    max_recovery_work: int = 1000

    @classmethod
    def parse(cls, value: Any) -> RecoveryConfig | None:
        """`chat_recovery`: True (defaults), False (persist the partial, never re-run) or
        {"maxAttempts": N, "terminalMessage": "…", "noProgressTimeoutMs": ms,
        "maxRecoveryWork": N}, each key also accepted in snake_case."""
        if value is False or value is None:
            return None
        if not isinstance(value, dict):
            return cls()

        def setting(camel: str, snake: str) -> Any:
            return value.get(camel, value.get(snake, getattr(cls, snake)))

        return cls(
            max_attempts=int(setting("maxAttempts", "max_attempts")),
            terminal_message=str(setting("terminalMessage", "terminal_message")),
            no_progress_timeout_ms=int(setting("noProgressTimeoutMs", "no_progress_timeout_ms")),
            max_recovery_work=int(setting("maxRecoveryWork", "max_recovery_work")),
        )


@dataclass
class ChatRecoveryContext:
    """What `on_chat_recovery` and `on_chat_recovery_exhausted` are told about an interruption."""

    incident_id: str
    recovery_root_request_id: str
    attempt: int
    max_attempts: int
    recovery_kind: str  # "continue": a partial answer exists; "retry": nothing was produced
    stream_id: str
    request_id: str
    partial_text: str
    partial_parts: list[dict[str, Any]]
    messages: list[UIMessage]
    created_at: datetime
    last_body: dict[str, Any] | None = None
    last_client_tools: list[dict[str, Any]] | None = None
    recovery_data: Any = None  # the interrupted turn's last `stash()`
    # Stream chunks the chain's recovery turns stored so far (the interrupted original's are
    # not recovery work): what `maxRecoveryWork` bounds.
    work: int = 0
    # Milliseconds since the chain's first interruption was detected.
    age_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# Queued turns heart-beat while they wait for the lock, running ones while they run.
_LIVE_STATUSES = (Turn.Status.QUEUED, Turn.Status.RUNNING, Turn.Status.STREAMING)


def interrupted_turn_ids() -> list[int]:
    cutoff = timezone.now() - turn_lock.stale_after()
    stale = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    return list(Turn.objects.filter(stale, status__in=_LIVE_STATUSES).values_list("pk", flat=True))


def _claim(turn_id: int) -> Turn | None:
    """Take an interrupted turn over; None when it is alive again or someone else took it."""
    cutoff = timezone.now() - turn_lock.stale_after()
    interrupted = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
    owner = Turn.objects.filter(pk=turn_id).values_list("owner", flat=True).first()
    if owner and not process_liveness.is_alive(owner):
        interrupted |= Q(owner=owner)  # its process is gone: no need to wait for a stale heartbeat
    with transaction.atomic():
        claimed = Turn.objects.filter(
            interrupted,
            pk=turn_id,
            status__in=_LIVE_STATUSES,
        ).update(status=Turn.Status.INTERRUPTED, finished_at=timezone.now())
        if not claimed:
            return None
        turn = Turn.objects.get(pk=turn_id)
        # Its process died holding the session's turn lock.
        Session.objects.filter(pk=turn.session_id, turn_lock=turn.request_id).update(turn_lock="")
        return turn


@dataclass(frozen=True)
class _ChainProgress:
    """What a recovery chain (its original turn and the recovery turns that re-ran it) did."""

    attempts: int  # recovery turns run so far
    # Every chunk the recovery turns stored, framing included: counted on the turn rows,
    # which outlive their chunk logs, so the budget holds however long the chain runs.
    work: int
    first_interrupted_at: datetime
    # The chain's first interruption, or the end of the latest recovery turn that streamed
    # output: the no-progress window starts there.
    last_progress_at: datetime


# Chunks that frame a stream rather than carry output: a Think turn stores "start" before
# its model call, so an attempt killed while waiting for the model made no progress.
_FRAMING_CHUNKS = frozenset({"start", "finish", "start-step", "finish-step", "message-metadata", "abort", "error"})


def _streamed_output(turn_id: int) -> bool:
    bodies = [body for _, body in chunk_log.read_bodies(turn_id)]
    if not bodies:
        return True  # its log was swept (chunk_count says it streamed): assume output, never exhaust early
    for body in bodies:
        if body is None:
            return True  # too large to store: certainly output
        try:
            chunk = json.loads(body)
        except ValueError:
            continue
        if isinstance(chunk, dict) and chunk.get("type") not in _FRAMING_CHUNKS:
            return True
    return False


def _chain_progress(turn: Turn, root: str) -> _ChainProgress:
    recoveries = Turn.objects.filter(session_id=turn.session_id, recovery_root=root)
    original = Turn.objects.filter(session_id=turn.session_id, request_id=root).values_list("finished_at", flat=True).first()
    # _claim stamped the original's finished_at when its interruption was detected.
    first_interrupted_at = original or turn.finished_at or timezone.now()
    streamed = recoveries.filter(chunk_count__gt=0, finished_at__isnull=False).order_by("-finished_at")
    last_output_at = next((t.finished_at for t in streamed.only("pk", "finished_at") if _streamed_output(t.pk)), None)
    return _ChainProgress(
        attempts=recoveries.count(),
        work=recoveries.aggregate(total=Sum("chunk_count"))["total"] or 0,
        first_interrupted_at=first_interrupted_at,
        last_progress_at=max(first_interrupted_at, last_output_at or first_interrupted_at),
    )


async def recover(turn_id: int) -> TurnResult | None:
    """Recover one interrupted turn; returns the recovery turn's result, if one ran."""
    turn = await sync_to_async(_claim)(turn_id)
    if turn is None:
        return None
    session = await sync_to_async(Session.objects.select_related("agent").get)(pk=turn.session_id)
    agent = await sync_to_async(load_agent)(session)
    if not is_chat_agent(agent):
        return None
    # Anyone still watching the dead stream gets its end.
    done = frames.chat_response(turn.request_id, done=True, continuation=turn.is_continuation)
    await broadcast.end_stream(session.pk, turn.request_id, [done], chunk_total=turn.chunk_count)
    await broadcast.turn_settled(session.pk, turn.request_id, streamed=True, pre_stream_remaining=False)

    config = RecoveryConfig.parse(agent.chat_recovery)
    root = turn.recovery_root or turn.request_id
    partial, has_output = await sync_to_async(_rebuild_partial)(turn, session)
    context = dict(session.request_context or {})
    chain = await sync_to_async(_chain_progress)(turn, root)
    now = timezone.now()
    ctx = ChatRecoveryContext(
        incident_id=uuid.uuid4().hex,
        recovery_root_request_id=root,
        attempt=chain.attempts + 1,
        max_attempts=config.max_attempts if config else 0,
        recovery_kind="continue" if has_output else "retry",
        stream_id=turn.request_id,
        request_id=turn.request_id,
        partial_text=text_of(partial),
        partial_parts=partial["parts"],
        messages=await sync_to_async(transcript.transcript)(session),
        created_at=turn.created_at,
        last_body=context.get("lastBody"),
        last_client_tools=context.get("lastClientTools"),
        recovery_data=turn.recovery_data,
        work=chain.work,
        age_ms=_ms(now - chain.first_interrupted_at),
    )
    decision = {"persist": True, "continue": True, **(await agent.on_chat_recovery(ctx) or {})}
    settled_tools = any(is_tool_part(p) and p.get("state") == "output-available" for p in partial["parts"])
    if has_output and (decision["persist"] or settled_tools):
        await sync_to_async(transcript.save_message)(session, partial)
        await agent.broadcast_transcript()
    if config is None or not decision["continue"]:
        await finished(session.pk, root)
        return None
    reason = await _exhausted_reason(agent, ctx, config, _ms(now - chain.last_progress_at))
    if reason is not None:
        await _exhaust(agent, session, turn, ctx, config, reason)
        return None
    return await _run_recovery_turn(session, root, ctx)


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


async def _exhausted_reason(agent: ChatAgent, ctx: ChatRecoveryContext, config: RecoveryConfig, idle_ms: int) -> str | None:
    """Why the chain must stop before this attempt (think.md §9.2 step 5), or None to go on."""
    if ctx.attempt > config.max_attempts:
        return "max_attempts_exceeded"
    if idle_ms >= config.no_progress_timeout_ms:
        return "no_progress_timeout"
    if ctx.work > config.max_recovery_work:
        return "work_budget_exceeded"
    # The first attempt always runs: the hook judges a chain by how its recoveries went.
    if ctx.attempt >= 2 and not await _should_keep_recovering(agent, ctx):
        return "recovery_aborted"
    return None


async def _should_keep_recovering(agent: ChatAgent, ctx: ChatRecoveryContext) -> bool:
    try:
        verdict = agent.should_keep_recovering(ctx)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception:  # a broken hook must not strand the user's answer: keep recovering
        logger.exception("should_keep_recovering failed for %s", ctx.request_id)
        return True
    return bool(verdict)


def _rebuild_partial(turn: Turn, session: Session) -> tuple[UIMessage, bool]:
    """The message the dead turn had streamed, rebuilt from its chunk log (on top of the
    message it continued, for a continuation), and whether it produced anything."""
    bodies = [body for _, body in chunk_log.read_bodies(turn.pk) if body is not None]
    base = None
    if turn.is_continuation:
        base = transcript.latest_assistant(session)
    partial = rebuild_message(turn.message_uid or f"assistant_{turn.request_id}", bodies, base=base)
    return partial, bool(bodies and partial["parts"])


async def _run_recovery_turn(session: Session, root: str, ctx: ChatRecoveryContext) -> TurnResult | None:
    messages = await sync_to_async(transcript.transcript)(session)
    if not messages:
        await finished(session.pk, root)
        return None
    await _mark_recovering(session.pk, root)
    request = TurnRequest(
        session_id=session.pk,
        request_id=new_request_id(),
        source=Turn.Source.RECOVERY,
        # A partial answer is continued; an unanswered user message is answered again.
        continuation=messages[-1]["role"] == "assistant",
        client_tools=ctx.last_client_tools,
        body=ctx.last_body,
        recovery_root=root,
    )
    started = await runner.start_turn(request)
    try:
        return await started.result()
    finally:
        try:
            await finished(session.pk, root)
        except Exception:  # the turn's own outcome stands; only the "recovering" badge may linger
            logger.exception("turn %s: ending the recovery failed", request.request_id)


async def _mark_recovering(session_id: int, root: str) -> None:
    def mark() -> bool:
        current = Session.objects.filter(pk=session_id).values_list("recovering", flat=True).first()
        Session.objects.filter(pk=session_id).update(recovering={"requestId": root, "at": timezone.now().isoformat()})
        return not _is_fresh(current)

    if await sync_to_async(mark)():  # idempotent: not re-broadcast while a fresh flag exists
        await broadcast.broadcast(session_id, [frames.chat_recovering(True, root)])


def _is_fresh(flag: dict[str, Any] | None) -> bool:
    if not flag or not flag.get("at"):
        return False
    try:
        marked = datetime.fromisoformat(flag["at"])
    except ValueError:
        return False
    return timezone.now() - marked < RECOVERING_TTL


async def finished(session_id: int, root: str) -> None:
    """A recovery reached a terminal outcome: clients stop showing it."""
    cleared = await sync_to_async(Session.objects.filter(pk=session_id, recovering__isnull=False).update)(recovering=None)
    if cleared:
        await broadcast.broadcast(session_id, [frames.chat_recovering(False, root)])


async def _exhaust(
    agent: ChatAgent, session: Session, turn: Turn, ctx: ChatRecoveryContext, config: RecoveryConfig, reason: str,
) -> None:
    """Out of budget (`reason`): the partial stays, the user is told, reconnecting clients get the
    terminal record through the resume handshake."""
    terminal = {"requestId": turn.request_id, "body": config.terminal_message}
    await sync_to_async(Session.objects.filter(pk=session.pk).update)(terminal=terminal)
    error = frames.chat_response(turn.request_id, config.terminal_message, done=True, error=True)
    await broadcast.broadcast(session.pk, [error])
    await finished(session.pk, ctx.recovery_root_request_id)
    try:
        await agent.on_chat_recovery_exhausted(ctx, reason, config.terminal_message)
    except Exception:  # the hook must not stop the terminal outcome from being recorded
        logger.exception("on_chat_recovery_exhausted failed for %s", turn.request_id)


def recovering_frame(session: Session) -> frames.Frame | None:
    """The frame a connecting client gets while a recovery is in progress."""
    flag = session.recovering
    if not _is_fresh(flag):
        return None
    return frames.chat_recovering(True, flag.get("requestId"))
