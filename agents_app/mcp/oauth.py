"""OAuth for MCP servers an instance adds (authorization-code flow with PKCE, by the SDK's
`OAuthClientProvider`).

When a server answers 401, the SDK discovers its authorization server, registers this app as
a client and hands us the authorization URL: the server's state becomes `authenticating` with
that `auth_url`, which the UI offers as a link. The user authorizes in their browser and is
sent back to `/agents/<agent>/<name>/callback?code=…&state=…`; that request stores the code
on the server's row, where the waiting connection attempt (in whichever process) picks it up,
exchanges it for tokens and connects. Client registration and tokens are kept in the row's
`oauth` field and never leave the server side.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from agents_app.mcp.models import McpServer
from agents_app.mcp.pool import connect_deadline
from agents_app.storage.db_threads import db_async

# How long a connection attempt waits for the user to authorize.
AUTHORIZATION_WAIT_SECONDS = 600


def _merge_oauth(server_id: str, **fields: Any) -> None:
    with transaction.atomic():
        row = McpServer.objects.select_for_update().filter(pk=server_id).first()
        if row is not None:
            row.oauth = {**(row.oauth or {}), **fields}
            row.save(update_fields=["oauth", "updated_at"])


def _oauth_of(server_id: str) -> dict[str, Any]:
    return McpServer.objects.filter(pk=server_id).values_list("oauth", flat=True).first() or {}


class RowTokenStorage:
    """The SDK's TokenStorage on the server row."""

    def __init__(self, server_id: str) -> None:
        self.server_id = server_id

    async def get_tokens(self) -> OAuthToken | None:
        tokens = (await db_async(_oauth_of)(self.server_id)).get("tokens")
        return OAuthToken.model_validate(tokens) if tokens else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await db_async(_merge_oauth)(self.server_id, tokens=tokens.model_dump(mode="json", exclude_none=True))

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        client = (await db_async(_oauth_of)(self.server_id)).get("client")
        return OAuthClientInformationFull.model_validate(client) if client else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await db_async(_merge_oauth)(self.server_id, client=client_info.model_dump(mode="json", exclude_none=True))


def callback_url(row: McpServer) -> str:
    session = row.session
    base = settings.AGENTS_PUBLIC_URL.rstrip("/")
    return f"{base}/agents/{session.agent.slug}/{quote(session.name, safe='')}/callback"


def provider_for(row: McpServer, publish: Callable[[int], Awaitable[None]]) -> OAuthClientProvider:
    """Called where secrets may be read (manager.endpoint_for), for servers an instance added;
    `publish(session_id)` tells the session's clients the server now waits for authorization."""
    server_id, session_id = row.pk, row.session_id

    async def redirect(authorization_url: str) -> None:
        deadline = connect_deadline.get()
        if deadline is not None:  # a person is authorizing now: give them time
            deadline.reschedule(asyncio.get_running_loop().time() + AUTHORIZATION_WAIT_SECONDS)
        state = (parse_qs(urlsplit(authorization_url).query).get("state") or [""])[0]
        await db_async(_merge_oauth)(server_id, state=state, callback=None)
        await db_async(McpServer.objects.filter(pk=server_id).update)(
            state=McpServer.State.AUTHENTICATING, auth_url=authorization_url, error=None
        )
        await publish(session_id)

    async def wait_for_callback() -> AuthorizationCodeResult:
        deadline = time.monotonic() + AUTHORIZATION_WAIT_SECONDS
        while time.monotonic() < deadline:
            callback = (await db_async(_oauth_of)(server_id)).get("callback")
            if callback:
                await db_async(_merge_oauth)(server_id, callback=None, state=None)
                if callback.get("error"):
                    raise PermissionError(f"Authorization refused: {callback['error']}")
                return AuthorizationCodeResult(code=callback["code"], state=callback.get("state"), iss=callback.get("iss"))
            await asyncio.sleep(0.25)
        raise TimeoutError("Nobody authorized the server in time")

    metadata = OAuthClientMetadata(
        redirect_uris=[callback_url(row)],
        client_name=settings.AGENTS_MCP_CLIENT_NAME,
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )
    return OAuthClientProvider(row.server_url, metadata, RowTokenStorage(server_id), redirect, wait_for_callback)


def _find_pending(session_id: int, state: str) -> McpServer | None:
    for row in McpServer.objects.filter(session_id=session_id, state=McpServer.State.AUTHENTICATING):
        if state and (row.oauth or {}).get("state") == state:
            return row
    return None


async def handle_callback(session_id: int, request: HttpRequest) -> HttpResponse:
    """`GET /agents/<agent>/<name>/callback`: the authorization server sends the user here."""
    state = request.GET.get("state", "")
    row = await db_async(_find_pending)(session_id, state)
    if row is None:
        return HttpResponse("Unknown or expired authorization.", status=400, content_type="text/plain")
    callback = {"code": request.GET.get("code", ""), "state": state, "iss": request.GET.get("iss")}
    if request.GET.get("error") or not callback["code"]:
        callback = {"error": request.GET.get("error_description") or request.GET.get("error") or "no code"}
    await db_async(_merge_oauth)(row.pk, callback=callback)
    message = "Authorization refused." if "error" in callback else f"{row.name} is authorized. You can close this window."
    return HttpResponse(format_html("<!doctype html><title>MCP authorization</title><p>{}</p>", message))
