"""Limits that protect a deployment by default (each a setting; 0 turns one off).

Counters are atomic: window counters use the cache's `incr` (atomic in Redis and, per
process, in the local-memory cache), and turn counts are taken inside the admission
transaction with the owner's row locked, so parallel requests cannot all slip under a limit.
"""
from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection

from agents_app.storage import unfinished_turns


class LimitReached(Exception):
    """A limit refused the request; the message is for the client, `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


def take(key: str, limit: int, window_seconds: int) -> int:
    """Count one use of `key` in the current fixed window; returns 0 when allowed, else the
    seconds until the window ends."""
    if limit <= 0:
        return 0
    window = int(time.time() // window_seconds)
    slot = f"agents:limit:{key}:{window}"
    cache.add(slot, 0, timeout=window_seconds + 1)
    try:
        used = cache.incr(slot)
    except ValueError:  # expired between add and incr
        cache.add(slot, 1, timeout=window_seconds + 1)
        used = 1
    if used <= limit:
        return 0
    return int((window + 1) * window_seconds - time.time()) + 1


def counted_owner(owner_id: int | None) -> int | None:
    """The user whose unfinished turns a turn of `owner_id`'s admission counts: its owner
    when the per-user limit applies, else None."""
    return owner_id if owner_id is not None and settings.AGENTS_MAX_CONCURRENT_TURNS_PER_USER > 0 else None


def serialise_owner_admissions(owner_id: int | None) -> None:
    """Call first in the admission transaction: a user's admissions then count their turns
    one after another, so that parallel ones cannot all slip under the per-user limit
    (SQLite's write transaction serialises every admission already)."""
    if counted_owner(owner_id) is not None and connection.features.has_select_for_update:
        get_user_model().objects.select_for_update().filter(pk=owner_id).exists()


def check_unfinished(counts: unfinished_turns.UnfinishedTurns, owner_id: int | None) -> bool:
    """Refuse a new turn (LimitReached) past a limit, given the turns its admission found
    unfinished; else whether another turn of its session is queued or running (the new one
    overlaps it)."""
    if counted_owner(owner_id) is not None and counts.of_owner >= settings.AGENTS_MAX_CONCURRENT_TURNS_PER_USER:
        raise LimitReached(
            f"Too many turns at once: at most {settings.AGENTS_MAX_CONCURRENT_TURNS_PER_USER} turns at a time per user. "
            "Wait for an answer to finish."
        )
    limit = settings.AGENTS_MAX_QUEUED_TURNS_PER_SESSION
    if limit > 0 and counts.queued >= limit:
        raise LimitReached(f"Too many turns queued in this conversation (at most {limit}). Wait for the answers.")
    return counts.in_session > 0


def check_turn_admission(session_id: int, owner_id: int | None) -> bool:
    """`check_unfinished` with the counts read now: call inside the admission transaction,
    before the Turn row is created."""
    serialise_owner_admissions(owner_id)
    counts = unfinished_turns.unfinished_turns(session_id, counted_owner(owner_id))
    return check_unfinished(counts, owner_id)


def check_new_session(owner: Any) -> None:
    if owner is None:
        return
    wait = take(f"sessions:{owner.pk}", settings.AGENTS_MAX_NEW_SESSIONS_PER_MINUTE, 60)
    if wait:
        raise LimitReached(f"Too many new conversations: at most {settings.AGENTS_MAX_NEW_SESSIONS_PER_MINUTE} per minute.", wait)


class FrameRate:
    """A token bucket per socket: `AGENTS_MAX_FRAMES_PER_SECOND` sustained, twice that in a burst."""

    def __init__(self) -> None:
        self.tokens = float(self.capacity())
        self.updated = time.monotonic()

    @staticmethod
    def capacity() -> int:
        return 2 * settings.AGENTS_MAX_FRAMES_PER_SECOND

    def allow(self) -> bool:
        rate = settings.AGENTS_MAX_FRAMES_PER_SECOND
        if rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.capacity(), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


LOGIN_WINDOW_SECONDS = 300


def _login_key(username: str, address: str) -> str:
    return f"login:{username.lower()[:150]}:{address}"


def login_blocked(username: str, address: str) -> bool:
    limit = settings.AGENTS_MAX_LOGIN_FAILURES
    window = int(time.time() // LOGIN_WINDOW_SECONDS)
    return limit > 0 and (cache.get(f"agents:limit:{_login_key(username, address)}:{window}") or 0) >= limit


def record_login_failure(username: str, address: str) -> None:
    take(_login_key(username, address), settings.AGENTS_MAX_LOGIN_FAILURES, LOGIN_WINDOW_SECONDS)
