"""Who is connecting: Django session cookie or a per-user API token, and whether the
browser origin may open a socket at all."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host
from django.utils import timezone

from agents_app.storage.models import ApiToken


def user_for_token(raw_key: str) -> Any | None:
    token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(raw_key)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def query_params(scope: dict[str, Any]) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[0] for key, values in parsed.items() if values}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Browsers always send Origin: it must be this host, an allowed host or a trusted origin.
    Non-browser clients send none; they cannot ride a victim's cookies, and must still
    authenticate."""
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parsed = urlsplit(origin)
    if not parsed.hostname:
        return False
    if parsed.netloc == _header(scope, b"host"):
        return True
    return validate_host(parsed.hostname, settings.ALLOWED_HOSTS)


class AgentAuthMiddleware(AuthMiddleware):
    """Session-cookie auth, overridden by `?token=` (which the official client's `query`
    option sends) or an `Authorization: Bearer` header (server-side clients)."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        token = query_params(scope).get("token")
        authorization = _header(scope, b"authorization") or ""
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
