"""Work that must outlive whatever started it (a socket's `ctx.wait_until`, a handler's
streaming `on_message`): the event loop keeps only weak references to tasks, so a task
nobody holds can vanish mid-way. Failures are logged; nothing else depends on them."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

logger = logging.getLogger(__name__)
_running: set[asyncio.Task[Any]] = set()


async def _logged(work: Awaitable[Any], label: str) -> Any:
    try:
        return await work
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("background work %s failed", label)
        return None


def keep_running(work: Awaitable[Any], label: str = "") -> asyncio.Task[Any]:
    task = asyncio.ensure_future(_logged(work, label or repr(work)))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task
