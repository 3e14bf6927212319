"""Code mode: one `execute` tool whose input is JavaScript. The model writes the body of an
async function that calls the given tools (`await tools.getWeather({city: "Paris"})`), loops,
filters and combines their results, and returns only what it needs; the result and the
captured console output come back as the tool output.

    def get_tools(self):
        mine = {t.name: t for t in (get_weather, convert_units)}
        return {**mine, "execute": create_execute_tool(tools=mine, state=WorkspaceState(self.workspace))}
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pydantic

from agents_app.agents.tools import Tool, run_nested
from agents_app.sandbox.quickjs_runner import Bridge, Limits, SandboxCodeError, SandboxLimitError, run_js
from agents_app.storage.db_threads import db_async
from agents_app.storage.workspace import Workspace, WorkspaceError


class ExecuteInput(pydantic.BaseModel):
    code: str = pydantic.Field(description="The body of an async JavaScript function; `return` the result.")


class WorkspaceState:
    """`state.*` in the sandbox: the session's workspace files (paths like "/notes/a.md")."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    signatures = (
        "state.readFile(path: string): Promise<string>",
        "state.writeFile(path: string, content: string): Promise<{path, bytes}>",
        "state.list(path?: string): Promise<string[]>  // names; directories end with /",
        "state.exists(path: string): Promise<boolean>",
        "state.delete(path: string): Promise<void>",
    )

    def bridges(self) -> dict[str, Bridge]:
        workspace = self.workspace

        def read_file(path: str) -> str:
            return workspace.read_text(path)

        def write_file(path: str, content: str) -> dict[str, Any]:
            if not isinstance(content, str):
                raise WorkspaceError("writeFile needs the content as a string (JSON.stringify objects)")
            workspace.write_text(path, content)
            return {"path": path, "bytes": len(content.encode())}

        def list_dir(path: str = "/") -> list[str]:
            return [entry.path.rsplit("/", 1)[-1] + ("/" if entry.is_directory else "") for entry in workspace.children(path)]

        def exists(path: str) -> bool:
            return workspace.get(path) is not None

        def delete(path: str) -> None:
            workspace.delete(path, recursive=True)

        def bridge(function: Any) -> Bridge:
            async def call(args: list[Any]) -> Any:
                if not all(isinstance(a, str) for a in args):
                    raise WorkspaceError("paths and contents are strings")
                return await db_async(function)(*args)

            return call

        return {
            "readFile": bridge(read_file), "writeFile": bridge(write_file), "list": bridge(list_dir),
            "exists": bridge(exists), "delete": bridge(delete),
        }


def _tool_bridge(tool: Tool) -> Bridge:
    async def call(args: list[Any]) -> Any:
        if len(args) > 1 or (args and not isinstance(args[0], dict)):
            raise ValueError(f"tools.{tool.name} takes one object argument")
        arguments = args[0] if args else {}
        # Code cannot pause mid-run for the user's answer, so such a call is refused before the
        # hooks see it; the model can still call the tool directly and get it approved.
        if await tool.requires_approval(arguments):
            raise PermissionError(f"tools.{tool.name} needs the user's approval: call it directly, not from code")
        return await run_nested(tool, arguments)

    return call


def describe_tools(tools: Mapping[str, Tool]) -> str:
    return "\n".join(
        f"- tools.{name}(input: {json.dumps(tool.parameters.get('properties', {}), separators=(',', ':'))}): Promise<any>  // {tool.description}"
        for name, tool in tools.items()
    )


def create_execute_tool(
    tools: Mapping[str, Tool] | None = None,
    state: WorkspaceState | None = None,
    *,
    name: str = "execute",
    limits: Limits | None = None,
    description: str | None = None,
) -> Tool:
    """A server tool running model-written JavaScript in QuickJS with `tools` (server tools
    only; client tools need the browser) and optionally `state` bridged in."""
    bridged = {n: t for n, t in (tools or {}).items() if t.execute is not None}
    limits = limits or Limits()
    lines = [
        "Run JavaScript in an isolated sandbox (no network, files, timers or modules). Write the body of an async "
        "function: call tools with `await`, combine their results, and `return` a JSON value. console.log output is "
        f"returned too. Limits: {limits.cpu_seconds:g} s CPU, {limits.wall_seconds:g} s in all, "
        f"{limits.memory_bytes // (1024 * 1024)} MiB memory, {limits.max_output_chars} characters of output.",
    ]
    if bridged:
        lines += ["Available functions:", describe_tools(bridged)]
    if state is not None:
        lines += ["Files of this conversation's workspace:", *(f"- {s}" for s in state.signatures)]

    async def execute(code: str) -> dict[str, Any]:
        namespaces: dict[str, Mapping[str, Bridge]] = {"tools": {n: _tool_bridge(t) for n, t in bridged.items()}}
        if state is not None:
            namespaces["state"] = state.bridges()
        try:
            outcome = await run_js(code, namespaces, limits)
        except SandboxLimitError as error:
            raise RuntimeError(str(error)) from None
        except SandboxCodeError as error:
            logs = "\nConsole output before the error:\n" + "\n".join(error.logs) if error.logs else ""
            raise RuntimeError(f"The code failed: {error}{logs}") from None
        return {"result": outcome.result, "logs": outcome.logs}

    return Tool(name=name, description=description or "\n".join(lines), input_model=ExecuteInput, execute=execute)
