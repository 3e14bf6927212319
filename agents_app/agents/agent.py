"""The Python agent API: `Agent` (identity, state, RPC), `AIChatAgent` (you write the turn
handler) and `ThinkAgent` (the framework runs the model loop; you configure it).

Subclass, decorate with `@register_agent`, and the class is served at
`/agents/<kebab-case class name>/<name>` over WebSocket and HTTP.
"""
from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pydantic
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse

from agents_app.gateway import workers_ai
from agents_app.mcp.agent_api import McpClientMixin
from agents_app.mcp import oauth
from agents_app.mcp.tools import turn_tools as mcp_turn_tools
from agents_app.protocol import frames
from agents_app.protocol.inbound import AppMessage
from agents_app.protocol.json_safety import check_json
from agents_app.protocol.messages import is_tool_part, normalize_messages, user_text_message
from agents_app.providers.openai_chat import default_model
from agents_app.sandbox.extensions import ExtensionManager
from agents_app.turns import broadcast, chat, concurrency, repair, runner, scheduling
from agents_app.think import compaction, sub_agents, think_session
from agents_app.think.context_blocks import ContextBlocks, ContextBlockSpec
from agents_app.think.skills import Skill
from agents_app.think.think_session import SessionBuilder
from agents_app.agents.hooks import (
    StepConfig,
    StepContext,
    StepResult,
    StopCondition,
    ToolCallContext,
    ToolCallDecision,
    ToolCallResultContext,
    TurnConfig,
    TurnContext,
)
from agents_app.think.middleware import ModelMiddleware
from agents_app.think.model_loop import ModelLoop
from agents_app.agents.tools import Approval, Tool
from agents_app.providers.errors import ChatErrorClassification
from agents_app.turns.types import (
    ChatErrorContext,
    ChatOptions,
    ChatResponse,
    ChatResponseResult,
    Connection,
    ConnectionContext,
    TurnRequest,
    TurnResult,
    new_request_id,
)
from agents_app.think.workspace_tools import workspace_tools
from agents_app.storage import search, transcript
from agents_app.storage.workspace import Workspace

if TYPE_CHECKING:
    from agents_app.turns.recovery import ChatRecoveryContext
from agents_app.storage.models import Agent as AgentRecord
from agents_app.storage.models import Session, Turn

_UNSET: Any = object()
AgentT = TypeVar("AgentT", bound="Agent")
# Agent instances this process has started (Agent.start), with what their start-up set. Bounded:
# an instance forgotten here starts again on its next use, as it would in a restarted process.
MAX_STARTED_INSTANCES = 2048
_started_instances: OrderedDict[tuple[type[Agent], int, datetime], dict[str, Any]] = OrderedDict()


def callable_method(func: Callable[..., Any] | None = None, *, streaming: bool = False) -> Any:
    """Mark a method as invokable by clients through `rpc` frames (the reference's @callable).
    A streaming method receives an `RpcStream` first and sends chunks through it."""

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        method.agent_callable = True  # type: ignore[attr-defined]
        method.agent_streaming = streaming  # type: ignore[attr-defined]
        return method

    return mark(func) if func is not None else mark


class ReadonlyConnection(PermissionError):
    def __init__(self) -> None:
        super().__init__("Connection is readonly")


