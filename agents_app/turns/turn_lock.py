"""One running turn per session across every process, in FIFO order of admission.

The lock is a compare-and-set on `Session.turn_lock` (works on SQLite and PostgreSQL). A
holder whose turn stopped heart-beating is presumed dead and its lock can be taken over.
Waiters poll, and waiters in the same process are also woken directly on release.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents_app.turns import process_liveness
from agents_app.storage import row_writes
from agents_app.storage.db_threads import db_async
from agents_app.storage.models import Session, Turn
from agents_app.testing import faults

_T = TypeVar("_T")
POLL_INTERVAL = 0.1
# Keyed by event loop too: an asyncio.Event belongs to the loop that first waits on it.
_release_events: defaultdict[tuple[int, int], asyncio.Event] = defaultdict(asyncio.Event)


def stale_after() -> timedelta:
    """A running turn whose heartbeat is older than this lost its process."""
    return timedelta(seconds=settings.AGENTS_TURN_STALE_SECONDS)


def _event(session_id: int) -> asyncio.Event:
    return _release_events[(id(asyncio.get_running_loop()), session_id)]


def _take_free_lock(session_id: int, turn_id: int, request_id: str, now: datetime) -> bool:
    """The usual case in one statement: nobody holds the lock and this turn is the session's
    oldest queued one. The compare-and-set on `turn_lock` is what excludes a concurrent taker."""
    session, turn = Session._meta, Turn._meta
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {session.db_table} SET turn_lock = %s, turn_lock_heartbeat = %s"
            f" WHERE id = %s AND turn_lock = '' AND %s = (SELECT MIN(id) FROM {turn.db_table}"
            f" WHERE session_id = %s AND status = %s)",
            [
                request_id,
                session.get_field("turn_lock_heartbeat").get_db_prep_save(now, connection),
                session_id,
                turn_id,
                session_id,
                Turn.Status.QUEUED.value,
            ],
        )
        return cursor.rowcount == 1


def running_now() -> dict[str, Any]:
    """A turn's columns once it holds its session's lock: running here, since now."""
    now = timezone.now()
    return {"status": Turn.Status.RUNNING, "started_at": now, "heartbeat_at": now, "owner": process_liveness.current()}


def _mark_running(turn_id: int) -> None:
    # Stamped once the lock is held, not when the try began: a try that found the previous
    # turn finished began before it finished, and the turns of a session never overlap.
    row_writes.update(Turn, {"pk": turn_id}, **running_now())


def _try_acquire(session_id: int, turn_id: int, request_id: str, *, first: bool) -> str:
    """Returns 'acquired', 'wait' or 'skipped' (the turn was skipped, e.g. by a clear). A
    turn's `first` try expects the lock free; later ones (it was not) read before writing,
    so that waiting turns polling the lock do not queue for SQLite's write lock."""
    now = timezone.now()
    if first and _take_free_lock(session_id, turn_id, request_id, now):
        _mark_running(turn_id)
        return "acquired"
    # The session's oldest queued turn (is it this one?) and who holds the lock.
    oldest = (
        Turn.objects.filter(session_id=session_id, status=Turn.Status.QUEUED)
        .order_by("id")
        .values_list("id", "session__turn_lock")
        .first()
    )
    if oldest is None or oldest[0] != turn_id:
        return _not_next(turn_id)
    holder = oldest[1] or ""
    if holder:
        holding_turn = Turn.objects.filter(session_id=session_id, request_id=holder).first()
        alive = (
            holding_turn is not None
            and holding_turn.status not in Turn.FINISHED
            and holding_turn.heartbeat_at is not None
            and holding_turn.heartbeat_at > timezone.now() - stale_after()
        )
        if alive:
            return "wait"
    if not row_writes.update(Session, {"pk": session_id, "turn_lock": holder}, turn_lock=request_id, turn_lock_heartbeat=now):
        return "wait"
    _mark_running(turn_id)
    return "acquired"


def _try_acquire_then(session_id: int, turn_id: int, request_id: str, first: bool, then: Callable[[], _T]) -> tuple[str, _T | None]:
    if first:
        faults.point("lock_acquire")
    outcome = _try_acquire(session_id, turn_id, request_id, first=first)
    return outcome, then() if outcome == "acquired" else None


def _not_next(turn_id: int) -> str:
    """Why a turn may not take the lock now: it is no longer queued, or an older one is."""
    status = Turn.objects.filter(pk=turn_id).values_list("status", flat=True).get()
    if status != Turn.Status.QUEUED:
        # Skipped by a clear or a superseding submit, or taken over by recovery after this
        # process stopped heart-beating for too long.
        return "skipped" if status in (Turn.Status.SKIPPED, Turn.Status.INTERRUPTED) else "wait"
    return "wait"  # an older turn of the session is queued


async def acquire(session_id: int, turn_id: int, request_id: str, then: Callable[[], _T]) -> _T | None:
    """Wait until this turn may run, then return what `then` returns: it runs on the database
    thread in the same call that took the lock, so that a turn loads what it needs without
    another round trip (if it raises, the lock is still held: the caller releases it). None
    when the turn was skipped while waiting. A waiting turn heart-beats too: one left queued
    by a dead process is recovered instead of blocking the session's queue forever."""
    event = _event(session_id)
    loop = asyncio.get_running_loop()
    next_beat = loop.time() + stale_after().total_seconds() / 4
    first = True
    while True:
        outcome, loaded = await db_async(_try_acquire_then)(session_id, turn_id, request_id, first, then)
        first = False
        if outcome != "wait":
            return loaded
        if loop.time() >= next_beat:
            await db_async(Turn.objects.filter(pk=turn_id, status=Turn.Status.QUEUED).update)(heartbeat_at=timezone.now())
            next_beat = loop.time() + stale_after().total_seconds() / 4
        event.clear()
        try:
            await asyncio.wait_for(event.wait(), timeout=POLL_INTERVAL)
        except TimeoutError:
            pass


async def release(session_id: int, request_id: str) -> None:
    await db_async(row_writes.update)(Session, {"pk": session_id, "turn_lock": request_id}, turn_lock="")
    _event(session_id).set()
