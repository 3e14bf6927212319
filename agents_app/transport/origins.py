"""Which browsers may open a WebSocket, and with which credentials.

HTTP gets the same answers from Django (`ALLOWED_HOSTS`, CSRF) and django-cors-headers
(`AGENTS_CORS_ALLOWED_ORIGINS`); sockets get them here, from the same settings, so one
setting admits a frontend on both transports:

* the Host header must be one of `ALLOWED_HOSTS` (as Django checks for HTTP), so a DNS
  rebinding page cannot reach the server under a name of its own;
* a browser's Origin must be the server's own origin, a listed frontend
  (`AGENTS_CORS_ALLOWED_ORIGINS`) or a trusted origin (`CSRF_TRUSTED_ORIGINS`), compared as
  full origins: scheme, host and port;
* with `*` in the list any other origin may connect too, but only with an API token: its
  cookies are dropped before the session middleware sees them, so a page on a foreign site
  can never ride a signed-in user's session.

Clients that send no Origin (SDKs, curl, Node) are not browsers: they carry no ambient
credentials a page could abuse, and still have to authenticate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, value: str) -> Origin | None:
        try:
            parsed = urlsplit(value.strip())
            port = parsed.port
        except ValueError:
            return None
        scheme = parsed.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parsed.hostname:
            return None
        return cls(scheme, parsed.hostname.lower(), port or _DEFAULT_PORTS[scheme])

    def matches(self, pattern: str) -> bool:
        """`pattern` is a full origin; `scheme://*.example.com` also admits subdomains (the
        form CSRF_TRUSTED_ORIGINS accepts)."""
        wildcard = "://*." in pattern
        allowed = Origin.parse(pattern.replace("://*.", "://", 1) if wildcard else pattern)
        if allowed is None or (allowed.scheme, allowed.port) != (self.scheme, self.port):
            return False
        return self.host == allowed.host or (wildcard and self.host.endswith("." + allowed.host))


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def host_allowed(scope: dict[str, Any]) -> bool:
    """Django's Host check for HTTP, applied to the handshake (with its DEBUG defaults)."""
    host = header(scope, b"host")
    if host is None:
        return True  # HTTP/1.1 clients always send Host; a test client or raw ASGI caller may not
    domain, _port = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return bool(domain) and validate_host(domain, allowed_hosts)


def own_origin(scope: dict[str, Any]) -> Origin | None:
    host = header(scope, b"host")
    if host is None:
        return None
    scheme = "https" if scope.get("scheme") in {"wss", "https"} else "http"
    return Origin.parse(f"{scheme}://{host}")


def credentialed_origin(scope: dict[str, Any], origin: Origin) -> bool:
    """The server itself, a listed frontend or a trusted origin: cookies may authenticate."""
    if origin == own_origin(scope):
        return True
    listed = [o for o in settings.AGENTS_CORS_ALLOWED_ORIGINS if o != "*"]
    return any(origin.matches(pattern) for pattern in [*listed, *settings.CSRF_TRUSTED_ORIGINS])


def _without_cookies(scope: dict[str, Any]) -> dict[str, Any]:
    return {**scope, "headers": [(key, value) for key, value in scope.get("headers", []) if key != b"cookie"]}


class WebSocketOriginGuard:
    """Outermost WebSocket middleware: refuses the handshake (HTTP 403) for a Host outside
    `ALLOWED_HOSTS` or an Origin that is not admitted; strips cookies from origins admitted
    only by `*`."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            admitted = self.admit(scope)
            if admitted is None:
                return await WebsocketDenier()(scope, receive, send)
            scope = admitted
        return await self.application(scope, receive, send)

    @staticmethod
    def admit(scope: dict[str, Any]) -> dict[str, Any] | None:
        """The scope to run the socket with, or None to refuse it."""
        if not host_allowed(scope):
            return None
        raw_origin = header(scope, b"origin")
        if raw_origin is None:
            return scope
        origin = Origin.parse(raw_origin)
        if origin is not None and credentialed_origin(scope, origin):
            return scope
        if "*" in settings.AGENTS_CORS_ALLOWED_ORIGINS:
            return _without_cookies(scope)
        return None
