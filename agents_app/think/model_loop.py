"""The agentic loop Think agents run on every turn (think.md §4–§5, protocol §9.2–§9.4).

Per step: let the agent adjust the call (`prepare_step`), stream it through the model
middleware, then run the server tools it asked for and feed their
results back, until the model answers without tools, a call needs the browser or the user's
approval (the turn pauses), a stop condition holds, or the step budget is spent. Hooks run around the turn, each
tool call and each step; tools can stream preliminary results and data parts while they run.
A continuation first runs the calls the user approved.
"""
from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from django.db.models import Exists, OuterRef

from agents_app.protocol.messages import UIMessage, is_tool_part, tool_name_of
from agents_app.providers.convert import to_openai_messages
from agents_app.gateway.steps import StepOutcome, StepStream, ToolCall, text_ids
from agents_app.providers.openai_chat import ModelError, make_client
from agents_app.think import compaction, stream_writer, sub_agents, think_session
from agents_app.think.context_window import fit_to_window, input_budget, overflow_policy
from agents_app.agents.hooks import (
    BLOCKED_TOOL_TEXT,
    StepConfig,
    StepContext,
    StepResult,
    ToolCallContext,
    ToolCallResultContext,
    TurnConfig,
    TurnContext,
)
from agents_app.think.middleware import ModelCall, ModelCallParams, ModelMiddleware, wrap_model_call
from agents_app.agents.tools import NestedToolRunner, Tool, ToolInputError, bind_nested_runner, unbind_nested_runner
from agents_app.turns import chat_errors
from agents_app.turns.types import ChatErrorContext, ChatOptions
from agents_app.storage import transcript
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session, ToolGrant
from agents_app.testing import faults

if TYPE_CHECKING:
    from agents_app.think.host import ThinkHost

Chunk = dict[str, Any]
_DONE = object()
CONTEXT_OVERFLOW_TEXT = (
    "This conversation is too long for the model's context window, even after compacting older "
    "messages. Start a new chat, or leave out large attachments or tool outputs."
)
# After the upstream refused a request as too long, the rest of the turn aims at this share of
# the estimated budget: the estimate was evidently low for this model.
OVERFLOW_BUDGET_FACTOR = 0.5


def _client_tool_schema(spec: dict[str, Any]) -> dict[str, Any]:
    parameters = spec.get("parameters") or spec.get("inputSchema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": spec["name"], "description": spec.get("description", ""), "parameters": parameters}}


def granted_tools(owner_id: int | None, agent_slug: str) -> list[str]:
    """Tools the owner always allows for this agent, in every session (ToolGrant)."""
    return list(ToolGrant.objects.filter(user_id=owner_id, agent=agent_slug).values_list("tool", flat=True)) if owner_id else []


def grants_stored() -> Exists:
    """Whether the owner of a session (the outer query's row) always allows some tool of its
    agent: when not, `granted_tools` need not be read."""
    return Exists(ToolGrant.objects.filter(user_id=OuterRef("owner_id"), agent=OuterRef("agent__slug")))


def _always_allowed(session_id: int) -> frozenset[str]:
    row = Session.objects.filter(pk=session_id).values_list("allowed_tools", "owner_id", "agent__slug").first()
    if row is None:
        return frozenset()
    in_session, owner_id, agent = row
    return frozenset([*(in_session or ()), *granted_tools(owner_id, agent)])


async def always_allowed_tools(session: Session | None) -> frozenset[str]:
    """Tools the owner always allows in this session or for this agent (tool_state); a loop
    run outside a session (chat_stream.py without one) has no such grants."""
    return frozenset() if session is None else await db_async(_always_allowed)(session.pk)


def requested_model(body: dict[str, Any] | None) -> str | None:
    """A model chosen for this one turn (`{"model": "…"}` in the turn's body, e.g. the chat
    page's regenerate menu); the agent's before_turn still has the last word."""
    model = (body or {}).get("model")
    return model if isinstance(model, str) and model.strip() else None


