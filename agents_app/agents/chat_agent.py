"""`AIChatAgent`: a chat agent whose turns you write yourself in `on_chat_message` (the
reference's AIChatAgent), with the message tree, programmatic turns and recovery hooks.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, ClassVar

from asgiref.sync import sync_to_async

from agents_app.agents.agent import Agent, callable_method
from agents_app.protocol import frames
from agents_app.protocol.json_safety import check_json
from agents_app.protocol.messages import is_tool_part, normalize_messages, user_text_message
from agents_app.providers.errors import ChatErrorClassification
from agents_app.storage import client_messages, search, transcript
from agents_app.storage.models import Session, Turn
from agents_app.turns import broadcast, chat, concurrency, repair, runner
from agents_app.turns.types import (
    ChatErrorContext,
    ChatOptions,
    ChatResponse,
    ChatResponseResult,
    TurnRequest,
    TurnResult,
    new_request_id,
)

if TYPE_CHECKING:
    from agents_app.turns.recovery import ChatRecoveryContext


class AIChatAgent(Agent):
    """A chat agent whose turns you write yourself in `on_chat_message` (the reference's AIChatAgent)."""

    message_concurrency: ClassVar[Any] = "queue"
    max_persisted_messages: ClassVar[int | None] = None
    # ai-chat flavour: `finish.finishReason` moves into messageMetadata, and the requester does
    # not get the final transcript (it built the message from the stream itself).
    finish_reason_in_metadata: ClassVar[bool] = True
    final_transcript_to_requester: ClassVar[bool] = False
    # `merge` concurrency collapses queued user messages into one (ai-chat); Think keeps them.
    merges_queued_user_messages: ClassVar[bool] = True
    # Durable recovery of turns whose process died: True, False or {"maxAttempts": N, "terminalMessage": "…",
    # "noProgressTimeoutMs": ms, "maxRecoveryWork": N} (turns/recovery.py RecoveryConfig).
    chat_recovery: ClassVar[bool | dict[str, Any]] = True
    # Tokens the model can read (input and output); None: known from the model's name or the
    # settings (think/context_window.py).
    context_window: ClassVar[int | None] = None
    configurable = ("message_concurrency", "max_persisted_messages", "chat_recovery", "context_window")

    @staticmethod
    def new_message_id() -> str:
        return f"assistant_{uuid.uuid4().hex[:20]}"

    @classmethod
    def turn_session_annotations(cls) -> dict[str, Any]:
        """Annotations of the session's row (name → expression) that a turn taking the lock
        at its admission reads with that row, in the same statement: what `read_before_turn`
        would otherwise ask for in a query of its own. Their values are attributes of
        `self.session` then."""
        return {}

    def read_before_turn(self) -> None:
        """Runs on a database thread, in the call that takes the session's turn lock, before
        the turn's `on_chat_message`: read here (synchronously) what every turn needs, and
        the first token waits for no database round trip of its own. Only when nothing must
        happen in between (messages saved first, a concurrency policy that may skip or merge),
        so `on_chat_message` reads whatever this did not."""

    async def get_messages(self) -> list[dict[str, Any]]:
        return await sync_to_async(transcript.transcript)(self.session)

    @callable_method
    async def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Full-text search of this session's messages (every branch), best first, with snippets."""
        hits = await sync_to_async(search.search_messages)(query, session_ids=[self.session.pk], limit=limit)
        return [hit.as_dict() for hit in hits]

    def client_tool_names(self) -> set[str]:
        """Tools the browser executes: those the last request declared."""
        context = Session.objects.filter(pk=self.session.pk).values_list("request_context", flat=True).first() or {}
        return {tool.get("name") for tool in context.get("lastClientTools") or [] if isinstance(tool, dict)}

    async def has_pending_interaction(self) -> bool:
        """An approval is awaited, or a client tool has not answered yet (a server tool left
        unanswered by a crash does not count)."""
        names = await sync_to_async(self.client_tool_names)()
        return any(
            is_tool_part(part) and repair.awaits_client(part, names)
            for message in await self.get_messages()
            for part in (message["parts"] if message["role"] == "assistant" else [])
        )

    def repair_interrupted_tool_part(self, part: dict[str, Any]) -> dict[str, Any]:
        """What a tool part becomes when its result was never recorded (the process running
        it died) before the next model call: by default an errored result the model reads
        ("The tool call was interrupted before a result was recorded."). Return any part,
        e.g. a text part."""
        return repair.interrupted_result(part)

    async def wait_until_stable(self, timeout: float | None = None) -> bool:
        """Wait until no turn is queued or running and nothing waits for the user; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            busy = await sync_to_async(concurrency.is_busy)(self.session.pk)
            if not busy and not await self.has_pending_interaction():
                return True
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)

    async def stash(self, data: Any) -> bool:
        """Checkpoint app data (JSON) for the running turn of this session. If the turn's
        process dies, recovery hands the last stash back as `ctx.recovery_data` in
        `on_chat_recovery`. False when no turn of this session is running."""
        check_json(data)

        def store() -> int:
            running = Session.objects.filter(pk=self.session.pk).values_list("turn_lock", flat=True).first()
            if not running:
                return 0
            live = (Turn.Status.RUNNING, Turn.Status.STREAMING)
            return Turn.objects.filter(session_id=self.session.pk, request_id=running, status__in=live).update(recovery_data=data)

        return bool(await sync_to_async(store)())

    # -- programmatic turns (same runner, hooks, persistence and broadcast as any turn) --------
    def _context(self) -> dict[str, Any]:
        return Session.objects.filter(pk=self.session.pk).values_list("request_context", flat=True).first() or {}

    async def save_messages(self, messages: Any, *, request_id: str | None = None) -> TurnResult:
        """Persist `messages` (or what `messages(transcript)` returns, evaluated when the turn
        starts) and run a turn on them; every connected client sees it stream. A `request_id`
        already used in this session returns without running anything again."""
        if not callable(messages):
            messages = normalize_messages(messages)  # refused before a turn is admitted
        context = await sync_to_async(self._context)()
        request = TurnRequest(
            session_id=self.session.pk,
            request_id=request_id or new_request_id(),
            source=Turn.Source.PROGRAMMATIC,
            client_tools=context.get("lastClientTools"),
            body=context.get("lastBody"),
            new_messages=messages,
        )
        try:
            started = await runner.start_turn(request)
        except runner.AdmissionFailed as failure:
            return TurnResult(request.request_id, "error", str(failure))
        return await started.result()

    async def send_scheduled_message(self, payload: Any) -> TurnResult:
        """The default schedule callback: `{"text": …}` arrives as a user message and is answered."""
        text = payload.get("text") if isinstance(payload, dict) else payload
        if not isinstance(text, str) or not text:
            raise ValueError('send_scheduled_message needs a payload like {"text": "…"}')
        return await self.save_messages([user_text_message(text)])

    async def persist_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store messages without running a turn; every client gets the new transcript."""
        await sync_to_async(client_messages.upsert)(self.session, normalize_messages(messages), move_leaf=False)
        return await self.broadcast_transcript()

    async def continue_last_turn(self, body: dict[str, Any] | None = None) -> TurnResult:
        """Extend the last assistant message with another turn; skipped when the conversation
        does not end with an assistant message."""
        messages = await self.get_messages()
        if not messages or messages[-1]["role"] != "assistant":
            return TurnResult("", "skipped")
        context = await sync_to_async(self._context)()
        request = TurnRequest(
            session_id=self.session.pk,
            request_id=new_request_id(),
            source=Turn.Source.PROGRAMMATIC,
            continuation=True,
            client_tools=context.get("lastClientTools"),
            body=body if body is not None else context.get("lastBody"),
        )
        try:
            started = await runner.start_turn(request)
        except runner.AdmissionFailed as failure:
            return TurnResult(request.request_id, "error", str(failure))
        return await started.result()

    async def destroy(self) -> None:
        """Abort running turns, skip queued ones, drop the stream buffers and delete the session
        with its messages; connected clients are told the chat was cleared."""
        await chat.destroy(self.session)

    # -- the message tree (regenerations and edits are branches, never deletions) ---------
    @callable_method
    async def get_history(self, leaf_id: str | None = None) -> list[dict[str, Any]]:
        """The conversation up to `leaf_id` (any message, e.g. on an older branch)."""
        return await sync_to_async(transcript.history)(self.session, leaf_id)

    @callable_method
    async def get_branches(self, message_id: str) -> list[dict[str, Any]]:
        """The children of a message, oldest first: e.g. every answer ever generated to it."""
        return await sync_to_async(transcript.children)(self.session, message_id)

    @callable_method
    async def switch_branch(self, message_id: str) -> list[dict[str, Any]]:
        """Continue the conversation on the branch through `message_id`; every tab follows."""
        if not await sync_to_async(transcript.switch_branch)(self.session, message_id):
            raise ValueError(f"Unknown message {message_id}")
        return await self.broadcast_transcript()

    @callable_method
    async def delete_branch(self, message_id: str) -> list[dict[str, Any]]:
        """Delete a message and its descendants; every tab gets the resulting conversation."""
        if not await sync_to_async(transcript.delete_branch)(self.session, message_id):
            raise ValueError(f"Unknown message {message_id}")
        return await self.broadcast_transcript()

    async def broadcast_transcript(self) -> list[dict[str, Any]]:
        """Every tab of the session gets the current conversation (after a write outside a turn)."""
        current = await sync_to_async(transcript.transcript)(self.session)
        await broadcast.broadcast(self.session.pk, [frames.chat_messages(current)])
        return current

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        """Produce the reply: UI message stream chunks, plain text, or None."""
        raise NotImplementedError(f"{type(self).__name__} must implement on_chat_message()")

    async def on_chat_response(self, result: ChatResponseResult) -> None:
        """After every turn, outside the turn lock (safe to start another turn)."""

    def classify_chat_error(self, error: BaseException | str, ctx: ChatErrorContext) -> ChatErrorClassification | None:
        """What kind of failure this is ("context_overflow", "rate_limit", "transient", "fatal",
        "unknown"); None leaves it to the ready-made `classify_error`. Think's overflow
        recovery acts on the answer, and `on_chat_error` receives it as `ctx.classification`."""
        return None

    def on_chat_error(self, error: BaseException, ctx: ChatErrorContext) -> BaseException:
        """Return the error whose message clients see (`ctx`: stage, request id, classification);
        the default shows it unchanged. Overrides that take the error alone still work."""
        return error

    async def on_chat_recovery(self, ctx: ChatRecoveryContext) -> dict[str, bool] | None:
        """A turn's process died. Return {"persist": bool, "continue": bool} (both default
        True): keep the partial answer, and continue it (or retry the unanswered message)."""
        return None

    def should_keep_recovering(self, ctx: ChatRecoveryContext) -> bool | Awaitable[bool]:
        """Asked (sync or async) before each recovery attempt from the second on, with
        `ctx.attempt`, `ctx.work` and `ctx.age_ms`: False gives up with "recovery_aborted";
        raising counts as True."""
        return True

    async def on_chat_recovery_exhausted(self, ctx: ChatRecoveryContext, reason: str, terminal_message: str) -> None:
        """Recovery gave up (`reason`: "max_attempts_exceeded", "no_progress_timeout",
        "work_budget_exceeded" or "recovery_aborted"); the user was shown `terminal_message`."""
