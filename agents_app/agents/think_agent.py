"""`ThinkAgent`: an agent whose model loop the framework runs (the reference's Think); you
configure the model, system prompt, tools, context blocks and hooks.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar

from asgiref.sync import sync_to_async

from agents_app.agents.agent import callable_method
from agents_app.agents.chat_agent import AIChatAgent
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
from agents_app.agents.stored_features import StoredFeatures, feature_annotations, features_on, read_stored_features
from agents_app.agents.tools import Approval, Tool
from agents_app.mcp.tools import turn_tools as mcp_turn_tools
from agents_app.providers.openai_chat import default_model
from agents_app.sandbox.extensions import ExtensionManager
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Agent as AgentRecord
from agents_app.storage.models import Session
from agents_app.storage.workspace import Workspace
from agents_app.think import compaction, sub_agents, think_session
from agents_app.think.context_blocks import ContextBlocks, ContextBlockSpec, loaded_keys
from agents_app.think.middleware import ModelMiddleware
from agents_app.think.model_loop import ModelLoop, granted_tools
from agents_app.think.skills import Skill
from agents_app.think.think_session import SessionBuilder
from agents_app.think.workspace_tools import workspace_tools
from agents_app.turns.types import ChatOptions, ChatResponse, TurnResult


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
        self._features_read_at_lock: StoredFeatures | None = None

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

    @classmethod
    def turn_session_annotations(cls) -> dict[str, Any]:
        return feature_annotations()

    def read_before_turn(self) -> None:
        # Not before a first start whose on_start may store features (configure_session only
        # builds in memory).
        if self.started_in_process() or self.start_up_stores_nothing():
            self._features_read_at_lock = features_on(self.session) or read_stored_features(self.session.pk)

    async def on_chat_message(self, options: ChatOptions) -> ChatResponse:
        await self.start()  # first: on_start may add blocks, servers or extensions
        # One read says which of the session's stored features exist; only those are read.
        stored, self._features_read_at_lock = self._features_read_at_lock, None
        if stored is None:
            stored = await db_async(read_stored_features)(self.session.pk)
        if stored.runtime_blocks:
            await think_session.load_runtime_state(self)
        else:
            self.runtime_context_blocks = ()
        self.loaded_context_keys = loaded_keys(options.messages)
        await self.extensions.prepare(any_stored=stored.extensions)
        self._context_section = await think_session.render_context(self)
        if self.include_mcp_tools:
            self._mcp_tools = await mcp_turn_tools(self) if stored.mcp_servers else {}
        granted = await db_async(granted_tools)(self.session.owner_id, self.record.slug) if stored.tool_grants else []
        history = await think_session.history_for_model(self, options, overlays_stored=stored.compactions)
        return ModelLoop(self, history, stored=options.messages, always_allowed=stored.allowed_tools | frozenset(granted)).run()

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