def _as_text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, default=str)


def _with_system(messages: list[dict[str, Any]], system: str) -> list[dict[str, Any]]:
    rest = messages[1:] if messages and messages[0].get("role") == "system" else messages
    return [{"role": "system", "content": system}, *rest]


class StepRecord:
    """A step as the loop sees it after the model middleware: its text, reasoning and tool
    calls, read from the chunks themselves."""

    def __init__(self) -> None:
        self.text = ""
        self.reasoning = ""
        self._calls: dict[str, ToolCall] = {}

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [c for c in self._calls.values() if c.input is not None or c.error is not None]

    def observe(self, chunk: Chunk) -> None:
        kind = chunk.get("type")
        if kind == "text-delta":
            self.text += chunk.get("delta", "")
        elif kind == "reasoning-delta":
            self.reasoning += chunk.get("delta", "")
        elif kind == "tool-input-start":
            self._calls[chunk["toolCallId"]] = ToolCall(id=chunk["toolCallId"], name=chunk.get("toolName", ""))
        elif kind == "tool-input-delta" and chunk["toolCallId"] in self._calls:
            self._calls[chunk["toolCallId"]].arguments += chunk.get("inputTextDelta", "")
        elif kind in ("tool-input-available", "tool-input-error"):
            call = self._calls.setdefault(chunk["toolCallId"], ToolCall(id=chunk["toolCallId"], name=chunk.get("toolName", "")))
            if kind == "tool-input-available":
                call.input = chunk.get("input") or {}
                call.arguments = call.arguments or json.dumps(call.input)
            else:
                call.error = str(chunk.get("errorText", "Invalid tool input."))


class _Step:
    """One step of the loop: what was offered, what the model produced, what the tools answered."""

    def __init__(self, tools: dict[str, Tool], params: ModelCallParams) -> None:
        self.tools = tools
        self.params = params
        self.record = StepRecord()
        self.results: list[tuple[ToolCall, str]] = []
        self.paused = False
        self.failed = False

    def result(self, number: int, finish_reason: str, outcome: StepOutcome) -> StepResult:
        return StepResult(
            number, self.record.text, self.record.reasoning, finish_reason,
            [{"toolCallId": c.id, "toolName": c.name, "input": c.input} for c in self.record.tool_calls],
            [{"toolCallId": c.id, "output": o} for c, o in self.results],
            dict(outcome.usage or {}),
            # A later step exists only because the previous one's tool results were fed back.
            "initial" if number == 0 else "tool-result",
        )

    def history(self) -> list[dict[str, Any]]:
        """The step as chat-completions messages, for the next step's request."""
        assistant = {
            "role": "assistant",
            "content": self.record.text or None,
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                for c, _ in self.results
            ],
        }
        return [assistant, *({"role": "tool", "tool_call_id": c.id, "content": o} for c, o in self.results)]


def _call_options(config: TurnConfig) -> dict[str, Any]:
    """The turn's request options every step sends."""
    extra: dict[str, Any] = {}
    if config.temperature is not None:
        extra["temperature"] = config.temperature
    if config.max_output_tokens is not None:
        extra["max_tokens"] = config.max_output_tokens
    if config.provider_options:
        extra["extra_body"] = dict(config.provider_options)
    return extra


class ToolOutcome:
    def __init__(self) -> None:
        self.success = True
        self.output: Any = None
        self.error: str | None = None
        # before_tool_call blocked the call: `output` is the reason, which the model reads as
        # the result but code calling the tool gets as an error.
        self.blocked = False


def _own_last_assistant(messages: list[UIMessage]) -> list[UIMessage]:
    """The turn's messages for the loop: a list of its own whose last assistant message is a
    copy, the one message it edits (a continuation settles that message's approved tool
    calls there); the others are only read, so a long conversation is not copied every turn."""
    owned = list(messages)
    for index in range(len(owned) - 1, -1, -1):
        if owned[index]["role"] == "assistant":
            owned[index] = copy.deepcopy(owned[index])
            break
    return owned


