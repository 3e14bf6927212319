"""The turn engine's database threads (storage/db_threads.py) across a database that dropped
their connections while they sat idle, as a PostgreSQL restart does to a Celery worker
between turns."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import psycopg
import pytest
from asgiref.local import Local
from django.contrib.auth import get_user_model
from django.db import connection

from agents_app.storage import db_threads
from agents_app.storage.db_threads import db_async

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def _count_users() -> int:
    time.sleep(0.02)  # long enough that concurrent calls spread over every thread
    return get_user_model().objects.count()


def _backend_pid() -> int:
    """The database server process serving the calling thread's connection."""
    time.sleep(0.02)
    connection.ensure_connection()
    return connection.connection.info.backend_pid


def _terminate(pids: set[int]) -> None:
    """What a database restart does to those connections."""
    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"], user=db["USER"] or "postgres", host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, autocommit=True
    ) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])


async def test_a_database_thread_whose_connection_died_while_idle_answers_its_next_call(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server whose sessions can be terminated")
    monkeypatch.setattr(db_threads, "IDLE_BEFORE_CHECK_SECONDS", 0.05)
    calls = 4 * db_threads.executor()._max_workers
    pids = set(await asyncio.gather(*(db_async(_backend_pid)() for _ in range(calls))))

    await asyncio.to_thread(_terminate, pids)
    await asyncio.sleep(0.1)  # the threads are idle for longer than the check's threshold

    assert await asyncio.gather(*(db_async(_count_users)() for _ in range(calls))) == [1] * calls


@contextlib.asynccontextmanager
async def _one_busy_thread(name: str) -> AsyncIterator[db_threads.OldestFirstExecutor]:
    """A one-thread pool whose thread is busy for the block: calls made in it queue up, and
    are served in rank order once it ends."""
    pool = db_threads.OldestFirstExecutor(1, thread_name_prefix=name)
    loop = asyncio.get_running_loop()
    busy = asyncio.Event()
    release = threading.Event()

    def hold() -> None:
        loop.call_soon_threadsafe(busy.set)
        release.wait(5)

    blocker = loop.run_in_executor(pool, hold)
    await busy.wait()
    try:
        yield pool
    finally:
        release.set()
        await blocker


async def test_the_calls_of_the_turn_that_began_first_are_served_first() -> None:
    """Fifty turns admitted together must not advance in lockstep: with every thread busy,
    a queued call of an older turn runs before the queued calls of newer turns."""
    loop = asyncio.get_running_loop()
    served: list[str] = []
    queued = []
    async with _one_busy_thread("test-oldest-first") as pool:
        for name, began in (("newer turn", 2.0), ("no turn", None), ("older turn", 1.0)):
            if began is None:
                queued.append(loop.run_in_executor(pool, served.append, name))
                continue
            with db_threads.oldest_first(began):
                queued.append(loop.run_in_executor(pool, served.append, name))
    await asyncio.gather(*queued)
    pool.shutdown()
    assert served == ["older turn", "newer turn", "no turn"]


async def test_a_turns_calls_after_its_outcome_rank_behind_turns_that_began_later() -> None:
    """Once its outcome is sent, a turn's bookkeeping (its lock, titles, the transcript for
    other tabs) ranks as new work: the endings of turns that began after it, whose users
    still wait for their done frame, go first."""
    loop = asyncio.get_running_loop()
    served: list[str] = []

    async def bookkeeping_of_the_first_turn(pool: db_threads.OldestFirstExecutor) -> None:
        with db_threads.oldest_first(time.monotonic() - 10):
            db_threads.rank_from_now()
            await loop.run_in_executor(pool, served.append, "first turn, after its outcome")

    async with _one_busy_thread("test-rank-from-now") as pool:
        first = asyncio.ensure_future(bookkeeping_of_the_first_turn(pool))
        await asyncio.sleep(0)  # queued first
        with db_threads.oldest_first(time.monotonic() - 5):
            later = loop.run_in_executor(pool, served.append, "later turn's ending")
    await asyncio.gather(first, later)
    pool.shutdown()
    assert served == ["later turn's ending", "first turn, after its outcome"]


async def test_every_thread_started_so_far_closes_its_connections_once() -> None:
    """A test run drops its database after the threads let go of it: each must be reached,
    however few of the allowed threads were ever started."""
    pool = db_threads.OldestFirstExecutor(12, thread_name_prefix="test-close")
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(pool, time.sleep, 0.05) for _ in range(3)))
    reached: list[str] = []
    await asyncio.to_thread(pool.run_on_every_thread, lambda: reached.append(threading.current_thread().name), 5)
    pool.shutdown()
    assert len(reached) == len(set(reached)) == 3


_request_tag: ContextVar[str] = ContextVar("test_request_tag", default="")
_local = Local()


async def test_a_database_call_sees_the_callers_context_variables_and_asgiref_locals() -> None:
    """Like sync_to_async: what the caller set (a context variable, a `Local` such as the
    active translation) is what the call sees on its thread."""
    _request_tag.set("turn-7")
    _local.tag = "local-7"

    def read() -> tuple[str, str, bool]:
        return _request_tag.get(), getattr(_local, "tag", ""), threading.current_thread() is threading.main_thread()

    assert await db_async(read)() == ("turn-7", "local-7", False)


@pytest.fixture
def one_database_thread(monkeypatch: pytest.MonkeyPatch) -> Any:
    pool = db_threads.OldestFirstExecutor(1, thread_name_prefix="test-one-thread")
    monkeypatch.setattr(db_threads, "_executor", pool)
    yield pool
    pool.shutdown(wait=False)


async def test_a_database_call_cancelled_before_it_started_never_runs(one_database_thread: Any) -> None:
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def hold() -> None:
        started.set()
        release.wait(5)

    holding = asyncio.ensure_future(db_async(hold)())
    await asyncio.to_thread(started.wait, 5)
    queued = asyncio.ensure_future(db_async(ran.append)("queued call"))
    await asyncio.sleep(0.01)
    queued.cancel()
    # The cancellation is delivered when the task next runs: only then is the thread freed,
    # or it could take the call first (a race this test once lost under load).
    with contextlib.suppress(asyncio.CancelledError):
        await queued
    release.set()
    await holding
    await db_async(ran.append)("later call")  # the one thread has served everything queued before it
    assert queued.cancelled()
    assert ran == ["later call"]


async def test_a_database_call_already_running_when_cancelled_finishes_and_answers(one_database_thread: Any) -> None:
    """A write that started (a lock's release, a turn's outcome) is not abandoned halfway, and
    its caller gets the result, as with sync_to_async."""
    started = threading.Event()
    release = threading.Event()

    def write() -> str:
        started.set()
        release.wait(5)
        return "written"

    call = asyncio.ensure_future(db_async(write)())
    await asyncio.to_thread(started.wait, 5)
    call.cancel()
    await asyncio.sleep(0.01)
    release.set()
    assert await call == "written"
