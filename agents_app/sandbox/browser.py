"""Browser tools over the Chrome DevTools Protocol (CDP).

`create_browser_tools(cdp_url=...)` gives the model two tools:

* `browser_search` looks commands, events and types up in the protocol description the
  browser itself serves (`/json/protocol`), so the model can learn the CDP it needs;
* `browser_execute` runs model-written JavaScript in the QuickJS sandbox with a page to drive:
  `page.goto(url)`, `page.evaluate(expr)`, `page.content()`, `page.title()`,
  `page.screenshot()` (streamed to the chat as an image file part) and raw
  `cdp.send(method, params)`.

Without `cdp_url` a headless Chromium is started on demand (one per process) and kept for
later calls. Each agent instance gets its own tab. The browser may not open local files or
browser-internal pages, and the code may not use the CDP domains that control the browser
itself (closing it, opening targets, downloads).
"""
from __future__ import annotations

import asyncio
import atexit
import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pydantic
import websockets

from agents_app.think import stream_writer
from agents_app.agents.tools import Tool
from agents_app.sandbox.quickjs_runner import Bridge, Limits, SandboxCodeError, SandboxLimitError, run_js

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)
# Domains and methods that act on the browser (not the page): never available to the model.
BLOCKED_DOMAINS = frozenset({"Browser", "Target", "SystemInfo", "Tethering", "Storage", "IO", "Memory", "Tracing"})
BLOCKED_METHODS = frozenset({
    "Page.setDownloadBehavior", "Page.close", "Page.crash", "Runtime.terminateExecution",
    "DOM.setFileInputFiles", "Network.loadNetworkResource",  # would read local files
})
ALLOWED_SCHEMES = ("http:", "https:", "about:blank", "data:")


class BrowserError(RuntimeError):
    """What the model reads when a browser action fails."""


class LocalChromium:
    """A headless Chromium started on first use and stopped when the process exits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._profile: str | None = None
        self.base_url: str | None = None

    def ensure(self) -> str:
        with self._lock:
            if self._process is not None and self._process.poll() is None and self.base_url:
                return self.base_url
            self._profile = tempfile.mkdtemp(prefix="agents-chromium-")
            self._process = subprocess.Popen(
                [CHROMIUM, *CHROMIUM_FLAGS, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                 f"--user-data-dir={self._profile}", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            port_file = Path(self._profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text().strip()):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise BrowserError("Chromium did not start")
                time.sleep(0.05)
            self.base_url = f"http://127.0.0.1:{port_file.read_text().split()[0]}"
            return self.base_url

    def stop(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
            if self._profile:
                shutil.rmtree(self._profile, ignore_errors=True)
            self._process = None


local_chromium = LocalChromium()
atexit.register(local_chromium.stop)
_protocols: dict[str, dict[str, Any]] = {}
_tabs: dict[tuple[str, str], str] = {}  # (browser, page key) → the tab's websocket URL


async def _base_url(cdp_url: str | None) -> str:
    if cdp_url:
        return cdp_url.rstrip("/")
    return await asyncio.to_thread(local_chromium.ensure)


class CdpConnection:
    """One websocket to a tab: commands by id, events ignored."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.socket:
                message = json.loads(raw)
                future = self.pending.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(BrowserError("The browser closed the connection"))

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        message_id = next(self.ids)
        future = self.pending[message_id] = asyncio.get_running_loop().create_future()
        await self.socket.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        try:
            reply = await asyncio.wait_for(future, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise BrowserError(f"{method} got no answer within {timeout:g} s") from None
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    async def close(self) -> None:
        await self.socket.close()
        self.reader.cancel()


async def _open_tab(base: str, page_key: str) -> CdpConnection:
    """Connect to this page key's tab, opening one when it does not exist (any more)."""
    url = _tabs.get((base, page_key))
    if url is not None:
        try:
            return CdpConnection(await websockets.connect(url, max_size=64 * 1024 * 1024))
        except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake):
            _tabs.pop((base, page_key), None)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.put(f"{base}/json/new?about:blank")
        response.raise_for_status()
    url = _tabs[(base, page_key)] = response.json()["webSocketDebuggerUrl"]
    return CdpConnection(await websockets.connect(url, max_size=64 * 1024 * 1024))


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or not url.lower().startswith(ALLOWED_SCHEMES):
        raise BrowserError("Only http(s), data: and about:blank pages can be opened")
    return url


def _check_method(method: Any, params: Any) -> None:
    if not isinstance(method, str) or "." not in method:
        raise BrowserError("cdp.send needs a method like 'Page.navigate'")
    if method.split(".", 1)[0] in BLOCKED_DOMAINS or method in BLOCKED_METHODS:
        raise BrowserError(f"{method} is not available to browser_execute")
    if method == "Page.navigate":
        _check_url((params or {}).get("url"))


# The page helpers, written in JS on top of the bridged calls.
_PAGE_SHIM = """
globalThis.page = Object.freeze({
  goto: (url) => browser.goto(url),
  evaluate: async (expression) => {
    const reply = await cdp.send("Runtime.evaluate", { expression: String(expression), returnByValue: true, awaitPromise: true });
    if (reply.exceptionDetails) throw new Error((reply.exceptionDetails.exception && reply.exceptionDetails.exception.description) || reply.exceptionDetails.text);
    return reply.result.value;
  },
  content: () => page.evaluate("document.documentElement.outerHTML"),
  title: () => page.evaluate("document.title"),
  screenshot: (options) => browser.screenshot(options || {}),
});
"""


