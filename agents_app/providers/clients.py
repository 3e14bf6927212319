"""One `AsyncOpenAI` client per event loop and upstream, reused by every model call.

Building a client is not free: each one makes an httpx client with its own connection pool
and SSL context (`ssl.create_default_context()` loads the CA bundle), which under a few
hundred concurrent chats was a quarter of the server's CPU. A client's pool belongs to the
event loop that first uses it, so clients are kept per loop (a Celery task's `asyncio.run`
gets its own, dropped with its loop) and per upstream (base URL, key, timeout): the local
model, the OPENAI_* settings and every gateway route each get theirs.

Their HTTP goes through `upstream_transport.StreamingTransport` (a lean HTTP/1.1 transport
for many long event streams) unless AGENTS_UPSTREAM_TRANSPORT=httpx, or the upstream is
reached through a proxy from the environment (HTTP(S)_PROXY), which httpx's own transport
handles.
"""
from __future__ import annotations

import asyncio
import urllib.request
import weakref
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import openai
from django.conf import settings
from openai._models import FinalRequestOptions

from agents_app.providers.event_stream import EventStreamDecoder
from agents_app.providers.request_template import RequestTemplates
from agents_app.providers.upstream_transport import StreamingTransport, http

_Key = tuple[str | None, str, float | None]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, SharedAsyncOpenAI]] = weakref.WeakKeyDictionary()


class SharedAsyncOpenAI(openai.AsyncOpenAI):
    """A client that outlives the `async with` of any one caller: callers written for a
    client of their own (`async with make_client() as client`) share it unchanged. Its
    streams are read by the leaner event-stream decoder (see providers/event_stream.py),
    and its requests are built from templates of the SDK's own (providers/request_template.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_templates = RequestTemplates()

    def _make_sse_decoder(self) -> EventStreamDecoder:
        return EventStreamDecoder()

    def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> Any:
        return self._request_templates.build(
            options,
            retries_taken,
            self,
            sdk_build=lambda: super(SharedAsyncOpenAI, self)._build_request(options, retries_taken=retries_taken),
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        return None


def shared(base_url: str | None, api_key: str, timeout: float | None) -> SharedAsyncOpenAI:
    """This event loop's client for one upstream (no retries: the gateway decides those)."""
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (base_url, api_key, timeout)
    client = per_loop.get(key)
    if client is None or client.is_closed():
        client = per_loop[key] = SharedAsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0, http_client=_http_client(base_url)
        )
    return client


def _http_client(base_url: str | None) -> openai.DefaultAsyncHttpxClient:
    """The streaming transport, unless it is turned off or a proxy carries this upstream
    (then httpx's own, with the SDK's connection limits). Either keeps idle connections for
    AGENTS_UPSTREAM_KEEPALIVE seconds."""
    keepalive = settings.AGENTS_UPSTREAM_KEEPALIVE
    if settings.AGENTS_UPSTREAM_TRANSPORT == "httpx" or _proxied(base_url or "https://api.openai.com/v1"):
        limits = http.Limits(
            max_connections=openai.DEFAULT_CONNECTION_LIMITS.max_connections,
            max_keepalive_connections=openai.DEFAULT_CONNECTION_LIMITS.max_keepalive_connections,
            keepalive_expiry=keepalive,
        )
        return openai.DefaultAsyncHttpxClient(limits=limits)
    return openai.DefaultAsyncHttpxClient(transport=StreamingTransport(keepalive_expiry=keepalive))


def _proxied(url: str) -> bool:
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")
