"""Code mode: the model's JavaScript runs in QuickJS with the agent's tools bridged in; every
limit and every escape attempt ends as a clear tool error and the turn goes on."""
from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agents_app.turns.instances import load_agent, resolve_session
from agents_app.testing.fake_openai import Reply, ToolCallSpec
from tests.conftest import user_message

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _sandbox_agents() -> None:
    import tests.sandbox_agents  # noqa: F401 - registers the agents


async def run_code(model: Any, user: Any, code: str, agent_name: str = "code-mode-agent") -> dict[str, Any]:
    """One turn in which the model calls execute with `code`; returns the tool part."""
    model.script(Reply.tool_calls([ToolCallSpec("execute", json.dumps({"code": code}), id="x")]), Reply.text("Done."))
    session = await sync_to_async(resolve_session)(agent_name, "code", user)
    agent = await sync_to_async(load_agent)(session)
    result = await agent.save_messages([user_message("Go", f"u{len(model.requests)}")])
    assert result.message["parts"][-1]["text"] == "Done."  # the turn always goes on
    return next(p for p in result.message["parts"] if p.get("toolCallId") == "x")


async def test_code_calls_bridged_tools_and_returns_its_result_with_the_console_output(model, user):
    part = await run_code(model, user, """
        const cities = ["Paris", "Berlin", "Lisbon"];
        const readings = await Promise.all(cities.map((city) => tools.get_weather({ city })));
        console.log("read", readings.length, "stations");
        const warmest = readings.reduce((a, b) => (a.celsius > b.celsius ? a : b));
        return { warmest: warmest.city, average: readings.reduce((s, r) => s + r.celsius, 0) / readings.length };
    """)
    assert part["output"] == {"result": {"warmest": "Lisbon", "average": 18}, "logs": ["read 3 stations"]}
    offered = {t["function"]["name"]: t["function"] for t in model.requests[0]["tools"]}
    assert "tools.get_weather(input:" in offered["execute"]["description"] and "state.readFile" in offered["execute"]["description"]
    assert json.loads(model.requests[1]["messages"][-1]["content"])["result"]["warmest"] == "Lisbon"


async def test_a_tool_error_can_be_caught_by_the_code(model, user):
    part = await run_code(model, user, """
        try { await tools.get_weather({ city: "Rome" }); } catch (e) { return "caught: " + e.message; }
    """)
    assert part["output"]["result"] == "caught: Tool get_weather failed: No weather station in Rome"


async def test_code_reads_and_writes_the_workspace_through_state(model, user):
    part = await run_code(model, user, """
        await state.writeFile("/reports/weather.json", JSON.stringify(await tools.get_weather({ city: "Paris" })));
        return { files: await state.list("/reports"), text: await state.readFile("/reports/weather.json") };
    """)
    assert part["output"]["result"] == {"files": ["weather.json"], "text": '{"city":"Paris","celsius":18}'}
    session = await sync_to_async(resolve_session)("code-mode-agent", "code", user)
    agent = await sync_to_async(load_agent)(session)
    assert json.loads(await sync_to_async(agent.workspace.read_text)("/reports/weather.json")) == {"city": "Paris", "celsius": 18}


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("while (true) {}", "Time limit: the code ran for more than 0.5 s of CPU time"),
        ("const a = []; while (true) a.push('x'.repeat(10000) + a.length);", "Memory limit: the code used more than 8 MiB"),
        ("return 'x'.repeat(5000);", "Output limit: the result and logs are 5002 characters; the limit is 2000"),
        ("for (;;) console.log('spam');", "Output limit: console output exceeded 2000 characters"),
        ("const f = () => f(); f();", "Stack limit"),
        ("await new Promise(() => {});", "waiting for a promise that nothing will settle"),
        ("throw new Error('boom');", "The code failed: Error: boom"),
        ("return 1 +;", "The code failed: SyntaxError"),
    ],
)
async def test_each_limit_and_failure_is_a_tool_error_the_model_reads(model, user, code, error):
    part = await run_code(model, user, code)
    assert part["state"] == "output-error"
    assert error in part["errorText"]
    assert error in model.requests[1]["messages"][-1]["content"]


