"""Live MCP connections of this process, kept on one background event loop.

Agents are short-lived objects (one per request or turn) and turns run on different event
loops (daphne's, a Celery task's, a test's), while an MCP client session must stay inside the
task that opened its transport. So every connection lives in a task on a dedicated loop in a
daemon thread, and callers on any loop reach it through `asyncio.wrap_future`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

# The SDK is imported where a connection is made: it takes seconds to import, and agents
# without MCP servers (and processes that never connect one) should not pay for it.

logger = logging.getLogger(__name__)
T = TypeVar("T")


# The deadline (an asyncio.Timeout) of the connection attempt running in this context; the
# OAuth redirect handler extends it while a person authorizes (oauth.py).
connect_deadline: contextvars.ContextVar[Any] = contextvars.ContextVar("mcp_connect_deadline", default=None)


class McpConnectionError(RuntimeError):
    """The server could not be reached, refused the session, or the connection broke."""


class McpAuthorizationRequired(McpConnectionError):
    """The server answered 401: an OAuth authorization is needed (see oauth.py)."""


@dataclass(frozen=True)
class Endpoint:
    """How to reach one server. `auth` is an httpx2.Auth (the SDK's OAuth client) or None."""

    transport: str
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    auth: Any = field(default=None, compare=False)


@dataclass
class Catalogue:
    """What a server offers, in the MCP wire shape (camelCase keys)."""

    instructions: str | None
    capabilities: dict[str, Any] | None
    tools: list[dict[str, Any]]
    prompts: list[dict[str, Any]]
    resources: list[dict[str, Any]]


def wire(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def describe_error(error: BaseException) -> str:
    """The innermost meaningful message of an error (anyio wraps failures in groups)."""
    import httpx2

    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, httpx2.HTTPStatusError):
        return f"HTTP {error.response.status_code} from {error.request.url}"
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _is_unauthorized(error: BaseException) -> bool:
    import httpx2

    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return isinstance(error, httpx2.HTTPStatusError) and error.response.status_code == 401


async def _open_transport(stack: contextlib.AsyncExitStack, endpoint: Endpoint, transport: str) -> tuple[Any, Any]:
    from mcp.client.sse import sse_client
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = dict(endpoint.headers)
    if transport == "streamable-http":
        client = await stack.enter_async_context(create_mcp_http_client(headers=headers, auth=endpoint.auth))
        return await stack.enter_async_context(streamable_http_client(endpoint.url, http_client=client))
    if transport == "sse":
        return await stack.enter_async_context(sse_client(endpoint.url, headers=headers, auth=endpoint.auth))
    if transport == "stdio":
        params = StdioServerParameters(command=endpoint.command, args=list(endpoint.args), env=dict(endpoint.env) or None)
        return await stack.enter_async_context(stdio_client(params, errlog=sys.__stderr__ or open(os.devnull, "w")))
    raise McpConnectionError(f"Unknown MCP transport {transport!r}")


async def _discover(session: Any) -> Catalogue:
    initialized = await session.initialize()
    capabilities = initialized.capabilities
    tools = [wire(t) for t in (await session.list_tools()).tools] if capabilities.tools is not None else []
    prompts = [wire(p) for p in (await session.list_prompts()).prompts] if capabilities.prompts is not None else []
    resources = [wire(r) for r in (await session.list_resources()).resources] if capabilities.resources is not None else []
    return Catalogue(initialized.instructions, wire(capabilities), tools, prompts, resources)


class Link:
    """One connection, owned by a task on the pool loop from opening to closing."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.session: Any = None  # mcp.client.session.ClientSession once connected
        self.catalogue: Catalogue | None = None
        self.ready: asyncio.Future[Catalogue] = asyncio.get_running_loop().create_future()
        self._close = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    @property
    def alive(self) -> bool:
        return self.session is not None and not self._close.is_set() and not self.task.done()

    async def _run(self) -> None:
        transports = ["streamable-http", "sse"] if self.endpoint.transport == "auto" else [self.endpoint.transport]
        failure: BaseException | None = None
        for transport in transports:
            try:
                await self._serve(transport)
                return
            except McpAuthorizationRequired as error:
                failure = error
                break
            except (Exception, BaseExceptionGroup) as error:  # noqa: BLE001 - any failure is a state
                failure = error
                if self.ready.done():
                    break  # it was connected: a broken connection, not a wrong transport
        if not self.ready.done():
            exception = failure if isinstance(failure, McpConnectionError) else McpConnectionError(describe_error(failure or RuntimeError("closed")))
            self.ready.set_exception(exception)
        elif failure is not None:
            logger.warning("MCP connection to %s broke: %s", self.endpoint.url or self.endpoint.command, describe_error(failure))

    async def _serve(self, transport: str) -> None:
        from mcp.client.session import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                # asyncio.timeout, not wait_for: the transport must be entered and left by this task.
                async with asyncio.timeout(self.timeout) as deadline:
                    connect_deadline.set(deadline)
                    read, write = await _open_transport(stack, self.endpoint, transport)
                    session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=self.timeout))
                    self.catalogue = await _discover(session)
                self.session = session
                self.ready.set_result(self.catalogue)
                await self._close.wait()
        except (Exception, BaseExceptionGroup) as error:
            if _is_unauthorized(error):
                raise McpAuthorizationRequired(describe_error(error)) from error
            if isinstance(error, (TimeoutError, asyncio.TimeoutError)) and not self.ready.done():
                raise McpConnectionError(f"No answer within {self.timeout:g} s") from error
            raise
        finally:
            self.session = None

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout: float) -> dict[str, Any]:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        session = self.session
        if session is None:
            raise McpConnectionError("The server is not connected")
        try:
            async with asyncio.timeout(timeout):
                result = await session.call_tool(name, arguments, read_timeout_seconds=timeout)
        except MCPError as error:
            if error.error.code != CONNECTION_CLOSED:
                raise  # the server answered with an error: it is alive
            self.close()
            raise McpConnectionError("The connection was closed") from error
        except (TimeoutError, asyncio.TimeoutError):
            raise McpConnectionError(f"The server did not answer within {timeout:g} s") from None
        except (Exception, BaseExceptionGroup) as error:
            self.close()
            raise McpConnectionError(describe_error(error)) from error
        return wire(result)

    def close(self) -> None:
        self._close.set()


class Pool:
    """Connections by MCP server id, for the whole process."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._links: dict[str, Link] = {}

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="mcp-pool", daemon=True).start()
                self._loop = loop
            return self._loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._ensure_loop()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._ensure_loop())

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the pool loop and await the result from the caller's loop."""
        return await asyncio.wrap_future(self.submit(coroutine))

    def is_ready(self, server_id: str) -> bool:
        link = self._links.get(server_id)
        return link is not None and link.alive

    def catalogue(self, server_id: str) -> Catalogue | None:
        link = self._links.get(server_id)
        return link.catalogue if link is not None and link.alive else None

    async def connect(self, server_id: str, endpoint: Endpoint, timeout: float) -> Catalogue:
        """Connect (or reuse the live connection to the same endpoint) and return the catalogue."""

        async def on_loop() -> Catalogue:
            link = self._links.get(server_id)
            if link is not None and link.endpoint == endpoint and (link.alive or not link.ready.done()):
                return await asyncio.shield(link.ready)
            if link is not None:
                link.close()
            link = self._links[server_id] = Link(endpoint, timeout)
            return await asyncio.shield(link.ready)

        return await self.run(on_loop())

    async def call_tool(self, server_id: str, name: str, arguments: dict[str, Any], timeout: float) -> dict[str, Any]:
        async def on_loop() -> dict[str, Any]:
            link = self._links.get(server_id)
            if link is None:
                raise McpConnectionError("The server is not connected")
            return await link.call_tool(name, arguments, timeout)

        return await self.run(on_loop())

    async def disconnect(self, server_id: str) -> None:
        async def on_loop() -> None:
            link = self._links.pop(server_id, None)
            if link is not None:
                link.close()
                with contextlib.suppress(Exception, BaseExceptionGroup, asyncio.CancelledError):
                    await asyncio.wait_for(link.task, 5)

        await self.run(on_loop())


pool = Pool()
