"""Database round trips per turn, counted on demand (`AGENTS_COUNT_QUERIES`).

A turn's queries run on worker threads (`sync_to_async`), so a per-thread counter cannot
attribute them. The count lives in a context variable instead: asgiref copies the caller's
context into the thread that runs each call, and asyncio copies it into every task the turn
starts (heartbeat, publisher), so whatever the turn does is charged to the turn.

Off by default: then no turn is ever counted and the execute wrapper (installed on every
connection, so that turning counting on later needs no reconnect) only reads a context variable.
"""
from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper


@dataclass
class TurnQueries:
    request_id: str
    before_first_token: int = 0
    after_first_token: int = 0
    first_token_seen: bool = False
    # Calls to the database threads (db_threads.db_async): each is a hand-off to a thread
    # and back, which on an idle server costs more than most of the statements it runs.
    calls_before_first_token: int = 0
    calls_after_first_token: int = 0
    # The statements themselves (truncated), so that a ceiling's failure says which ones.
    statements: list[str] = field(default_factory=list)

    def count(self, sql: str) -> None:
        if self.first_token_seen:
            self.after_first_token += 1
        else:
            self.before_first_token += 1
        self.statements.append(("after: " if self.first_token_seen else "before: ") + sql[:200])


_current: ContextVar[TurnQueries | None] = ContextVar("agents_turn_queries", default=None)
# The last turns' counts, for tests and `manage.py loadbench` in-process callers.
finished: deque[TurnQueries] = deque(maxlen=10_000)
_file_lock = threading.Lock()


def database_call() -> None:
    """A call to the database threads, charged to the current turn if it is counted."""
    turn = _current.get()
    if turn is None:
        return
    if turn.first_token_seen:
        turn.calls_after_first_token += 1
    else:
        turn.calls_before_first_token += 1


def enabled() -> bool:
    return bool(getattr(settings, "AGENTS_COUNT_QUERIES", ""))


def _counting(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    turn = _current.get()
    if turn is not None:
        turn.count(sql)
    return execute(sql, params, many, context)


def watch(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """`connection_created` receiver: charge this connection's queries to the current turn."""
    if _counting not in connection.execute_wrappers:
        connection.execute_wrappers.append(_counting)


@contextlib.contextmanager
def admission(request_id: str) -> Iterator[None]:
    """Charge the queries of this block, and of the tasks it starts (the turn itself), to
    turn `request_id`."""
    if not enabled():
        yield
        return
    token = _current.set(TurnQueries(request_id))
    try:
        yield
    finally:
        _current.reset(token)


def first_token() -> None:
    """The turn's first chunk is on its way: later queries count as after the first token."""
    current = _current.get()
    if current is not None:
        current.first_token_seen = True


@contextlib.contextmanager
def turn(request_id: str) -> Iterator[None]:
    """Count a turn's queries for its duration and record the totals when it ends."""
    if not enabled():
        yield
        return
    current = _current.get()
    token = None
    if current is None or current.request_id != request_id:  # not admitted through a socket
        current = TurnQueries(request_id)
        token = _current.set(current)
    try:
        yield
    finally:
        _record(current)
        if token is not None:
            _current.reset(token)


def _record(counted: TurnQueries) -> None:
    path = settings.AGENTS_COUNT_QUERIES
    if path not in ("1", "true", "True", "yes"):  # a file path: one JSON line per turn
        counts = {
            "request_id": counted.request_id,
            "before_first_token": counted.before_first_token,
            "after_first_token": counted.after_first_token,
            "first_token_seen": counted.first_token_seen,
            "calls_before_first_token": counted.calls_before_first_token,
            "calls_after_first_token": counted.calls_after_first_token,
        }
        with _file_lock, open(path, "a") as handle:
            handle.write(json.dumps(counts) + "\n")
        # A load run counts thousands of turns: only the counts are kept, not the statements.
        counted.statements.clear()
    finished.append(counted)
