"""One `AsyncOpenAI` client per event loop and upstream, reused by every model call.

Building a client is not free: each one makes an httpx client with its own connection pool
and SSL context (`ssl.create_default_context()` loads the CA bundle), which under a few
hundred concurrent chats was a quarter of the server's CPU. A client's pool belongs to the
event loop that first uses it, so clients are kept per loop (a Celery task's `asyncio.run`
gets its own, dropped with its loop) and per upstream (base URL, key, timeout): the local
model, the OPENAI_* settings and every gateway route each get theirs.
"""
from __future__ import annotations

import asyncio
import weakref
from types import TracebackType

import openai

_Key = tuple[str | None, str, float | None]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, SharedAsyncOpenAI]] = weakref.WeakKeyDictionary()


class SharedAsyncOpenAI(openai.AsyncOpenAI):
    """A client that outlives the `async with` of any one caller: callers written for a
    client of their own (`async with make_client() as client`) share it unchanged."""

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
        client = per_loop[key] = SharedAsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
    return client
