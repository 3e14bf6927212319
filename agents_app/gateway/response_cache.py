"""The response cache: identical requests (model, messages, tools, parameters) are answered
from the Django cache (Redis in production, local memory by default) and replayed as the
same stream of chunks the upstream sent."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from django.core.cache import cache

# Transport options that do not change the answer.
_NOT_IN_KEY = frozenset({"stream", "stream_options"})


def key_for(request: dict[str, Any]) -> str:
    relevant = {name: value for name, value in request.items() if name not in _NOT_IN_KEY}
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
    return f"gateway:response:{digest}"


async def load(key: str) -> dict[str, Any] | None:
    return await cache.aget(key)


async def store(key: str, entry: dict[str, Any], ttl: int) -> None:
    await cache.aset(key, entry, timeout=ttl)
