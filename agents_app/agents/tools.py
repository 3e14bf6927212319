"""Tools the model can call: schema from a pydantic model or a typed signature, validated input.

A tool without `execute` is a client tool: the turn pauses until the browser answers with
cf_agent_tool_result. `needs_approval` pauses for cf_agent_tool_approval instead.
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from django.db import close_old_connections

Approval = bool | Callable[[dict[str, Any]], bool | Awaitable[bool]]


# Generating a JSON schema walks the whole model: once per model class, not per model call.
# Kept as JSON text: every model step offers every tool's schema, and decoding the text gives
# each caller its own copy at a quarter of the cost of copy.deepcopy (2.9 % of the server's
# CPU at 200 chats). Weak keys: client tools and extensions make model classes at run time.
_schemas: weakref.WeakKeyDictionary[type[pydantic.BaseModel], str] = weakref.WeakKeyDictionary()
# What `Tool.offered_schema` hands out: per model class, (name, description) → the one schema.
_offered: weakref.WeakKeyDictionary[type[pydantic.BaseModel], dict[tuple[str, str], dict[str, Any]]] = weakref.WeakKeyDictionary()


def _json_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The model's JSON schema (without its title): a new object on every call, which the
    caller may edit (model middleware does)."""
    text = _schemas.get(model)
    if text is None:
        schema = model.model_json_schema()
        schema.pop("title", None)
        text = _schemas[model] = json.dumps(schema)
    return json.loads(text)


class ToolInputError(ValueError):
    """The model sent arguments that do not match the tool's schema."""


@dataclass
class Tool:
    name: str
    description: str
    input_model: type[pydantic.BaseModel]
    execute: Callable[..., Any] | None = None
    needs_approval: Approval = False
    # Tools discovered at run time (MCP servers) stream as `dynamic-tool` parts.
    dynamic: bool = False

    @property
    def parameters(self) -> dict[str, Any]:
        return _json_schema(self.input_model)

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def offered_schema(self) -> dict[str, Any]:
        """`openai_schema()` as one object shared by every model call that offers this tool,
        for callers that only read it: a model step offers every tool, and copying each
        schema for each step was ~0.3 ms of a turn's CPU (fourteen tools)."""
        if type(self).parameters is not Tool.parameters:  # a subclass's own schema: not the model's
            return self.openai_schema()
        by_text = _offered.setdefault(self.input_model, {})
        key = (self.name, self.description)
        schema = by_text.get(key)
        if schema is None:
            schema = by_text[key] = self.openai_schema()
        return schema

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.input_model.model_validate(arguments).model_dump()
        except pydantic.ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'input'}: {item['msg']}" for item in error.errors()
            )
            raise ToolInputError(f"Invalid arguments for tool {self.name}: {problems}") from error

    async def requires_approval(self, arguments: dict[str, Any]) -> bool:
        if callable(self.needs_approval):
            decision = self.needs_approval(arguments)
            return bool(await decision) if inspect.isawaitable(decision) else bool(decision)
        return bool(self.needs_approval)

    async def outputs(self, arguments: dict[str, Any], *, validated: bool = False) -> AsyncIterator[Any]:
        """The tool's outputs: one for a plain function; every yield of an async generator
        (all but the last are preliminary results)."""
        assert self.execute is not None, f"{self.name} is a client tool"
        kwargs = arguments if validated else self.validate(arguments)
        if inspect.isasyncgenfunction(self.execute):
            async for output in self.execute(**kwargs):
                yield output
        elif inspect.iscoroutinefunction(self.execute):
            yield await self.execute(**kwargs)
        else:
            yield await asyncio.to_thread(_call_on_worker_thread, self.execute, kwargs)

    async def run(self, arguments: dict[str, Any]) -> Any:
        """The final output."""
        final = None
        async for output in self.outputs(arguments):
            final = output
        return final


def _call_on_worker_thread(execute: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """A plain function tool runs on the event loop's worker threads, which no request
    boundary ever reaches: the database connections it opened there are given back when it
    returns (to the pool, on PostgreSQL), or they would stay taken by a thread that may end
    with its loop."""
    try:
        return execute(**kwargs)
    finally:
        close_old_connections()


def _model_from_signature(func: Callable[..., Any], name: str) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(func).parameters.values():
        annotation = parameter.annotation if parameter.annotation is not inspect.Parameter.empty else Any
        default = parameter.default if parameter.default is not inspect.Parameter.empty else ...
        fields[parameter.name] = (annotation, default)
    return pydantic.create_model(f"{name}Input", **fields)


def tool(
    description: str,
    *,
    name: str | None = None,
    input_model: type[pydantic.BaseModel] | None = None,
    needs_approval: Approval = False,
) -> Callable[[Callable[..., Any]], Tool]:
    """Decorator turning a function into a server tool; its typed signature is the input schema."""

    def wrap(func: Callable[..., Any]) -> Tool:
        tool_name = name or func.__name__
        return Tool(
            name=tool_name,
            description=description,
            input_model=input_model or _model_from_signature(func, tool_name),
            execute=func,
            needs_approval=needs_approval,
        )

    return wrap


def client_tool(name: str, description: str, input_model: type[pydantic.BaseModel] | None = None) -> Tool:
    """A tool the browser executes (no server implementation)."""
    return Tool(name=name, description=description, input_model=input_model or pydantic.create_model(f"{name}Input"))


# How a tool that calls other tools (code mode's `tools.*`) runs them. The model loop binds one
# while a tool runs, so the agent's before_tool_call/after_tool_call hooks govern those inner
# calls exactly like the model's own (a blocked tool stays blocked from inside code); outside
# a loop nothing is bound and the inner tool simply runs.
NestedToolRunner = Callable[[Tool, dict[str, Any]], Awaitable[Any]]
_nested_runner: contextvars.ContextVar[NestedToolRunner | None] = contextvars.ContextVar("nested_tool_runner", default=None)


def bind_nested_runner(runner: NestedToolRunner) -> contextvars.Token[NestedToolRunner | None]:
    return _nested_runner.set(runner)


def unbind_nested_runner(token: contextvars.Token[NestedToolRunner | None]) -> None:
    _nested_runner.reset(token)


async def run_nested(tool: Tool, arguments: dict[str, Any]) -> Any:
    """Run `tool` on behalf of the running tool; raises with the reason when it fails or a
    before_tool_call hook blocks it."""
    runner = _nested_runner.get()
    return await (runner(tool, arguments) if runner is not None else tool.run(arguments))