class Agent(McpClientMixin):
    """Base agent: identity, synchronised state, RPC and connection hooks."""

    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    send_identity_on_connect: ClassVar[bool] = True
    initial_state: ClassVar[Any] = _UNSET
    # Class attributes an admin may override per agent through Agent.settings (JSON).
    configurable: ClassVar[tuple[str, ...]] = ()
    # Validates `configure()` (per-instance config); without it any JSON object is accepted.
    config_model: ClassVar[type[pydantic.BaseModel] | None] = None

    def __init__(self, session: Session, record: AgentRecord) -> None:
        self.session = session
        self.record = record
        self.name = session.name
        # The connection whose RPC call is running, if any (readonly connections cannot set state).
        self.caller: Connection | None = None
        self._started = False
        # Sub-agent handles this object gave out, so each child starts up once (sub_agent()).
        self._sub_agents: dict[tuple[type[Agent], str], Agent] = {}
        for key, value in (record.settings or {}).items():
            if key in self.configurable:
                setattr(self, key, value)

    @property
    def ai(self) -> workers_ai.WorkersAI:
        """Workers AI's `env.AI`: `await self.ai.run(model, {"prompt": …})` (gateway/workers_ai.py)."""
        return workers_ai.WorkersAI(workers_ai.CallingAgent(self.record.slug, self.session.owner_id, self.session.pk))

    # -- state ---------------------------------------------------------------------
    @property
    def has_state(self) -> bool:
        return self.session.has_state or self.initial_state is not _UNSET

    @property
    def state(self) -> Any:
        if self.session.has_state:
            return self.session.state
        return None if self.initial_state is _UNSET else self.initial_state

    def validate_state_change(self, state: Any, source: Connection | None) -> None:
        """Raise to reject a client's state update (the client sees a generic error)."""

    async def on_state_update(self, state: Any, source: Connection | None) -> None:
        """Called after a state change was persisted and broadcast."""

    async def _store_state(self, state: Any) -> None:
        self.session.state = state
        self.session.has_state = True
        await sync_to_async(Session.objects.filter(pk=self.session.pk).update)(state=state, has_state=True)

    async def set_state(self, state: Any) -> None:
        """Persist state and broadcast it to every connection."""
        if self.caller is not None and self.caller.readonly:
            raise ReadonlyConnection
        await self._store_state(state)
        await broadcast.broadcast(self.session.pk, [frames.state(state)], skip_pending_resume=False)
        await self.on_state_update(state, None)

    async def apply_client_state(self, state: Any, source: Connection) -> None:
        if source.readonly:
            raise ReadonlyConnection
        self.validate_state_change(state, source)
        await self._store_state(state)
        await broadcast.broadcast(
            self.session.pk, [frames.state(state)], exclude=(source.id,), skip_pending_resume=False
        )
        await self.on_state_update(state, source)

    # -- connection hooks ------------------------------------------------------------
    def should_send_protocol_messages(self, connection: Connection) -> bool:
        """False for connections that want no identity/state/MCP frames (e.g. binary-only devices)."""
        return True

    def is_readonly(self, connection: Connection) -> bool:
        """True for connections that may watch but not change state."""
        return False

    async def on_connect(self, connection: Connection, ctx: ConnectionContext | None = None) -> None:
        """Runs after the connect frames were sent. `ctx` holds the opening request (path,
        headers, query, user) and `ctx.wait_until(coro)` for work that must finish even if
        the socket closes; overrides may take just `connection`."""

    async def on_close(self, connection: Connection) -> None:
        """Runs when a connection closes. Turns it started keep running."""

    async def on_message(self, connection: Connection, message: AppMessage) -> list[frames.Frame] | None:
        """Frames outside the protocol: return frames to send back, or stream with
        `await connection.send(...)` (each call runs beside the socket, which keeps receiving).
        The default answers with an error frame."""
        kind = message.data.get("type") if isinstance(message.data, dict) else None
        if kind is None:
            return [frames.error("Frames must be JSON objects with a string 'type'.")]
        return [frames.error(f"Unknown message type {kind!r}.", frame_type=str(kind))]

    async def on_request(self, request: HttpRequest, path: str) -> HttpResponse | workers_ai.AiTextStream:
        """HTTP requests to /agents/<agent>/<name>/<path> other than get-messages, streams/…
        and a chat agent's `POST chat` (transport/views.py serves those); `callback` completes
        an MCP server's OAuth authorization (mcp/oauth.py). A returned `self.ai.run(…,
        stream=True)` is sent as Workers AI's server-sent events."""
        if path.strip("/") == "callback" and request.method == "GET":
            return await oauth.handle_callback(self.session.pk, request)
        return HttpResponse("Not implemented", status=404, content_type="text/plain")

    async def fetch(
        self,
        path: str = "",
        *,
        method: str = "GET",
        query: dict[str, Any] | None = None,
        json: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """Send this instance an HTTP request from server code (the reference's `stub.fetch`):
        `on_request` serves it as if the instance's owner had sent it."""
        from agents_app.agents.addressing import build_request

        request = build_request(self, path, method=method, query=query, json=json, body=body, headers=headers)
        return await self.on_request(request, path)

    # -- per-instance config (think.md §8) -------------------------------------------------
    @callable_method
    async def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Store this instance's config (validated by `config_model` when the class has one)."""
        if self.config_model is not None:
            try:
                config = self.config_model.model_validate(config).model_dump(mode="json")
            except pydantic.ValidationError as error:
                problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors())
                raise ValueError(f"Invalid config: {problems}") from error
        elif not isinstance(config, dict):
            raise ValueError("Invalid config: expected a JSON object")
        await sync_to_async(Session.objects.filter(pk=self.session.pk).update)(config=config)
        self.session.config = config
        return config

    @callable_method
    async def get_config(self) -> dict[str, Any] | None:
        """The stored config, or None before the first configure()."""
        return await sync_to_async(lambda: Session.objects.filter(pk=self.session.pk).values_list("config", flat=True).first())()

    # -- start-up ----------------------------------------------------------------------
    async def on_start(self) -> None:
        """Runs once per agent instance (class and session) in this process, before its first
        use: its first turn (Think agents) or sub_agent() handing it out. Every turn loads a
        fresh object, so keep what it sets in stored places (state, context blocks, schedules)."""

    async def start(self) -> None:
        """Start this instance if this process has not yet (the hooks run once), then give
        this object what start-up set; later calls return at once."""
        if self._started:
            return
        key = (type(self), self.session.pk, self.session.created_at)
        adopted = _started_instances.get(key)
        if adopted is None:
            adopted = await self._start_up()
            _started_instances[key] = adopted
            while len(_started_instances) > MAX_STARTED_INSTANCES:
                _started_instances.popitem(last=False)
        for attribute, value in adopted.items():
            setattr(self, attribute, value)
        self._started = True

    async def _start_up(self) -> dict[str, Any]:
        """Run the start-up hooks; returns the attributes later objects of the instance adopt."""
        await self.on_start()
        return {}

    # -- sub-agents (think/sub_agents.py) --------------------------------------------------
    async def sub_agent(self, agent_class: type[AgentT], name: str) -> AgentT:
        """The `agent_class` instance `name` of this session's owner, created on first use and
        started (its `on_start`) before it is returned; this object hands out one handle per child."""
        handle = self._sub_agents.get((agent_class, name))
        if handle is None:
            handle = await sub_agents.sub_agent(self, agent_class, name)
            await handle.start()
            self._sub_agents[(agent_class, name)] = handle
        return handle  # type: ignore[return-value]

    async def abort_sub_agent(self, agent_class: type[Agent], name: str) -> bool:
        """Stop the child's running turn (its partial answer is kept); False if it never existed."""
        return await sub_agents.abort(self, agent_class, name)

    async def delete_sub_agent(self, agent_class: type[Agent], name: str) -> bool:
        """Abort the child's turns and delete it with its stored messages; False if it never existed."""
        self._sub_agents.pop((agent_class, name), None)
        return await sub_agents.delete(self, agent_class, name)

    # -- schedules (Celery runs them; the admin shows and edits them) ----------------------
    async def schedule(self, when: int | float | datetime | str, callback: str, payload: Any = None) -> dict[str, Any]:
        """Call `self.<callback>(payload)` after `when` seconds, at a datetime, or on a cron
        string ("0 9 * * 1-5"). Returns the schedule as the reference describes it."""
        if not callable(getattr(self, callback, None)):
            raise ValueError(f"{type(self).__name__} has no method {callback!r}")
        created = await sync_to_async(scheduling.create)(self.session, when, callback, payload)
        return scheduling.describe(created)

    async def get_schedules(self) -> list[dict[str, Any]]:
        """Schedules that have not run yet (one-shot) or keep running (cron)."""
        return [scheduling.describe(s) for s in await sync_to_async(scheduling.pending)(self.session)]

    async def cancel_schedule(self, schedule_id: str | int) -> bool:
        return await sync_to_async(scheduling.cancel)(self.session, schedule_id)


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
        await sync_to_async(transcript.upsert_client_messages)(self.session, normalize_messages(messages), move_leaf=False)
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


