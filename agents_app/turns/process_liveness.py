"""Which server processes are alive, so a turn whose process died is recognised at once.

Every process that runs turns has a random id and records it as the owner of each turn it
runs. With Redis (production) a process announces itself under a key with a short TTL,
refreshed by a daemon thread: the key vanishes seconds after a kill -9. Without Redis
(embedded: one host) the id carries the OS pid, and a process that no longer exists is dead.
An owner that cannot be judged (none recorded, a Redis error) counts as alive: the turn's
heartbeat going stale stays the fallback (see recovery.py).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

ANNOUNCE_INTERVAL_SECONDS = 2.0
# Several missed beats (a process starved of CPU for a moment is not dead).
ANNOUNCE_TTL_SECONDS = 10
_KEY_PREFIX = "agents:process:"
# When announcements started to be kept: a Redis restarted without its data has lost every
# process's key, and a process counts as gone only once all had a full TTL to announce again.
_SINCE_KEY = "agents:process-announcements-since"

_lock = threading.Lock()
_current: tuple[int, str] | None = None  # (pid, owner id): a forked child gets its own id


def _uses_redis() -> bool:
    return bool(getattr(settings, "REDIS_URL", ""))


def _announce(owner: str) -> None:
    cache.add(_SINCE_KEY, time.time(), timeout=None)
    cache.set(_KEY_PREFIX + owner, 1, timeout=ANNOUNCE_TTL_SECONDS)


def _announce_forever(owner: str) -> None:
    while True:
        try:
            _announce(owner)
        except Exception:  # Redis restarting: the next beat tries again
            logger.warning("process %s: liveness announcement failed", owner, exc_info=True)
        time.sleep(ANNOUNCE_INTERVAL_SECONDS)


def current() -> str:
    """This process's owner id; the first call starts announcing it."""
    global _current
    pid = os.getpid()
    with _lock:
        if _current is None or _current[0] != pid:
            owner = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:12]}"
            if _uses_redis():
                try:
                    _announce(owner)
                except Exception:  # Redis is down: the announcing thread keeps trying
                    logger.warning("process %s: liveness announcement failed", owner, exc_info=True)
                threading.Thread(target=_announce_forever, args=(owner,), name="agents-liveness", daemon=True).start()
            _current = (pid, owner)
        return _current[1]


def is_alive(owner: str) -> bool:
    """False only when the owner is known to be gone (blocking: call it off the event loop)."""
    if not owner or (_current is not None and _current == (os.getpid(), owner)):
        return True
    if _uses_redis():
        try:
            found = cache.get_many([_KEY_PREFIX + owner, _SINCE_KEY])
        except Exception:
            return True
        since = found.get(_SINCE_KEY)
        settled = since is not None and time.time() - since > ANNOUNCE_TTL_SECONDS
        return _KEY_PREFIX + owner in found or not settled
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds that pid
        return True
    return True
