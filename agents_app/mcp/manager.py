"""The MCP servers of one agent instance: adding, removing, connecting, and the state every
client sees as `cf_agent_mcp_servers` (protocol §2).

The stored row is the state shared by all processes (what a connecting client is shown); the
live connection belongs to the process that opened it (pool.py). A server that cannot be
reached is a state (`failed` with its error), never an exception in a turn.
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Q

from agents_app.mcp import oauth
from agents_app.mcp.models import AgentMcpServer, McpServer, Transport
from agents_app.mcp.pool import Catalogue, Endpoint, McpAuthorizationRequired, McpConnectionError, pool
from agents_app.protocol import frames
from agents_app.storage.compiled_query import CompiledQuery
from agents_app.storage.db_threads import db_async
from agents_app.turns import broadcast

logger = logging.getLogger(__name__)
# Errors can carry text from a remote server: shown to clients only trimmed and without control characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_ERROR_CHARS = 500
# The loop each session's clients are served from: state changes found on the pool loop are
# broadcast from there (the in-memory channel layer belongs to one loop).
_home_loops: dict[int, asyncio.AbstractEventLoop] = {}
# Connection attempts running in this process, by server id.
_attempts: dict[str, asyncio.Future[Any]] = {}


def connect_timeout() -> float:
    return float(getattr(settings, "AGENTS_MCP_CONNECT_TIMEOUT", 15))


def tool_timeout() -> float:
    return float(getattr(settings, "AGENTS_MCP_TOOL_TIMEOUT", 60))


def clean_error(text: str | None) -> str | None:
    if text is None:
        return None
    text = _CONTROL.sub("", text)
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."


# -- state ------------------------------------------------------------------------------------
# Read as every connection opens (its state frame, then the operator's servers to connect):
# compiled once, a session without servers costs two cheap reads.
_SESSION_SERVERS = CompiledQuery(lambda pk: McpServer.objects.filter(session_id=pk).select_related("attached"))
_OPERATOR_SERVERS = CompiledQuery(lambda pk: AgentMcpServer.objects.filter(agent__sessions=pk, enabled=True))


def servers_state(session_id: int) -> dict[str, Any]:
    """`{servers, tools, prompts, resources}` as the official client's useAgent reads it; the
    catalogue lists only servers that are ready."""
    state: dict[str, Any] = {"prompts": [], "resources": [], "servers": {}, "tools": []}
    for row in _SESSION_SERVERS.instances(session_id):
        state["servers"][row.id] = row.describe()
        if row.state == McpServer.State.READY:
            for key in ("tools", "prompts", "resources"):
                state[key].extend({**item, "serverId": row.id} for item in getattr(row, key))
    return state


async def state_frame(session_id: int) -> frames.Frame:
    return frames.mcp_servers(await db_async(servers_state)(session_id))


async def _broadcast_state(session_id: int) -> None:
    await broadcast.broadcast(session_id, [await state_frame(session_id)], skip_pending_resume=False)


async def publish(session_id: int) -> None:
    """Broadcast the current state from the session's home loop when it is another live loop."""
    home = _home_loops.get(session_id)
    running = asyncio.get_running_loop()
    if home is not None and home is not running and home.is_running() and not home.is_closed():
        delivered = asyncio.run_coroutine_threadsafe(_broadcast_state(session_id), home)
        try:
            await asyncio.wait_for(asyncio.wrap_future(delivered), 5)
            return
        except (TimeoutError, asyncio.TimeoutError, RuntimeError):
            delivered.cancel()  # that loop stopped meanwhile: send from here
    await _broadcast_state(session_id)


async def _update(row: McpServer, **fields: Any) -> None:
    for key, value in fields.items():
        setattr(row, key, value)
    await db_async(McpServer.objects.filter(pk=row.pk).update)(**fields)
    await publish(row.session_id)


# -- endpoints -------------------------------------------------------------------------------
def endpoint_for(row: McpServer) -> Endpoint:
    """Secrets (headers, env, tokens) are read here, at connect time, from the server side."""
    attached = row.attached
    if attached is not None:
        return Endpoint(
            transport=attached.transport,
            url=attached.url,
            headers=tuple(sorted((attached.headers or {}).items())),
            command=attached.command,
            args=tuple(attached.args or ()),
            env=tuple(sorted((attached.env or {}).items())),
        )
    return Endpoint(
        transport=row.transport,
        url=row.server_url,
        headers=tuple(sorted((row.headers or {}).items())),
        auth=oauth.provider_for(row, publish),
    )


def servers_stored() -> Q:
    """Whether a session (the outer query's row) has MCP servers, its own or attached by the
    operator to its agent class: when it has none, a turn has nothing to connect or offer."""
    return Exists(McpServer.objects.filter(session=OuterRef("pk"))) | Exists(
        AgentMcpServer.objects.filter(agent=OuterRef("agent_id"), enabled=True)
    )