class ThinkAgent(AIChatAgent):
    """An agent whose model loop is run by the framework (the reference's Think).

    Override `get_model`, `get_system_prompt` and `get_tools`; the framework streams the
    model's answer, runs server tools, pauses for client tools and approvals.
    """

    max_steps: ClassVar[int] = 10
    # The loop also ends after a step for which any of these holds, e.g. [has_tool_call("finish")].
    stop_when: ClassVar[Sequence[StopCondition]] = ()
    send_reasoning: ClassVar[bool] = True
    model: ClassVar[str | None] = None
    system_prompt: ClassVar[str] = (
        "You are a careful, capable assistant. Answer clearly and concisely, say when you are unsure, "
        "and use the tools you are given when they help."
    )
    finish_reason_in_metadata = False
    final_transcript_to_requester = True
    merges_queued_user_messages = False
    # MCP (think.md §2): wait for connecting servers before a turn (True = 10 s, {"timeout": ms}),
    # offer the tools of connected servers, and whether their calls need the user's approval.
    wait_for_mcp_connections: ClassVar[bool | dict[str, Any]] = False
    include_mcp_tools: ClassVar[bool] = True
    mcp_tool_needs_approval: ClassVar[Approval] = False
    # Named blocks of the system prompt (context_blocks.ContextBlockSpec), in order; also
    # configure_session may add to them in code, once per instance.
    context_blocks: tuple[ContextBlockSpec, ...] = ()
    # Summarise older messages once the history the model sees exceeds this many tokens; None:
    # at AGENTS_COMPACTION_THRESHOLD of the model's context window; 0: never automatically.
    compact_after_tokens: int | None = None
    # Messages at the start and at the end of the path that compaction never summarises.
    compaction_protect_head: ClassVar[int] = 2
    compaction_keep_tail: ClassVar[int] = 4
    # Context-window overflow (think.md §9.4): None compacts and retries a refused step once;
    # {"reactive": bool, "maxRetries": n, "proactive": {"maxInputTokens": n, "headroom": 0.9,
    # "maxCompactions": 1}} sets both recoveries (snake_case keys too).
    context_overflow: ClassVar[dict[str, Any] | None] = None
    configurable = (
        "message_concurrency",
        "max_persisted_messages",
        "chat_recovery",
        "max_steps",
        "send_reasoning",
        "model",
        "system_prompt",
        "compact_after_tokens",
        "context_window",
    )
    _context_section = ""
    _mcp_tools: dict[str, Tool] = {}

    def __init__(self, session: Session, record: AgentRecord) -> None:
        super().__init__(session, record)
        self.extensions = ExtensionManager(self)
        self.runtime_context_blocks: tuple[ContextBlockSpec, ...] = ()
        self.loaded_context_keys: frozenset[str] = frozenset()

    @staticmethod
    def new_message_id() -> str:
        return str(uuid.uuid4())

    def get_extensions(self) -> list[Any]:
        """Sandboxed JavaScript tool bundles (sandbox/extensions.py `extension(...)`), loaded at start."""
        return []

    def get_model(self) -> str:
        return self.model or default_model()

    def get_system_prompt(self) -> str:
        return self.system_prompt

    def get_tools(self) -> dict[str, Tool]:
        return {}

    def get_skills(self) -> list[Skill]:
        """Skills the model may activate (think/skills.py); listed in the system prompt by name
        and description, with the activate_skill and read_skill_resource tools."""
        return []

    def configure_session(self, session: SessionBuilder) -> SessionBuilder | None | Awaitable[SessionBuilder | None]:
        """Set up the session in code: context blocks, skills and search libraries, compaction
        (think_session.SessionBuilder). May be async; runs once per instance and process, before
        its first turn and before `on_start` (not per turn)."""
        return session

    async def _start_up(self) -> dict[str, Any]:
        # The session is configured before on_start, which may already add blocks at run time.
        configured = await think_session.configure(self)
        return {**configured, **await super()._start_up()}

    async def _load_session(self) -> None:
        """Start up if not yet, then read what the session changed at run time."""
        await self.start()
        await think_session.load_runtime_state(self)

    def client_tool_names(self) -> set[str]:
        """Also the tools this agent declares without `execute`."""
        declared = {name for name, tool in self.get_tools().items() if tool.execute is None}
        return super().client_tool_names() | declared

    def get_model_middleware(self) -> list[ModelMiddleware]:
        """Wrappers around every model call, outermost first (see think/middleware.py)."""
        return []

    @property
    def workspace(self) -> Workspace:
        """This session's virtual filesystem (synchronous API; see storage/workspace.py)."""
        return Workspace(self.session)

    def turn_tools(self) -> dict[str, Tool]:
        """What the model gets this turn: the framework's tools (workspace, context blocks),
        then yours (yours win on a name)."""
        return {
            **workspace_tools(self.workspace), **think_session.framework_tools(self), **self.get_tools(),
            **self.extensions.tools(), **self._mcp_tools,
        }

    def turn_system_prompt(self) -> str:
        """The system prompt this turn: yours, then the context blocks as they were when the turn started."""
        prompt = self.get_system_prompt()
        return f"{prompt}\n\n{self._context_section}" if self._context_section else prompt

    # -- context blocks and compaction (think.md §6.3–6.4) -------------------------------------
    @property
    def context(self) -> ContextBlocks:
        return ContextBlocks(self)

    @callable_method
    async def get_context_blocks(self) -> list[dict[str, Any]]:
        await self._load_session()
        return [view.as_dict() for view in await self.context.views()]

    @callable_method
    async def set_context_block(self, label: str, content: str) -> dict[str, Any]:
        """The owner edits a writable block (e.g. from the memory panel); the old content is kept as a version."""
        await self._load_session()
        return (await self.context.replace(label, content, source="user")).as_dict()

    @callable_method
    async def compact(self) -> dict[str, Any] | None:
        """Summarise the middle of the conversation now; None when it is too short."""
        overlay = await compaction.compact(self)
        if overlay is None:
            return None
        await self.broadcast_transcript()
        return {"id": overlay.pk, "summary": overlay.summary, "tokensBefore": overlay.tokens_before}

    @callable_method
    async def undo_compaction(self, compaction_id: int) -> bool:
        undone = await sync_to_async(compaction.undo)(self.session, compaction_id)
        if undone:
            await self.broadcast_transcript()
        return undone

    # -- hooks (think.md §5); all optional --------------------------------------------------
    async def before_turn(self, context: TurnContext) -> TurnConfig | None:
        """Adjust model, system prompt, messages, active tools or step budget for this turn."""
        return None

    async def before_step(self, context: StepContext) -> StepConfig | None:
        """Adjust model, system prompt, messages, active tools or tool choice for one step."""
        return None

    async def prepare_step(self, context: StepContext) -> StepConfig | None:
        """The AI SDK's name for `before_step` (think.md §5); override either."""
        return await self.before_step(context)

    async def before_tool_call(self, context: ToolCallContext) -> ToolCallDecision | None:
        """Allow (optionally with other input), block, or substitute a server tool call."""
        return None

    async def after_tool_call(self, context: ToolCallResultContext) -> None:
        """Observe a finished tool call: input, duration, output or error."""

    async def on_step_end(self, step: StepResult) -> None:
        """After every model step, with its type, text, tool calls, results and usage."""
        await self.on_step_finish(step)

    async def on_step_finish(self, step: StepResult) -> None:
        """The AI SDK's older name for `on_step_end` (think.md §5); override either."""

    async def on_chunk(self, chunk: dict[str, Any]) -> None:
        """Every chunk the model produces (observational; runs per token, keep it cheap)."""

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        await self._load_session()
        await self.extensions.prepare()
        self._context_section = await think_session.render_context(self)
        if self.include_mcp_tools:
            self._mcp_tools = await mcp_turn_tools(self)
        return ModelLoop(self, await think_session.history_for_model(self, options), stored=options.messages).run()

    async def chat(
        self,
        message: str | dict[str, Any],
        callback: Any,
        *,
        signal: asyncio.Event | None = None,
        tools: dict[str, Tool] | None = None,
    ) -> TurnResult:
        """Run a full turn on this session for `message`, reporting chunks to `callback`
        (`on_event`, `on_done`, `on_error`); setting `signal` aborts it (the partial is kept)."""
        return await sub_agents.chat(self, message, callback, signal=signal, tools=tools)
