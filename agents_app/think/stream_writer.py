"""Writing extra chunks into the running turn's stream from tool code: data parts
(`data-<name>`) that clients render live, reconciled by id, optionally transient."""
from __future__ import annotations

import asyncio
import contextvars
from typing import Any

_current: contextvars.ContextVar[asyncio.Queue[dict[str, Any]] | None] = contextvars.ContextVar("agent_stream", default=None)


def bind(queue: asyncio.Queue[dict[str, Any]]) -> contextvars.Token[Any]:
    return _current.set(queue)


def unbind(token: contextvars.Token[Any]) -> None:
    _current.reset(token)


def write_data(name: str, data: Any, *, id: str | None = None, transient: bool = False) -> None:  # noqa: A002
    """Emit a `data-<name>` part. The same `id` again replaces that part's data in place; a
    transient part reaches clients but is never persisted."""
    queue = _current.get()
    if queue is None:
        raise RuntimeError("write_data() is only available while a turn is running")
    chunk: dict[str, Any] = {"type": f"data-{name}", "data": data}
    if id is not None:
        chunk["id"] = id
    if transient:
        chunk["transient"] = True
    queue.put_nowait(chunk)


def write_file(url: str, media_type: str) -> None:
    """Emit a `file` part (e.g. a screenshot as a data: URL) into the running turn's message."""
    queue = _current.get()
    if queue is None:
        raise RuntimeError("write_file() is only available while a turn is running")
    queue.put_nowait({"type": "file", "url": url, "mediaType": media_type})
