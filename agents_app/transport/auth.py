"""Who is connecting: Django session cookie or a per-user API token. (Whether a browser
origin may open a socket at all is decided before this, in `origins`.)"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from agents_app.storage.models import ApiToken
from agents_app.transport.origins import header


class SocketSessionMiddleware(SessionMiddleware):
    """Channels' session middleware for WebSockets, minus its check on every message sent.
    That check saves a modified session only before `http.response.start`, which a socket
    never sends, yet reads the session's state for each frame (a stream sends dozens a
    second per socket). The session is resolved from the cookie as before."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


def socket_session_stack(inner: Any) -> CookieMiddleware:
    """`channels.sessions.SessionMiddlewareStack` for WebSocket routes."""
    return CookieMiddleware(SocketSessionMiddleware(inner))


def user_for_token(raw_key: str) -> Any | None:
    token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(raw_key)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def query_params(scope: dict[str, Any]) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[0] for key, values in parsed.items() if values}


class AgentAuthMiddleware(AuthMiddleware):
    """Session-cookie auth, overridden by `?token=` (which the official client's `query`
    option sends) or an `Authorization: Bearer` header (server-side clients)."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        token = query_params(scope).get("token")
        authorization = header(scope, b"authorization") or ""
        if not token and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        if token:
            user = await database_sync_to_async(user_for_token)(token)
            if user is not None:
                scope["user"]._wrapped = user
                return
            scope["user"]._wrapped = AnonymousUser()
            return
        await super().resolve_scope(scope)
