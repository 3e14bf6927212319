"""Database connections that come back after the database restarts.

Django drops a broken connection only between HTTP requests (`close_old_connections`), but
turns, WebSocket consumers and Celery tasks query from long-lived threads that never see a
request. A connection whose query failed because the server went away is closed on the
spot instead, so the next query of that thread connects afresh; a failure inside a
transaction is left to `atomic`, which drops the connection when its rollback fails.

`REDIS_DOWN` names the errors of a Redis that went away, for the channel layer and the
turns' abort signals alike.
"""
from __future__ import annotations

from typing import Any

import redis.exceptions
from django.db import InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _close_if_broken(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    try:
        return execute(sql, params, many, context)
    except (OperationalError, InterfaceError):
        connection: BaseDatabaseWrapper = context["connection"]
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()  # keeps it when still usable (e.g. SQLite busy)
        raise


def watch(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """`connection_created` receiver: install the check once per connection object (first,
    so that `connection.execute_wrapper()` blocks still pop their own wrapper)."""
    if _close_if_broken not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, _close_if_broken)


def drop_dead() -> None:
    """Close this thread's connections that died while idle (e.g. across a database
    restart), as Django does before each request; for Celery tasks."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.in_atomic_block and not connection.is_usable():
            connection.close()