def _bridges(connection: CdpConnection) -> dict[str, dict[str, Bridge]]:
    async def send(args: list[Any]) -> Any:
        method, params = (args + [None, None])[:2]
        _check_method(method, params)
        return await connection.send(method, params if isinstance(params, dict) else {})

    async def goto(args: list[Any]) -> dict[str, Any]:
        url = _check_url(args[0] if args else None)
        await connection.send("Page.enable")
        navigated = await connection.send("Page.navigate", {"url": url})
        if navigated.get("errorText"):
            raise BrowserError(f"Could not open {url}: {navigated['errorText']}")
        for _ in range(200):  # until the document has loaded (at most ~20 s)
            state = await connection.send("Runtime.evaluate", {"expression": "document.readyState", "returnByValue": True})
            if state.get("result", {}).get("value") == "complete":
                break
            await asyncio.sleep(0.1)
        location = await connection.send("Runtime.evaluate", {"expression": "location.href", "returnByValue": True})
        return {"url": location.get("result", {}).get("value")}

    async def screenshot(args: list[Any]) -> dict[str, Any]:
        options = args[0] if args and isinstance(args[0], dict) else {}
        image_format = "jpeg" if options.get("format") == "jpeg" else "png"
        shot = await connection.send("Page.captureScreenshot", {"format": image_format, "captureBeyondViewport": bool(options.get("fullPage"))})
        data = shot["data"]
        stream_writer.write_file(f"data:image/{image_format};base64,{data}", f"image/{image_format}")
        return {"mediaType": f"image/{image_format}", "bytes": len(base64.b64decode(data)), "shownToUser": True}

    return {"cdp": {"send": send}, "browser": {"goto": goto, "screenshot": screenshot}}


# -- protocol search ----------------------------------------------------------------------------
async def protocol(base: str) -> dict[str, Any]:
    if base not in _protocols:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{base}/json/protocol")
            response.raise_for_status()
        _protocols[base] = response.json()
    return _protocols[base]


def _summary(item: dict[str, Any], limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", item.get("description", "")).strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _fields(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"name": f["name"], "type": f.get("type") or f.get("$ref"), **({"optional": True} if f.get("optional") else {}), "description": _summary(f, 120)}
        for f in items
    ]


def search_protocol(description: dict[str, Any], query: str, limit: int = 8) -> list[dict[str, Any]]:
    """Commands, events and types whose name or description match the query's words, best first."""
    words = [w for w in re.findall(r"[a-z0-9]+", query.lower()) if len(w) > 1]
    scored: list[tuple[int, dict[str, Any]]] = []
    for domain in description.get("domains", []):
        for kind, key in (("command", "commands"), ("event", "events"), ("type", "types")):
            for item in domain.get(key, []):
                name = f"{domain['domain']}.{item.get('name') or item.get('id')}"
                haystack_name, haystack_text = name.lower(), item.get("description", "").lower()
                score = sum(5 if w in haystack_name else 1 if w in haystack_text else 0 for w in words)
                if score:
                    entry: dict[str, Any] = {"name": name, "kind": kind, "description": _summary(item)}
                    if item.get("parameters"):
                        entry["parameters"] = _fields(item["parameters"])
                    if item.get("returns"):
                        entry["returns"] = _fields(item["returns"])
                    if item.get("properties"):
                        entry["properties"] = _fields(item["properties"])
                    scored.append((score, entry))
    scored.sort(key=lambda pair: (-pair[0], pair[1]["name"]))
    return [entry for _, entry in scored[:limit]]


class SearchInput(pydantic.BaseModel):
    query: str = pydantic.Field(description="Words to look for, e.g. 'navigate', 'screenshot', 'dom query selector'")


class ExecuteInput(pydantic.BaseModel):
    code: str = pydantic.Field(description="Body of an async JavaScript function using page.* and cdp.send; `return` a JSON value.")


def create_browser_tools(cdp_url: str | None = None, *, page_key: str = "default", limits: Limits | None = None) -> dict[str, Tool]:
    """`browser_search` and `browser_execute`. `page_key` picks the tab (use the session's id
    so every conversation has its own); `cdp_url` points at your own browser's HTTP endpoint
    (e.g. http://127.0.0.1:9222), by default a local headless Chromium."""
    limits = limits or Limits(wall_seconds=60)

    async def browser_search(query: str) -> dict[str, Any]:
        matches = search_protocol(await protocol(await _base_url(cdp_url)), query)
        return {"query": query, "matches": matches} if matches else {"query": query, "matches": [], "hint": "Try other words"}

    async def browser_execute(code: str) -> dict[str, Any]:
        connection = await _open_tab(await _base_url(cdp_url), page_key)
        try:
            outcome = await run_js(code, _bridges(connection), limits, setup_source=_PAGE_SHIM)
        except SandboxLimitError as error:
            raise BrowserError(str(error)) from None
        except SandboxCodeError as error:
            logs = "\nConsole output before the error:\n" + "\n".join(error.logs) if error.logs else ""
            raise BrowserError(f"The code failed: {error}{logs}") from None
        finally:
            await connection.close()
        return {"result": outcome.result, "logs": outcome.logs}

    return {
        "browser_search": Tool(
            "browser_search", "Search the Chrome DevTools Protocol (commands, events, types) of the live browser.", SearchInput, browser_search,
        ),
        "browser_execute": Tool(
            "browser_execute",
            "Drive a real browser tab with JavaScript (sandboxed; the tab persists between calls). Available: "
            "await page.goto(url), await page.evaluate(expression) (runs in the page, returns JSON), await page.content(), "
            "await page.title(), await page.screenshot({fullPage?}) (shown to the user), await cdp.send(method, params) "
            "for any page-level CDP command (look them up with browser_search). `return` what you need.",
            ExecuteInput, browser_execute,
        ),
    }
