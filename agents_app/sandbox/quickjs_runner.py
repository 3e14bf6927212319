"""Model-written JavaScript in an embedded QuickJS engine, isolated from the host.

Isolation: the engine has no filesystem, network, module loader or timers, and no Python
object is ever exposed to it. A call such as `await tools.getWeather({city})` only queues a
request inside the engine and returns a pending promise; between JS steps the runner takes the
queued requests, runs them in Python (concurrently) and settles the promises with JSON values.
So the only way out of the sandbox is the JSON the bridged functions accept and return.

Limits, each a `SandboxLimitError` with a message the model can act on: memory (QuickJS heap),
JS CPU time (QuickJS interrupts a running script), wall time (including bridged calls), the
size of the result plus the captured console output, and the number of bridged calls.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import quickjs

# A bridged function receives the JS call's arguments as a list of JSON values.
Bridge = Callable[[list[Any]], Awaitable[Any]]

_PRELUDE = r"""
(() => {
  const calls = [];
  const pending = new Map();
  const logs = [];
  let nextId = 1, logChars = 0, overflow = false;
  const MAX_LOG_CHARS = %(max_log_chars)d;
  const show = (v) => {
    if (typeof v === "string") return v;
    if (v instanceof Error) return String(v);
    try { const s = JSON.stringify(v); return s === undefined ? String(v) : s; } catch (e) { return String(v); }
  };
  const writer = (prefix) => (...args) => {
    if (overflow) return;
    const line = prefix + args.map(show).join(" ");
    logChars += line.length;
    if (logChars > MAX_LOG_CHARS) { overflow = true; return; }
    logs.push(line);
  };
  globalThis.console = Object.freeze({
    log: writer(""), info: writer(""), debug: writer(""), warn: writer("[warn] "), error: writer("[error] "),
  });
  const call = (name, args) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    calls.push({ id, name, args });
  });
  const namespace = (prefix, names) => Object.freeze(Object.fromEntries(names.map((n) => [n, (...args) => call(prefix + n, args)])));
  globalThis.__define = (name, prefix, names) => { globalThis[name] = namespace(prefix, names); };
  globalThis.__takeCalls = () => JSON.stringify(calls.splice(0));
  globalThis.__pending = () => pending.size;
  globalThis.__settle = (id, ok, value) => {
    const p = pending.get(id);
    pending.delete(id);
    if (ok) p.resolve(value); else p.reject(new Error(value));
  };
  let outcome = null;
  globalThis.__start = (fn) => {
    Promise.resolve().then(fn).then(
      (value) => { outcome = { ok: true, value: value === undefined ? null : value }; },
      (error) => { outcome = { ok: false, error: error instanceof Error ? String(error) + (error.stack ? "\n" + error.stack : "") : show(error) }; },
    );
  };
  globalThis.__report = () => JSON.stringify({ done: outcome !== null, outcome, logs, overflow });
})();
"""


class SandboxLimitError(RuntimeError):
    """A limit was reached; the message says which and what to change."""


class SandboxCodeError(RuntimeError):
    """The code itself failed (syntax error, thrown exception, rejected promise)."""

    def __init__(self, message: str, logs: list[str]) -> None:
        super().__init__(message)
        self.logs = logs


@dataclass
class Limits:
    memory_bytes: int = 32 * 1024 * 1024
    cpu_seconds: float = 2.0
    wall_seconds: float = 30.0
    max_output_chars: int = 32_000
    max_calls: int = 200
    stack_bytes: int = 512 * 1024


@dataclass
class SandboxResult:
    result: Any
    logs: list[str] = field(default_factory=list)


class _Engine:
    """One QuickJS context, used only from its own thread (QuickJS checks the native stack)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quickjs")
        self.context: quickjs.Context | None = None
        self.cpu_used = 0.0

    async def call(self, function: Callable[[], Any]) -> Any:
        def timed() -> Any:
            started = time.thread_time()
            try:
                return function()
            finally:
                self.cpu_used += time.thread_time() - started

        return await asyncio.get_running_loop().run_in_executor(self.executor, timed)

    def setup(self) -> None:
        context = quickjs.Context()
        context.set_memory_limit(self.limits.memory_bytes)
        context.set_max_stack_size(self.limits.stack_bytes)
        context.eval(_PRELUDE % {"max_log_chars": self.limits.max_output_chars})
        # After the prelude: QuickJS refuses calls into Python while a time limit is set, and we make none.
        context.set_time_limit(self.limits.cpu_seconds)
        self.context = context

    def eval(self, source: str) -> Any:
        assert self.context is not None
        return self.context.eval(source)

    def drain(self) -> None:
        assert self.context is not None
        while self.context.execute_pending_job():
            pass

    def close(self) -> None:
        self.executor.shutdown(wait=False)


