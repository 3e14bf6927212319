"""Per-process copies of what the gateway reads on every model call, so that a call with
nothing to enforce costs no database round trip for them.

`TableCopy`: a whole configuration table (routes, rate limits, budgets, prices), loaded in
one query when cold. A save or delete through the ORM (the admin, tests) drops the copy at
once in this process, and again when its transaction commits, since another thread may
have reloaded the old rows in between. Other processes (daphne, Celery workers) and changes
the ORM does not signal (`QuerySet.update`, SQL) are seen once the copy is older than
AGENTS_GATEWAY_CONFIG_TTL_SECONDS.

`BoundedMap`: facts that never change once written (a session's agent and owner), kept for
the most recently used keys.

Both are read from several database threads at once. No lock is held across a query: a
thread waiting on the database (SQLite's write lock, a slow PostgreSQL) must not hold up a
thread that is holding the database. Two threads finding a copy cold may both load it.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class _Loaded(Generic[T]):
    value: T
    at: float  # time.monotonic() when the load started


class TableCopy(Generic[T]):
    """The result of `load()`, reloaded when the tables it reads change or it gets too old."""

    def __init__(self, load: Callable[[], T], sources: tuple[type[models.Model], ...]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._loaded: _Loaded[T] | None = None
        # Bumped by every change, so that a load that started before it is not kept.
        self._generation = 0
        for model in sources:
            post_save.connect(self._source_changed, sender=model, weak=False)
            post_delete.connect(self._source_changed, sender=model, weak=False)
        _every_cache.append(self)

    def get(self) -> T:
        with self._lock:
            loaded, generation = self._loaded, self._generation
        if loaded is not None and time.monotonic() - loaded.at < settings.AGENTS_GATEWAY_CONFIG_TTL_SECONDS:
            return loaded.value
        started = time.monotonic()
        value = self._load()
        with self._lock:
            if generation == self._generation:
                self._loaded = _Loaded(value, started)
        return value

    def clear(self) -> None:
        with self._lock:
            self._loaded = None
            self._generation += 1

    def _source_changed(self, sender: type[models.Model], using: str, **kwargs: Any) -> None:
        self.clear()
        transaction.on_commit(self.clear, using=using)


class BoundedMap(Generic[K, V]):
    """At most `max_entries` keys; the least recently used goes first."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, V] = OrderedDict()
        _every_cache.append(self)

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_every_cache: list[TableCopy[Any] | BoundedMap[Any, Any]] = []


def clear_all() -> None:
    """Forget every copy: for a process whose database was replaced underneath it without a
    signal (a test's rolled-back or truncated rows; SQLite then reuses a session's id)."""
    for cache in _every_cache:
        cache.clear()