ENGINE_GLOBALS = {
    "Object", "Function", "Error", "EvalError", "RangeError", "ReferenceError", "SyntaxError", "TypeError", "URIError",
    "InternalError", "AggregateError", "Array", "parseInt", "parseFloat", "isNaN", "isFinite", "decodeURI",
    "decodeURIComponent", "encodeURI", "encodeURIComponent", "escape", "unescape", "Infinity", "NaN", "undefined",
    "__date_clock", "Number", "Boolean", "String", "Math", "Reflect", "Symbol", "eval", "globalThis", "Date", "RegExp",
    "JSON", "Proxy", "Map", "Set", "WeakMap", "WeakSet", "ArrayBuffer", "SharedArrayBuffer", "Uint8ClampedArray",
    "Int8Array", "Uint8Array", "Int16Array", "Uint16Array", "Int32Array", "Uint32Array", "BigInt64Array",
    "BigUint64Array", "Float32Array", "Float64Array", "DataView", "Atomics", "Promise", "BigInt",
}
# What the sandbox adds: the console, the bridged namespaces and the runner's JSON message queue.
SANDBOX_GLOBALS = {"console", "tools", "state", "__define", "__takeCalls", "__pending", "__settle", "__start", "__report"}


async def test_the_global_scope_holds_only_the_engine_builtins_and_the_bridge(model, user):
    part = await run_code(model, user, "return Object.getOwnPropertyNames(Function('return globalThis')());")
    assert set(part["output"]["result"]) - ENGINE_GLOBALS == SANDBOX_GLOBALS


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("const os = await import('os'); return os.getcwd();", "could not load module 'os'"),
        ("const std = await import('std'); return std.loadFile('/etc/passwd');", "could not load module 'std'"),
        ("return require('fs').readFileSync('/etc/passwd');", "ReferenceError: 'require' is not defined"),
        ("return await fetch('http://127.0.0.1/');", "ReferenceError: 'fetch' is not defined"),
        ("return await tools.__class__({});", "TypeError: not a function"),
        ("return await tools.get_weather.__globals__({});", "TypeError: not a function"),
    ],
)
async def test_escape_attempts_fail_inside_the_sandbox(model, user, code, error):
    part = await run_code(model, user, code)
    assert part["state"] == "output-error" and error in part["errorText"]


async def test_the_bridge_carries_json_only_so_host_objects_never_enter(model, user):
    part = await run_code(model, user, """
        const reading = await tools.get_weather({ city: "Paris" });
        return [Object.getPrototypeOf(reading) === Object.prototype, typeof reading.__class__, typeof reading.celsius];
    """)
    assert part["output"]["result"] == [True, "undefined", "number"]


async def test_tools_that_need_approval_cannot_be_called_from_code(model, user):
    part = await run_code(model, user, "return await tools.wipe({});")
    assert part["state"] == "output-error"
    assert "tools.wipe needs the user's approval: call it directly" in part["errorText"]


@pytest.fixture
def guarded() -> Any:
    from tests.sandbox_agents import NOTES, GuardedCodeModeAgent

    NOTES.clear()
    GuardedCodeModeAgent.finished.clear()
    return GuardedCodeModeAgent


async def test_a_tool_blocked_by_before_tool_call_stays_blocked_when_called_from_code(model, user, guarded):
    from tests.sandbox_agents import NOTES

    part = await run_code(model, user, """
        try { await tools.note({ text: "the secret plan" }); } catch (e) { return "refused: " + e.message; }
    """, "guarded-code-mode-agent")
    assert part["output"]["result"] == "refused: Notes about secrets are not allowed."
    assert NOTES == []


async def test_before_tool_call_rewrites_the_input_of_a_call_from_code(model, user, guarded):
    part = await run_code(model, user, "return await tools.get_weather({ city: 'Rome' });", "guarded-code-mode-agent")
    assert part["output"]["result"] == {"city": "Lisbon", "celsius": 24}


async def test_after_tool_call_observes_each_call_from_code_with_its_own_id_and_output(model, user, guarded):
    await run_code(model, user, """
        await tools.note({ text: "groceries" });
        return await tools.get_weather({ city: "Paris" });
    """, "guarded-code-mode-agent")
    seen = [(c.tool_call_id, c.tool_name, c.input, c.success, c.output) for c in guarded.finished]
    assert seen[:2] == [
        ("x.1", "note", {"text": "groceries"}, True, "noted"),
        ("x.2", "get_weather", {"city": "Paris"}, True, {"city": "Paris", "celsius": 18}),
    ]
    assert seen[2][:2] == ("x", "execute")  # the outer call finishes last


async def test_a_tool_needing_approval_does_not_run_from_code_even_past_the_hooks(model, user, guarded):
    part = await run_code(model, user, "return await tools.wipe({});", "guarded-code-mode-agent")
    assert part["state"] == "output-error" and "tools.wipe needs the user's approval" in part["errorText"]
    assert [c.tool_name for c in guarded.finished] == ["execute"]
