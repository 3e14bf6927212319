"""The agentic loop Think agents run on every turn (think.md §4, protocol §9.2–§9.4).

Per step: stream one model call, then run the server tools it asked for and feed their
results back, until the model answers without tools, a call needs the browser or the user's
approval (the turn pauses), or `max_steps` is reached. A continuation first runs the calls the
user approved.
"""
from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from agents_app.protocol.messages import UIMessage, is_tool_part, tool_name_of
from agents_app.providers.convert import to_openai_messages
from agents_app.providers.openai_chat import ModelError, StepStream, make_client, text_ids
from agents_app.runtime.tools import Tool, ToolInputError
from agents_app.runtime.types import ChatOptions

if TYPE_CHECKING:
    from agents_app.runtime.agent import ThinkAgent

Chunk = dict[str, Any]


def _client_tool_schema(spec: dict[str, Any]) -> dict[str, Any]:
    parameters = spec.get("parameters") or spec.get("inputSchema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": spec["name"], "description": spec.get("description", ""), "parameters": parameters}}


async def run_tool(tool: Tool, call_id: str, arguments: dict[str, Any]) -> tuple[Chunk, Any]:
    """Execute a server tool. Failures become a tool-output-error the model can read; they
    never end the turn."""
    try:
        output = await tool.run(arguments)
    except ToolInputError as error:
        return {"type": "tool-output-error", "toolCallId": call_id, "errorText": str(error)}, str(error)
    except Exception as error:  # a tool's own failure is information for the model
        text = f"Tool {tool.name} failed: {error}"
        return {"type": "tool-output-error", "toolCallId": call_id, "errorText": text}, text
    return {"type": "tool-output-available", "toolCallId": call_id, "output": output}, output


class ModelLoop:
    def __init__(self, agent: ThinkAgent, options: ChatOptions) -> None:
        self.agent = agent
        self.options = options
        self.tools = agent.get_tools()
        self.messages: list[UIMessage] = copy.deepcopy(options.messages)

    def _schemas(self) -> list[dict[str, Any]]:
        client = [_client_tool_schema(t) for t in self.options.client_tools or [] if t["name"] not in self.tools]
        return [t.openai_schema() for t in self.tools.values()] + client

    async def _run_approved_calls(self) -> AsyncIterator[Chunk]:
        """Continuations start by executing what the user approved (protocol §9.4 step 5)."""
        last = next((m for m in reversed(self.messages) if m["role"] == "assistant"), None)
        for part in last["parts"] if last else []:
            if not (is_tool_part(part) and part.get("state") == "approval-responded"):
                continue
            tool = self.tools.get(tool_name_of(part))
            if tool is None or tool.execute is None:
                chunk: Chunk = {"type": "tool-output-error", "toolCallId": part["toolCallId"], "errorText": "This tool has no server implementation."}
            else:
                chunk, _ = await run_tool(tool, part["toolCallId"], part.get("input") or {})
            if chunk["type"] == "tool-output-available":
                part.update(state="output-available", output=chunk["output"])
            else:
                part.update(state="output-error", errorText=chunk["errorText"])
            yield chunk

    async def run(self) -> AsyncIterator[Chunk]:
        yield {"type": "start"}
        if self.options.continuation:
            async for chunk in self._run_approved_calls():
                yield chunk
        history = to_openai_messages(self.messages, self.agent.get_system_prompt())
        schemas = self._schemas()
        part_ids = text_ids()
        usage: dict[str, int] = {}
        finish_reason = "stop"
        async with make_client() as client:
            for _ in range(self.agent.max_steps):
                yield {"type": "start-step"}
                step = StepStream(
                    client,
                    model=self.agent.get_model(),
                    messages=history,
                    tools=schemas or None,
                    send_reasoning=self.agent.send_reasoning,
                    part_ids=part_ids,
                )
                try:
                    async for chunk in step:
                        yield chunk
                except ModelError as error:
                    yield {"type": "error", "errorText": str(error)}
                    return
                for key, value in (step.outcome.usage or {}).items():
                    usage[key] = usage.get(key, 0) + value
                finish_reason = step.outcome.finish_reason
                results: list[tuple[Any, Any]] = []
                paused = False
                for call in step.outcome.tool_calls:
                    tool = self.tools.get(call.name)
                    if call.error is not None:
                        results.append((call, call.error))
                    elif tool is None or tool.execute is None:
                        paused = True  # the browser answers this one
                    elif await tool.requires_approval(call.input or {}):
                        yield {"type": "tool-approval-request", "approvalId": f"approval_{call.id}", "toolCallId": call.id}
                        paused = True
                    else:
                        chunk, output = await run_tool(tool, call.id, call.input or {})
                        yield chunk
                        results.append((call, output))
                yield {"type": "finish-step"}
                if not step.outcome.tool_calls or paused:
                    break
                history.append(
                    {
                        "role": "assistant",
                        "content": step.outcome.text or None,
                        "tool_calls": [
                            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                            for c, _ in results
                        ],
                    }
                )
                history.extend(
                    {"role": "tool", "tool_call_id": c.id, "content": o if isinstance(o, str) else json.dumps(o, default=str)}
                    for c, o in results
                )
        finish: Chunk = {"type": "finish", "finishReason": finish_reason}
        if usage:
            finish["messageMetadata"] = {"usage": usage}
        yield finish
