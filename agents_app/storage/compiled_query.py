"""Querysets compiled to SQL once and then run with a new key.

Building a queryset and compiling it costs Python time on every call, and for a query with a
few `Exists` subqueries (a turn's stored features) that was ~2 ms: ten times the query
itself, on the path to every turn's first token. A `CompiledQuery` compiles its queryset
once per database vendor, with a sentinel key, and afterwards only puts the real key where
the sentinel was. Rows come back as the database driver returns them (JSON columns as text
on SQLite: see `json_value`), or as model instances (`instances`, through `raw()`, which
applies the fields' converters).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.db.models import Model, QuerySet

# No row has this primary key, and no other parameter of a compiled query equals it.
_SENTINEL = -7_340_019_283


class CompiledQuery:
    def __init__(self, build: Callable[[int], QuerySet[Any]]) -> None:
        """`build(key)`: the queryset for one key: values_list rows for `row`, the model's
        rows for `instances`. Its other parameters are compiled in, so they must be
        constants (never `now()`)."""
        self._build = build
        self._compiled: dict[str, tuple[str, tuple[Any, ...], tuple[int, ...]]] = {}
        self._lock = threading.Lock()
        self._model: type[Model] | None = None  # the queryset's, known once compiled

    def _sql(self) -> tuple[str, tuple[Any, ...], tuple[int, ...]]:
        compiled = self._compiled.get(connection.vendor)
        if compiled is None:
            with self._lock:
                queryset = self._build(_SENTINEL)
                self._model = queryset.model
                sql, params = queryset.query.sql_with_params()
                slots = tuple(index for index, value in enumerate(params) if value == _SENTINEL)
                if not slots:
                    raise ValueError("the compiled queryset does not use its key")
                compiled = self._compiled[connection.vendor] = (sql, tuple(params), slots)
        return compiled

    def _bound(self, key: int) -> tuple[str, list[Any]]:
        sql, params, slots = self._sql()
        bound = list(params)
        for index in slots:
            bound[index] = key
        return sql, bound

    def row(self, key: int) -> tuple[Any, ...] | None:
        """The first row, as the driver returns it."""
        sql, bound = self._bound(key)
        with connection.cursor() as cursor:
            cursor.execute(sql, bound)
            return cursor.fetchone()

    def instances(self, key: int) -> list[Any]:
        """Every row, as instances of the queryset's model."""
        sql, bound = self._bound(key)
        assert self._model is not None  # set by the compile `_bound` made sure of
        return list(self._model._default_manager.raw(sql, bound))


def json_value(value: Any) -> Any:
    """A JSON column as a Python value, whether the driver decoded it or not."""
    return json.loads(value) if isinstance(value, str | bytes) else value
