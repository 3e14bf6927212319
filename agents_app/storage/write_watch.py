"""Whether a block of code wrote to the database, wherever its queries ran.

What a turn read before running code it does not control (an agent's start-up hooks) still
holds afterwards if that code wrote nothing, and need not be read again. The block's queries
run on database threads and in tasks it starts: like query_count.py, the watch lives in a
context variable, which asgiref and asyncio copy into both, and is a mutable object, so
what a copy notes reaches the block. Writes made elsewhere (another process, a Celery
worker) are not seen.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@dataclass
class Watch:
    wrote: bool = False


_current: ContextVar[Watch | None] = ContextVar("agents_write_watch", default=None)


@contextlib.contextmanager
def watching() -> Iterator[Watch]:
    """Note whether the block (and what it starts meanwhile) writes."""
    watch = Watch()
    token = _current.set(watch)
    try:
        yield watch
    finally:
        _current.reset(token)


def _noting_writes(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    watch = _current.get()
    # A statement that writes starts with its verb; a read that writes (a CTE) is not ours.
    if watch is not None and not watch.wrote and sql.lstrip()[:7].upper().startswith(_WRITES):
        watch.wrote = True
    return execute(sql, params, many, context)


def watch(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """`connection_created` receiver: note this connection's writes for the current watch."""
    if _noting_writes not in connection.execute_wrappers:
        connection.execute_wrappers.append(_noting_writes)