def _limit_error(error: Exception, limits: Limits) -> Exception:
    text = str(error)
    if "interrupted" in text:
        return SandboxLimitError(f"Time limit: the code ran for more than {limits.cpu_seconds:g} s of CPU time (an endless loop?).")
    if "out of memory" in text or text.strip() in ("", "null"):
        return SandboxLimitError(f"Memory limit: the code used more than {limits.memory_bytes // (1024 * 1024)} MiB.")
    if "stack overflow" in text:
        return SandboxLimitError("Stack limit: too deep recursion.")
    return SandboxCodeError(text.strip(), [])


async def run_js(
    code: str,
    namespaces: Mapping[str, Mapping[str, Bridge]],
    limits: Limits | None = None,
    *,
    setup_source: str = "",
) -> SandboxResult:
    """Run `code` as the body of an async function. `namespaces` maps a global name (e.g.
    "tools") to its bridged functions; `setup_source` runs first (e.g. extension modules)."""
    limits = limits or Limits()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.wall_seconds
    engine = _Engine(limits)
    bridges: dict[str, Bridge] = {}
    try:
        await engine.call(engine.setup)
        for global_name, functions in namespaces.items():
            prefix = f"{global_name}."
            bridges.update({prefix + name: fn for name, fn in functions.items()})
            await engine.call(lambda g=global_name, p=prefix, n=list(functions): engine.eval(f"__define({json.dumps(g)}, {json.dumps(p)}, {json.dumps(n)})"))
        try:
            if setup_source:
                await engine.call(lambda: engine.eval(setup_source))
            await engine.call(lambda: engine.eval(f"__start(async () => {{\n{code}\n}})"))
        except quickjs.JSException as error:
            raise _limit_error(error, limits) from None
        calls_made = 0
        while True:
            try:
                await engine.call(engine.drain)
                report = json.loads(await engine.call(lambda: engine.eval("__report()")))
            except quickjs.JSException as error:
                raise _limit_error(error, limits) from None
            if report["overflow"]:
                raise SandboxLimitError(f"Output limit: console output exceeded {limits.max_output_chars} characters.")
            outcome = report["outcome"]
            if outcome is not None and not outcome["ok"]:
                failure = _limit_error(RuntimeError(outcome["error"]), limits)
                if isinstance(failure, SandboxCodeError):
                    failure.logs = report["logs"]
                raise failure
            if engine.cpu_used > limits.cpu_seconds * 2:
                raise SandboxLimitError(f"Time limit: the code ran for more than {limits.cpu_seconds:g} s of CPU time.")
            if report["done"]:
                return _finish(outcome.get("value"), report["logs"], limits)  # functions have no JSON value
            calls = json.loads(await engine.call(lambda: engine.eval("__takeCalls()")))
            if not calls:
                raise SandboxCodeError("The code is waiting for a promise that nothing will settle (no timers or I/O exist here).", report["logs"])
            calls_made += len(calls)
            if calls_made > limits.max_calls:
                raise SandboxLimitError(f"Call limit: more than {limits.max_calls} tool calls in one execution.")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SandboxLimitError(f"Time limit: the execution took longer than {limits.wall_seconds:g} s.")
            try:
                settled = await asyncio.wait_for(asyncio.gather(*(_settle(bridges, c) for c in calls)), remaining)
            except (TimeoutError, asyncio.TimeoutError):
                raise SandboxLimitError(f"Time limit: the execution took longer than {limits.wall_seconds:g} s (waiting for tools).") from None
            source = ";".join(f"__settle({c['id']}, {'true' if ok else 'false'}, {value})" for c, (ok, value) in zip(calls, settled))
            try:
                await engine.call(lambda: engine.eval(source))
            except quickjs.JSException as error:
                raise _limit_error(error, limits) from None
    finally:
        engine.close()


async def _settle(bridges: Mapping[str, Bridge], call: dict[str, Any]) -> tuple[bool, str]:
    """(ok, JS literal of the value or of the error message)."""
    bridge = bridges.get(call["name"])
    if bridge is None:
        return False, json.dumps(f"{call['name']} is not available")
    try:
        value = await bridge(call["args"])
        return True, json.dumps(value, default=str)
    except Exception as error:  # the code may catch it; otherwise it fails the execution
        return False, json.dumps(str(error) or type(error).__name__)


def _finish(value: Any, logs: list[str], limits: Limits) -> SandboxResult:
    size = len(json.dumps(value, default=str)) + sum(len(line) for line in logs)
    if size > limits.max_output_chars:
        raise SandboxLimitError(f"Output limit: the result and logs are {size} characters; the limit is {limits.max_output_chars}. Return less (e.g. a summary or a slice).")
    return SandboxResult(value, logs)
