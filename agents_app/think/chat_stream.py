"""Think's model loop for agents that write their own turn (an AIChatAgent's
`on_chat_message`, an `on_message`, a view): the AI SDK's `streamText` with tools and steps.

    async def on_chat_message(self, options):
        return stream_chat(options, system="Be brief.", tools={"get_weather": get_weather}, max_steps=5)

It is the ModelLoop of think/model_loop.py with this call's settings in place of a Think
agent's: the same steps, server / client / approval tools, stop conditions, `prepare_step`,
model middleware and gateway, and the same UI message stream. Think's session features
(compaction, context blocks, workspace, extensions, the Think hooks) are not part of it.
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

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
from agents_app.agents.tools import Tool
from agents_app.gateway.text import per_call_options
from agents_app.protocol.messages import UIMessage
from agents_app.providers.errors import ChatErrorClassification
from agents_app.providers.openai_chat import default_model
from agents_app.think.middleware import ModelMiddleware
from agents_app.think.model_loop import ModelLoop
from agents_app.turns.types import ChatErrorContext, ChatOptions, new_request_id

if TYPE_CHECKING:
    from agents_app.storage.models import Session
    from agents_app.think.host import ThinkHost

Chunk = dict[str, Any]


@dataclass(frozen=True)
class ChatStreamResult:
    """What `on_finish` receives once the loop finished (not when it failed or was aborted)."""

    text: str  # the last step's text, the answer after any tool round trips
    finish_reason: str
    usage: dict[str, int]  # summed over the steps
    steps: list[StepResult]


PrepareStep = Callable[[StepContext], "StepConfig | None | Awaitable[StepConfig | None]"]
OnFinish = Callable[[ChatStreamResult], "None | Awaitable[None]"]


async def _settle(value: Any) -> Any:
    """Callbacks may be sync or async, as the AI SDK's are."""
    return await value if inspect.isawaitable(value) else value


class _NoExtensions:
    """The loop offers an agent's loaded extensions every step; this call has none."""

    def tools(self) -> dict[str, Tool]:
        return {}


class _CallSettings:
    """The members of a Think agent the model loop reads, taken from one call's arguments.
    Its `before_turn` hands the loop the messages itself, so the loop never reaches for the
    session features (compaction, transcript) a Think agent also has."""

    send_reasoning = True
    extensions = _NoExtensions()
    # The built-in overflow handling and the ready-made classifier: a call has no agent hooks.
    context_overflow = None

    def classify_chat_error(self, error: BaseException | str, ctx: ChatErrorContext) -> ChatErrorClassification | None:
        return None

    def __init__(
        self, *, system: str, model: str | None, tools: dict[str, Tool], max_steps: int, stop_when: Sequence[StopCondition],
        prepare_step: PrepareStep | None, middleware: Sequence[ModelMiddleware], session: Session | None,
    ) -> None:
        self.system = system
        self.model = model
        self.tools = tools
        self.max_steps = max_steps
        self.stop_when = stop_when
        self.on_prepare_step = prepare_step
        self.middleware = list(middleware)
        self.session = session
        self.steps: list[StepResult] = []

    def get_model(self) -> str:
        return self.model or default_model()

    def get_model_middleware(self) -> list[ModelMiddleware]:
        return self.middleware

    def turn_tools(self) -> dict[str, Tool]:
        return self.tools

    def turn_system_prompt(self) -> str:
        return self.system

    async def before_turn(self, context: TurnContext) -> TurnConfig:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return TurnConfig(messages=[*system, *context.messages])

    async def prepare_step(self, context: StepContext) -> StepConfig | None:
        return await _settle(self.on_prepare_step(context)) if self.on_prepare_step else None

    async def before_tool_call(self, context: ToolCallContext) -> ToolCallDecision | None:
        return None

    async def after_tool_call(self, context: ToolCallResultContext) -> None:
        return None

    async def on_step_end(self, step: StepResult) -> None:
        self.steps.append(step)

    async def on_chunk(self, chunk: Chunk) -> None:
        return None


async def _until(signal: asyncio.Event, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """`chunks` until `signal` is set, then an abort chunk. One task drains the loop, so its
    context variables (a tool's data-part writer, the gateway options) stay in one context,
    and cancelling that task closes the upstream response."""
    queue: asyncio.Queue[tuple[Chunk | None, BaseException | None]] = asyncio.Queue(maxsize=1)

    async def drain() -> None:
        try:
            async for chunk in chunks:
                await queue.put((chunk, None))
            await queue.put((None, None))
        except Exception as error:  # handed to the reader, which re-raises it in its own task
            await queue.put((None, error))

    producer = asyncio.create_task(drain())
    stopped = asyncio.create_task(signal.wait())
    try:
        while True:
            item = asyncio.create_task(queue.get())
            await asyncio.wait({item, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not item.done():
                item.cancel()
                yield {"type": "abort"}
                return
            chunk, error = item.result()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        stopped.cancel()
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)


async def stream_chat(
    messages: ChatOptions | list[UIMessage],
    *,
    system: str = "",
    model: str | None = None,
    tools: dict[str, Tool] | None = None,
    max_steps: int = 1,
    stop_when: Sequence[StopCondition] = (),
    prepare_step: PrepareStep | None = None,
    middleware: Sequence[ModelMiddleware] = (),
    signal: asyncio.Event | None = None,
    on_finish: OnFinish | None = None,
    gateway: dict[str, Any] | None = None,
    session: Session | None = None,
) -> AsyncIterator[Chunk]:
    """The model loop as a UI message stream, for a handler to return or iterate.

    `messages` is the turn's ChatOptions (its messages, the client's tools, a continuation
    after an approval) or UI messages. Up to `max_steps` model calls (1 by default, as in the
    AI SDK): each runs the server tools the model asked for and feeds their results to the
    next; a tool without `execute` (client tool) or one needing approval pauses the turn.
    `signal` ends the stream with an abort chunk when set (a turn's own cancel needs none:
    the runner stops the stream). `session` lets the owner's "always allow" grants skip
    approvals."""
    options = messages if isinstance(messages, ChatOptions) else ChatOptions(new_request_id(), asyncio.Event(), messages)
    settings = _CallSettings(
        system=system, model=model, tools=tools or {}, max_steps=max_steps, stop_when=stop_when,
        prepare_step=prepare_step, middleware=middleware, session=session,
    )
    # The loop reads only the members _CallSettings has: the rest of a Think agent is reached
    # from the session history, which `before_turn` replaces.
    loop = ModelLoop(cast("ThinkHost", settings), options)
    finish: Chunk | None = None
    with per_call_options(gateway):
        chunks = loop.run() if signal is None else _until(signal, loop.run())
        async for chunk in chunks:
            if chunk.get("type") == "finish":
                finish = chunk
            yield chunk
    if finish is not None and on_finish is not None:
        usage: dict[str, int] = {}
        for step in settings.steps:
            for key, value in step.usage.items():
                usage[key] = usage.get(key, 0) + value
        last = settings.steps[-1].text if settings.steps else ""
        await _settle(on_finish(ChatStreamResult(last, finish["finishReason"], usage, list(settings.steps))))


def stream_reply(messages: list[UIMessage], *, system: str | None = None, model: str | None = None) -> AsyncIterator[Chunk]:
    """One model call as a complete UI message stream: `stream_chat` without tools."""
    return stream_chat(messages, system=system or "", model=model)
