"""Django's SQLite backend, with this process's write transactions taking turns in order,
and each statement's placeholders converted once.

SQLite has one write lock per database. A connection that finds it taken sleeps in SQLite's
busy handler and polls, at growing intervals (up to 100 ms a try), while a thread that
commits and begins again moments later takes the lock ahead of it every time. Traced with
fifty turns admitted at once on four database threads, one thread made almost every
admission while the other three slept 80 to 180 ms before their first try succeeded, and
every turn's first token waited for the last of them. So the threads of one process queue
for the lock here, in arrival order, and the lock is handed from one to the next as it is
released; SQLite's own lock and busy timeout still order them against other processes (a
Celery worker). Only with IMMEDIATE (or EXCLUSIVE) transactions, the default here, where
BEGIN itself takes SQLite's write lock: a deferred transaction may only read. A write outside
a transaction (an UPDATE or INSERT in autocommit: a stream's start, a heartbeat) takes its
turn in the same queue for the length of its statement: in the busy handler it had polled
while fifty admissions handed the lock on ahead of it, and a stream's first frame, which
waits for its start to be recorded, came ~60 ms after the model's first words.

Django writes SQL with `%s` placeholders and its SQLite cursor rewrites them to `?` with a
regular expression on every execute. The turn path runs the same few dozen statements over
and over, so the rewritten text is kept (per statement text, a bounded cache).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

__all__ = ["CursorWrapper", "DatabaseWrapper", "WriterQueue", "writers_of"]


class WriterQueue:
    """A lock granted in the order it was asked for: `release` hands it straight to the
    longest waiter, so a releasing thread cannot take it back ahead of them."""

    def __init__(self) -> None:
        self._state = threading.Lock()
        self._held = False
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self, timeout: float) -> bool:
        with self._state:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        if turn.acquire(timeout=timeout):
            return True
        with self._state:
            if turn in self._waiters:
                self._waiters.remove(turn)
                return False
        return True  # handed over between the timeout and this check: it is ours

    @property
    def waiting(self) -> int:
        """How many threads wait for their turn (the holder not counted)."""
        with self._state:
            return len(self._waiters)

    def release(self) -> None:
        with self._state:
            if self._waiters:
                self._waiters.popleft().release()  # still held: now by the next waiter
            else:
                self._held = False


_queues: dict[str, WriterQueue] = {}
_queues_lock = threading.Lock()


def _queue_for(name: str) -> WriterQueue:
    queue = _queues.get(name)  # every BEGIN asks: no lock, nothing built, once the queue exists
    if queue is None:
        with _queues_lock:
            queue = _queues.get(name)
            if queue is None:
                queue = _queues[name] = WriterQueue()
    return queue


def writers_of(connection: base.DatabaseWrapper) -> WriterQueue:
    """The queue this process's writers to `connection`'s database file wait in."""
    return _queue_for(str(connection.settings_dict["NAME"]))


@functools.lru_cache(maxsize=2048)
def _qmark(query: str) -> str:
    return base.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


@functools.lru_cache(maxsize=2048)
def _writes(query: str) -> bool:
    return query.lstrip()[:7].upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))


class CursorWrapper(base.SQLiteCursorWrapper):
    # The queue this cursor's writes outside a transaction wait in (None: they do not), and
    # for how long at most: set by the connection that makes the cursor.
    writers: WriterQueue | None = None
    busy_timeout = 5.0

    def convert_query(self, query: str, *, param_names: list[str] | None = None) -> str:
        if param_names is None:
            return _qmark(query)
        return super().convert_query(query, param_names=param_names)

    def execute(self, query: str, params: Any = None) -> Any:
        if not self._waits_its_turn(query):  # most statements: no context manager to enter
            return super().execute(query, params)
        with self._in_turn():
            return super().execute(query, params)

    def executemany(self, query: str, param_list: Any) -> Any:
        if not self._waits_its_turn(query):
            return super().executemany(query, param_list)
        with self._in_turn():
            return super().executemany(query, param_list)

    def _waits_its_turn(self, query: str) -> bool:
        """A write outside a transaction, on a database whose writers take turns."""
        return self.writers is not None and not self.connection.in_transaction and _writes(query)

    @contextlib.contextmanager
    def _in_turn(self) -> Iterator[None]:
        writers = self.writers
        assert writers is not None
        _take_turn(writers, self.busy_timeout)
        try:
            yield
        finally:
            writers.release()


def _take_turn(writers: WriterQueue, timeout: float) -> None:
    if not writers.acquire(timeout):
        raise OperationalError("database is locked")  # as SQLite says after its busy timeout


class DatabaseWrapper(base.DatabaseWrapper):
    _writer_turn: WriterQueue | None = None

    def create_cursor(self, name: str | None = None) -> CursorWrapper:
        cursor = self.connection.cursor(factory=CursorWrapper)
        if self._writers_take_turns():
            cursor.writers = writers_of(self)
            cursor.busy_timeout = self._busy_timeout()
        return cursor

    def _writers_take_turns(self) -> bool:
        return self.transaction_mode in ("IMMEDIATE", "EXCLUSIVE") and not self.is_in_memory_db()

    def _busy_timeout(self) -> float:
        return float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5.0))

    def _start_transaction_under_autocommit(self) -> None:
        if not self._writers_take_turns():
            super()._start_transaction_under_autocommit()
            return
        writers = writers_of(self)
        _take_turn(writers, self._busy_timeout())
        self._writer_turn = writers
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._end_writer_turn()
            raise

    def _commit(self) -> Any:
        try:
            return super()._commit()
        finally:
            self._end_writer_turn()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()
        finally:
            self._end_writer_turn()

    def _close(self) -> Any:
        try:
            return super()._close()
        finally:
            self._end_writer_turn()

    def _end_writer_turn(self) -> None:
        writers, self._writer_turn = self._writer_turn, None
        if writers is not None:
            writers.release()