def _sync_attached(session_id: int) -> list[McpServer]:
    """Rows for the operator's servers of this agent class (created on first use, dropped when
    the operator disables or deletes them), then all rows of the session."""
    attached = {a.pk: a for a in _OPERATOR_SERVERS.instances(session_id)}
    rows = _SESSION_SERVERS.instances(session_id)
    stale = [row.pk for row in rows if row.attached_id is not None and row.attached_id not in attached]
    if stale:
        McpServer.objects.filter(pk__in=stale).delete()
        rows = [row for row in rows if row.pk not in stale]
    have = {row.attached_id for row in rows}
    for pk, server in attached.items():
        if pk not in have:
            rows.append(McpServer.objects.create(
                session_id=session_id, attached=server, name=server.name,
                server_url=server.url or server.command, transport=server.transport,
            ))
    return rows


# -- connecting -------------------------------------------------------------------------------
async def _connect(row: McpServer) -> None:
    """One attempt, run on the pool loop; every outcome ends in a stored, broadcast state."""
    if row.state != McpServer.State.CONNECTING:
        await _update(row, state=McpServer.State.CONNECTING, error=None)
    try:
        endpoint = await db_async(endpoint_for)(row)
        catalogue = await pool.connect(row.pk, endpoint, connect_timeout())
    except McpAuthorizationRequired:
        auth_url = await oauth.pending_auth_url(row)
        await _update(row, state=McpServer.State.AUTHENTICATING, auth_url=auth_url, error=None if auth_url else "Authorization required")
        return
    except McpConnectionError as error:
        logger.warning("MCP server %s (%s) failed: %s", row.name, row.pk, error)
        await _update(row, state=McpServer.State.FAILED, error=clean_error(str(error)))
        return
    await _store_catalogue(row, catalogue)


async def _store_catalogue(row: McpServer, catalogue: Catalogue) -> None:
    await _update(
        row,
        state=McpServer.State.READY, error=None, auth_url=None,
        instructions=catalogue.instructions, capabilities=catalogue.capabilities,
        tools=catalogue.tools, prompts=catalogue.prompts, resources=catalogue.resources,
    )


def start_connecting(row: McpServer) -> asyncio.Future[Any]:
    """The running attempt for this server in this process, or a new one."""
    attempt = _attempts.get(row.pk)
    if attempt is None or attempt.done():
        attempt = _attempts[row.pk] = asyncio.wrap_future(pool.submit(_connect(row)))
    return attempt


async def _connect_all(session_id: int) -> tuple[list[McpServer], list[asyncio.Future[Any]]]:
    """The session's servers, and the attempts started for those without a live connection
    here. Also makes the caller's loop the home loop."""
    _home_loops[session_id] = asyncio.get_running_loop()
    rows = await db_async(_sync_attached)(session_id)
    return rows, [start_connecting(row) for row in rows if not pool.is_ready(row.pk)]


async def ensure_connected(session_id: int) -> list[asyncio.Future[Any]]:
    """Start connecting every server of the session that has no live connection here; returns
    the attempts (the caller decides whether to wait). Also makes the caller's loop the home loop."""
    _, attempts = await _connect_all(session_id)
    return attempts


def wait_seconds(option: bool | dict[str, Any] | None) -> float:
    """`wait_for_mcp_connections`: False → 0, True → 10 s, {"timeout": ms}."""
    if option is True:
        return 10.0
    if isinstance(option, dict):
        return max(0.0, float(option.get("timeout", 10_000)) / 1000)
    return 0.0


async def wait_for_connections(session_id: int, option: bool | dict[str, Any] | None) -> list[McpServer]:
    """`ensure_connected`, then wait for the attempts as `option` says; returns the session's servers."""
    rows, attempts = await _connect_all(session_id)
    seconds = wait_seconds(option)
    if attempts and seconds > 0:
        await asyncio.wait(attempts, timeout=seconds)
    return rows


# -- adding and removing ------------------------------------------------------------------------
def _validate_url(url: str) -> str:
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
        raise ValueError("An MCP server URL must be an http:// or https:// URL")
    return url


async def add_server(session_id: int, name: str, url: str, *, headers: dict[str, str] | None = None, transport: str = "auto") -> McpServer:
    """Store a remote server for this instance; connecting starts at once. Local commands
    (stdio) are not accepted here: operators attach those in the admin."""
    if transport not in (Transport.AUTO, Transport.STREAMABLE_HTTP, Transport.SSE):
        raise ValueError("transport must be 'auto', 'streamable-http' or 'sse'")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("An MCP server needs a name")
    if headers is not None and not (isinstance(headers, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
        raise ValueError("headers must be an object of strings")
    row = await db_async(McpServer.objects.create)(
        session_id=session_id, name=name.strip(), server_url=_validate_url(url), transport=transport, headers=headers or {}
    )
    _home_loops[session_id] = asyncio.get_running_loop()
    await publish(session_id)
    start_connecting(row)
    return row


async def remove_server(session_id: int, server_id: str) -> None:
    row = await db_async(McpServer.objects.filter(session_id=session_id, pk=server_id).first)()
    if row is None:
        raise ValueError(f"Unknown MCP server {server_id!r}")
    if row.attached_id is not None:
        raise ValueError("This server is attached by the operator to every instance; it cannot be removed here")
    await db_async(row.delete)()
    await pool.disconnect(server_id)
    await publish(session_id)


async def connection_lost(row: McpServer, error: str) -> None:
    """A call found the connection broken: the state says so; the next turn reconnects."""
    logger.warning("MCP server %s (%s) lost: %s", row.name, row.pk, error)
    await _update(row, state=McpServer.State.FAILED, error=clean_error(error))
