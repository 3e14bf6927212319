"""A small pool of threads for database calls that need no particular thread.

`asgiref.sync_to_async` defaults to `thread_sensitive=True`: every call, from every session,
runs on one shared thread, so one chat's queries wait behind everybody else's. The turn
engine's calls are self-contained (each opens and ends its own transaction, if any) and can
run on any thread: `db_async` sends them to `AGENTS_DB_THREADS` threads instead.

Each thread keeps its own Django connection for its lifetime, as the shared thread does; a
connection broken by a database restart is closed at its failing query and reopened by the
next (storage/connections.py). A thread that sat idle checks its connections before its next
call: a restart while nobody queried (a Celery worker between turns) would otherwise fail the
first turn after it, which no request boundary resets here as it does in a view. On SQLite the threads' writes queue on the database's write
lock (WAL, IMMEDIATE transactions and a busy timeout: see SQLITE_OPTIONS in settings).
Code that needs the caller's thread (a thread-local, an enclosing transaction) keeps
using `sync_to_async`.

Oldest work first: the threads take calls in the order their *turn* began (`oldest_first`),
not in the order the calls arrived. A turn makes a dozen calls before its first token; in
arrival order, fifty turns admitted together advance in lockstep, each call queued behind
the other forty-nine turns' calls, and every user waits for the whole batch. Served oldest
first, the first turns reach their first token while later ones wait, as at a counter.
A call outside any turn ranks by the moment it is made.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Executor, Future
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync, _restore_context
from django.conf import settings
from django.db import connections

from agents_app.storage import query_count
from agents_app.storage.connections import drop_dead
from agents_app.testing import db_cpu

_P = ParamSpec("_P")
_R = TypeVar("_R")
# When the current turn began (time.monotonic()); unset outside a turn.
_turn_began: ContextVar[float | None] = ContextVar("agents_turn_began", default=None)


@contextlib.contextmanager
def oldest_first(began: float | None = None) -> Iterator[None]:
    """Rank the database calls made in this block, and in the tasks it starts, by `began`
    (now by default): a turn's calls go before those of turns that began later."""
    token = _turn_began.set(time.monotonic() if began is None else began)
    try:
        yield
    finally:
        _turn_began.reset(token)


def rank_from_now() -> None:
    """This task's later database calls rank as if its turn began now: a turn's work after
    its outcome was sent (releasing its lock, titles, the transcript for other tabs) waits
    behind the turns that began before and still have users waiting for a frame."""
    _turn_began.set(time.monotonic())


def turn_began() -> float | None:
    return _turn_began.get()


class OldestFirstExecutor(Executor):
    """Up to `max_workers` threads serving calls by rank (see the module docstring), then FIFO.
    A thread is started only when a call finds every running thread busy: a process that
    makes one call at a time (a Celery worker between turns) keeps one thread, and so one
    database connection."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix
        self._queue: queue.PriorityQueue[tuple[float, int, Callable[[], None] | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._state = threading.Lock()

    def submit(self, fn: Callable[..., _R], /, *args: Any, **kwargs: Any) -> Future[_R]:
        future: Future[_R] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        rank = _turn_began.get()
        with self._state:
            self._queue.put((time.monotonic() if rank is None else rank, next(self._order), run))
            if self._queue.qsize() > self._idle and len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._serve, name=f"{self._thread_name_prefix}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _serve(self) -> None:
        waiting_idle = False  # a thread is started for a call already queued: not idle at first
        while True:
            if waiting_idle:
                with self._state:
                    self._idle += 1
            _, _, run = self._queue.get()
            if waiting_idle:
                with self._state:
                    self._idle -= 1
            waiting_idle = True
            if run is None:
                return
            run()

    def run_on_every_thread(self, fn: Callable[[], None], timeout: float) -> None:
        """Run `fn` once on each thread started so far. One task per thread: they wait for
        each other, so no thread runs two of them (a thread started meanwhile has no state)."""
        with self._state:
            count = len(self._threads)
        if not count:
            return
        barrier = threading.Barrier(count, timeout=timeout)

        def each() -> None:
            barrier.wait()
            fn()

        for future in [self.submit(each) for _ in range(count)]:
            future.result()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._state:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put((float("inf"), next(self._order), None))
        if wait:
            for thread in threads:
                thread.join()


_executor: OldestFirstExecutor | None = None
_lock = threading.Lock()
# A connection used within this many seconds is taken as alive: a busy thread pays no check.
IDLE_BEFORE_CHECK_SECONDS = 2.0
_last_call = threading.local()


def executor() -> OldestFirstExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = OldestFirstExecutor(max(1, settings.AGENTS_DB_THREADS), thread_name_prefix="agents-db")
        return _executor


def close_connections(timeout: float = 10.0) -> None:
    """Close every database thread's connections (a test run drops its database after this)."""
    with _lock:
        pool = _executor
    if pool is not None:
        pool.run_on_every_thread(connections.close_all, timeout)


def db_async(func: Callable[_P, _R]) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """`sync_to_async(func, thread_sensitive=False)` on the database threads, without its
    bookkeeping (a turn makes dozens of these calls; asgiref's wrapper cost twice the hop).

    As with asgiref: the call sees the caller's context variables and asgiref `Local`s,
    `async_to_sync` inside it reaches the caller's loop, a call cancelled before it started
    never runs, and one already running finishes and returns its result to the cancelled
    caller. Context variables the call sets stay in the call (nothing here relies on them
    flowing back)."""

    @functools.wraps(func)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        query_count.database_call()
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        running = executor().submit(_run_in_context, loop, context, func, args, kwargs)
        waiter = loop.create_future()
        running.add_done_callback(lambda done: loop.call_soon_threadsafe(_pass_outcome, done, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            if running.cancel() or not running.running():
                raise
            return await asyncio.wrap_future(running)

    return call


def _run_in_context(
    loop: asyncio.AbstractEventLoop, context: contextvars.Context, func: Callable[..., _R], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> _R:
    SyncToAsync.threadlocal.main_event_loop = loop
    SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
    return context.run(_call_rehomed, context, func, args, kwargs)


def _call_rehomed(context: contextvars.Context, func: Callable[..., _R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _R:
    _restore_context(context)  # asgiref: `Local` data moved on purpose belongs to this thread now
    last = getattr(_last_call, "at", None)
    if last is not None and time.monotonic() - last > IDLE_BEFORE_CHECK_SECONDS:
        drop_dead()
    try:
        cpu_record = settings.AGENTS_DB_CPU
        return db_cpu.timed(cpu_record, func, args, kwargs) if cpu_record else func(*args, **kwargs)
    finally:
        _last_call.at = time.monotonic()


def _pass_outcome(done: Future[_R], waiter: asyncio.Future[_R]) -> None:
    if waiter.cancelled():
        return
    if done.cancelled():  # the executor shut down before the call started
        waiter.cancel()
        return
    error = done.exception()
    if error is None:
        waiter.set_result(done.result())
    else:
        waiter.set_exception(error)