class ModelLoop:
    def __init__(
        self,
        agent: ThinkHost,
        options: ChatOptions,
        stored: list[UIMessage] | None = None,
        always_allowed: frozenset[str] | None = None,
    ) -> None:
        """`options.messages` is the history as the model reads it; `stored` the messages it
        was made from (to read them again after a compaction). `always_allowed`: the tools the
        owner always allows, when the caller has read them for this turn (else the loop does)."""
        self.agent = agent
        self.options = options
        self.stored = stored if stored is not None else options.messages
        self.always_allowed = always_allowed
        self.budget_factor = 1.0
        self.overflow = overflow_policy(agent.context_overflow)
        self.proactive_compactions = 0
        self.history_from_transcript = True
        self.turn_history_start = 0
        self.tools = {**agent.turn_tools(), **sub_agents.extra_tools(options.request_id)}
        self.messages: list[UIMessage] = _own_last_assistant(options.messages)
        self.step_number = 0
        self.system = ""
        self.history: list[dict[str, Any]] = []
        self.client_schemas: list[dict[str, Any]] = []
        self.middleware: list[ModelMiddleware] = []  # the agent's, read when the turn starts

    # -- tools ----------------------------------------------------------------------------
    async def _execute(self, tool: Tool, call_id: str, arguments: dict[str, Any], outcome: ToolOutcome, side: asyncio.Queue[Any]) -> None:
        """Run the tool, pushing preliminary results and the final one to `side`."""
        try:
            pending: Any = _DONE
            async for output in tool.outputs(arguments):
                if pending is not _DONE:
                    side.put_nowait({"type": "tool-output-available", "toolCallId": call_id, "output": pending, "preliminary": True})
                pending = output
            outcome.output = None if pending is _DONE else pending
            side.put_nowait({"type": "tool-output-available", "toolCallId": call_id, "output": outcome.output})
        except ToolInputError as error:
            outcome.success, outcome.error = False, str(error)
        except Exception as error:  # a tool's own failure is information for the model
            outcome.success, outcome.error = False, f"Tool {tool.name} failed: {error}"
        if not outcome.success:
            side.put_nowait({"type": "tool-output-error", "toolCallId": call_id, "errorText": outcome.error})
        side.put_nowait(_DONE)

    async def run_tool(self, tool: Tool, call_id: str, arguments: dict[str, Any], outcome: ToolOutcome) -> AsyncIterator[Chunk]:
        """Execute with the hooks around it, streaming what the tool emits as it runs."""
        faults.point("tool")
        started = time.monotonic()
        context = ToolCallContext(call_id, tool.name, arguments, self.step_number, self.history)
        try:
            decision = await self.agent.before_tool_call(context)
        except Exception as error:
            outcome.success, outcome.error = False, f"Tool {tool.name} was stopped: {error}"
            yield {"type": "tool-output-error", "toolCallId": call_id, "errorText": outcome.error}
            decision = None
        else:
            if decision is not None and decision.action == "block":
                outcome.output, outcome.blocked = decision.reason or BLOCKED_TOOL_TEXT, True
                yield {"type": "tool-output-available", "toolCallId": call_id, "output": outcome.output}
            elif decision is not None and decision.action == "substitute":
                outcome.output = decision.output
                yield {"type": "tool-output-available", "toolCallId": call_id, "output": outcome.output}
            else:
                side: asyncio.Queue[Any] = asyncio.Queue()
                token = stream_writer.bind(side)
                nested = bind_nested_runner(self._nested_runner(call_id, side))
                try:
                    effective = decision.input if decision is not None and decision.input is not None else arguments
                    task = asyncio.create_task(self._execute(tool, call_id, effective, outcome, side))
                    while (chunk := await side.get()) is not _DONE:
                        yield chunk
                    await task
                finally:
                    unbind_nested_runner(nested)
                    stream_writer.unbind(token)
        await self.agent.after_tool_call(
            ToolCallResultContext(
                call_id, tool.name, arguments, self.step_number, (time.monotonic() - started) * 1000,
                outcome.success, outcome.output, outcome.error,
            )
        )

    def _nested_runner(self, call_id: str, side: asyncio.Queue[Any]) -> NestedToolRunner:
        """How the tool running as `call_id` runs the tools it calls itself (code mode): through
        run_tool, hooks included, each as `<call_id>.<n>` in the order they start. Their data
        parts join the outer call's stream; their results only go back to the calling code,
        since the client has no tool part for them."""
        numbers = itertools.count(1)

        async def run(tool: Tool, arguments: dict[str, Any]) -> Any:
            inner_id = f"{call_id}.{next(numbers)}"
            outcome = ToolOutcome()
            async for chunk in self.run_tool(tool, inner_id, arguments, outcome):
                if chunk.get("toolCallId") != inner_id:
                    side.put_nowait(chunk)
            if outcome.blocked:
                raise PermissionError(str(outcome.output))
            if not outcome.success:
                raise RuntimeError(outcome.error)
            return outcome.output

        return run

    async def _run_approved_calls(self) -> AsyncIterator[Chunk]:
        """Continuations start by executing what the user approved (protocol §9.4 step 5)."""
        last = transcript.last_assistant(self.messages)
        for part in last["parts"] if last else []:
            if not (is_tool_part(part) and part.get("state") == "approval-responded"):
                continue
            tool = self.tools.get(tool_name_of(part))
            outcome = ToolOutcome()
            if tool is None or tool.execute is None:
                outcome.success, outcome.error = False, "This tool has no server implementation."
                yield {"type": "tool-output-error", "toolCallId": part["toolCallId"], "errorText": outcome.error}
            else:
                async for chunk in self.run_tool(tool, part["toolCallId"], part.get("input") or {}, outcome):
                    yield chunk
            if outcome.success:
                part.update(state="output-available", output=outcome.output)
            else:
                part.update(state="output-error", errorText=outcome.error)

    # -- the turn -------------------------------------------------------------------------
    async def _configure(self) -> tuple[TurnConfig, dict[str, Tool]]:
        system = self.agent.turn_system_prompt()
        context = TurnContext(system, to_openai_messages(self.messages), self.tools, self.agent.get_model(), self.options.continuation, self.options.body)
        faults.point("before_turn")
        config = await self.agent.before_turn(context) or TurnConfig()
        self.system = config.system or system
        self.history = config.messages or to_openai_messages(self.messages, self.system)
        self.history_from_transcript = not config.messages
        self.turn_history_start = len(self.history)
        tools = {**self.tools, **(config.tools or {})}
        self.client_schemas = [_client_tool_schema(t) for t in self.options.client_tools or [] if t["name"] not in self.tools]
        if config.active_tools is not None:
            tools = {name: tool for name, tool in tools.items() if name in config.active_tools}
            self.client_schemas = [c for c in self.client_schemas if c["function"]["name"] in config.active_tools]
        return config, tools

    async def _prepare_step(self, config: TurnConfig, tools: dict[str, Tool], steps: list[StepResult], extra: dict[str, Any]) -> tuple[dict[str, Tool], ModelCallParams]:
        """The turn's settings, then the agent's `prepare_step` overrides for this step."""
        model = config.model or requested_model(self.options.body) or self.agent.get_model()
        offered = [*tools, *(c["function"]["name"] for c in self.client_schemas)]
        context = StepContext(self.step_number, list(steps), model, self.system, self.history, offered, config.tool_choice)
        step = await self.agent.prepare_step(context) or StepConfig()
        messages = step.messages if step.messages is not None else self.history
        if step.system is not None:
            messages = _with_system(messages, step.system)
        client_schemas = self.client_schemas
        if step.active_tools is not None:
            tools = {name: tool for name, tool in tools.items() if name in step.active_tools}
            client_schemas = [c for c in client_schemas if c["function"]["name"] in step.active_tools]
        # Model middleware may edit the call's tools: it gets copies, the loop alone shares.
        shared = not self.middleware
        schemas = [t.offered_schema() if shared else t.openai_schema() for t in tools.values()] + client_schemas
        tool_choice = step.tool_choice if step.tool_choice is not None else config.tool_choice
        return tools, ModelCallParams(step.model or model, messages, schemas or None, tool_choice, self.step_number, dict(extra))

    # -- the context window -------------------------------------------------------------------
    def _fitted(self, params: ModelCallParams) -> list[dict[str, Any]]:
        """The call's messages cut to the model's window (context_window.fit_to_window)."""
        budget = input_budget(params.model, self.agent, max_output_tokens=params.extra.get("max_tokens"))
        return fit_to_window(params.messages, int(budget * self.budget_factor), params.tools)

    async def _shrink_after_overflow(self) -> None:
        """The upstream said the request is too long: compact, and aim lower."""
        self.budget_factor = OVERFLOW_BUDGET_FACTOR
        await self._compact_history()

    async def _compact_when_near_limit(self, steps: list[StepResult]) -> None:
        """Proactive overflow handling: the previous step's reported input (or total) tokens
        came close to the configured limit, so the next step would likely be refused."""
        if self.overflow.proactive_at is None or not steps or self.proactive_compactions >= self.overflow.max_compactions:
            return
        usage = steps[-1].usage
        if usage.get("inputTokens", usage.get("totalTokens", 0)) >= self.overflow.proactive_at:
            self.proactive_compactions += 1
            await self._compact_history()

    async def _compact_history(self) -> None:
        """Compact the conversation (the overlay also serves later turns) and read the
        history again through it, keeping the steps this turn already took."""
        if not self.history_from_transcript:
            return  # before_turn supplied the messages: there is no transcript view to rebuild
        try:
            if await compaction.compact(self.agent) is None:
                return
        except Exception:
            return  # a failed summary leaves the turn uncompacted; a retry still fits tighter
        await self.agent.broadcast_transcript()
        current = {m["id"]: m for m in self.messages}  # keeps results this turn already added
        self.messages = [current.get(m["id"], m) for m in await think_session.model_view(self.agent, self.stored)]
        base = to_openai_messages(self.messages, self.system)
        self.history = [*base, *self.history[self.turn_history_start :]]
        self.turn_history_start = len(base)

    def run(self) -> AsyncIterator[Chunk]:
        """The turn's chunks (also reported to a sub-agent chat() caller, if any)."""
        return sub_agents.observe(self.options.request_id, self._run())

    async def _run(self) -> AsyncIterator[Chunk]:
        yield {"type": "start"}
        if self.options.continuation:
            async for chunk in self._run_approved_calls():
                yield chunk
        config, turn_tools = await self._configure()
        # Read per turn: "always allow" may have been ticked on the approval that resumed it.
        always_allowed = self.always_allowed if self.always_allowed is not None else await always_allowed_tools(self.agent.session)
        extra = _call_options(config)
        stop_when = [*self.agent.stop_when, *config.stop_when]
        calls: list[StepStream] = []
        self.middleware = self.agent.get_model_middleware()
        model_call = wrap_model_call(self._model_caller(calls), self.middleware)
        usage: dict[str, int] = {}
        finish_reason = "stop"
        steps: list[StepResult] = []
        for self.step_number in range(config.max_steps or self.agent.max_steps):
            await self._compact_when_near_limit(steps)
            if config.active_tools is None:  # an extension loaded in the previous step is offered from now on
                turn_tools.update({n: t for n, t in self.agent.extensions.tools().items() if n not in turn_tools})
            step = _Step(*await self._prepare_step(config, turn_tools, steps, extra))
            yield {"type": "start-step"}
            async for chunk in self._stream_step(step, model_call, calls, config, turn_tools, steps, extra):
                yield chunk
            if step.failed:
                return
            outcome = calls[-1].outcome if calls else StepOutcome(finish_reason="tool-calls" if step.record.tool_calls else "stop")
            for key, value in (outcome.usage or {}).items():
                usage[key] = usage.get(key, 0) + value
            finish_reason = outcome.finish_reason
            async for chunk in self._settle_tool_calls(step, always_allowed):
                yield chunk
            yield {"type": "finish-step"}
            steps.append(step.result(self.step_number, finish_reason, outcome))
            await self.agent.on_step_end(steps[-1])
            if not step.record.tool_calls or step.paused or any(stop(steps) for stop in stop_when):
                break
            self.history.extend(step.history())
        finish: Chunk = {"type": "finish", "finishReason": finish_reason}
        if usage:
            finish["messageMetadata"] = {"usage": usage}
        yield finish

    def _model_caller(self, calls: list[StepStream]) -> ModelCall:
        """The innermost model call the middleware wraps: one streamed step through the gateway."""
        client = make_client()  # this loop's shared client: nothing to close
        part_ids = text_ids()

        async def call_model(params: ModelCallParams) -> AsyncIterator[Chunk]:
            stream = StepStream(
                client,
                model=params.model,
                messages=self._fitted(params),
                tools=params.tools,
                tool_choice=params.tool_choice,
                send_reasoning=self.agent.send_reasoning,
                part_ids=part_ids,
                extra=params.extra,
            )
            calls.append(stream)
            async for chunk in stream:
                yield chunk

        return call_model

    async def _stream_step(
        self, step: _Step, model_call: ModelCall, calls: list[StepStream], config: TurnConfig,
        turn_tools: dict[str, Tool], steps: list[StepResult], extra: dict[str, Any],
    ) -> AsyncIterator[Chunk]:
        """The step's model output. Refused as too long for the model (by the agent's
        classification): compact and try again, as often as `context_overflow` allows; any
        other model error, or an overflow past the retries, ends the turn with an error chunk
        carrying the classification for on_chat_error."""
        retries = self.overflow.max_retries if self.overflow.reactive else 0
        for attempt in range(retries + 1):
            calls.clear()
            step.record = StepRecord()
            produced = False
            try:
                async for chunk in model_call(step.params):
                    produced = True
                    if chunk.get("type", "").startswith("tool-input-") and getattr(step.tools.get(chunk.get("toolName", "")), "dynamic", False):
                        chunk["dynamic"] = True  # tools discovered at run time (MCP) are dynamic-tool parts
                    step.record.observe(chunk)
                    await self.agent.on_chunk(chunk)
                    yield chunk
                return
            except ModelError as error:
                classification = chat_errors.classify(self.agent, error, ChatErrorContext("stream", self.options.request_id))
                # What already streamed reached the clients and cannot be taken back: no retry.
                if classification != "context_overflow" or attempt == retries or produced:
                    step.failed = True
                    text = CONTEXT_OVERFLOW_TEXT if classification == "context_overflow" and attempt else str(error)
                    yield {"type": "error", "errorText": text, "classification": classification}
                    return
            await self._shrink_after_overflow()
            step.tools, step.params = await self._prepare_step(config, turn_tools, steps, extra)

    async def _settle_tool_calls(self, step: _Step, always_allowed: frozenset[str]) -> AsyncIterator[Chunk]:
        """Run the step's server tools; a client tool or one awaiting approval pauses the turn."""
        for call in step.record.tool_calls:
            tool = step.tools.get(call.name)
            if call.error is not None:
                step.results.append((call, call.error))
            elif tool is None or tool.execute is None:
                step.paused = True  # the browser answers this one
            elif call.name not in always_allowed and await tool.requires_approval(call.input or {}):
                yield {"type": "tool-approval-request", "approvalId": f"approval_{call.id}", "toolCallId": call.id}
                step.paused = True
            else:
                outcome = ToolOutcome()
                async for chunk in self.run_tool(tool, call.id, call.input or {}, outcome):
                    yield chunk
                step.results.append((call, _as_text(outcome.output) if outcome.success else str(outcome.error)))
