"""Querysets compiled to SQL once and then run with a new key.

Building a queryset and compiling it costs Python time on every call, and for a query with a
few `Exists` subqueries (a turn's stored features) that was ~2 ms: ten times the query
itself, on the path to every turn's first token. A `CompiledQuery` compiles its queryset
once per database vendor, with a sentinel for each key, and afterwards only puts the real
keys where the sentinels were. Rows come back as the database driver returns them (JSON columns as text
on SQLite: see `json_value`), or as model instances (`instances`, through `raw()`, which
applies the fields' converters).
"""
from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.db.models import Model, QuerySet

# No row has these primary keys, and no other parameter of a compiled query equals one. A key
# compared with a text column reaches the SQL parameters as text: both forms are looked for.
_SENTINELS = tuple(-7_340_019_283 - index for index in range(8))
# (parameter index, key index): where each key goes in the parameters.
_Slots = tuple[tuple[int, int], ...]


class CompiledQuery:
    def __init__(self, build: Callable[..., QuerySet[Any]]) -> None:
        """`build(*keys)`: the queryset for some keys (a primary key, a uid…): values_list
        rows for `row`, the model's rows for `instances`. Its other parameters are compiled
        in, so they must be constants (never `now()`)."""
        self._build = build
        self._arity = len(inspect.signature(build).parameters)
        self._compiled: dict[str, tuple[str, tuple[Any, ...], _Slots]] = {}
        self._lock = threading.Lock()
        self._model: type[Model] | None = None  # the queryset's, known once compiled

    def _sql(self) -> tuple[str, tuple[Any, ...], _Slots]:
        compiled = self._compiled.get(connection.vendor)
        if compiled is None:
            with self._lock:
                sentinels = _SENTINELS[: self._arity]
                queryset = self._build(*sentinels)
                self._model = queryset.model
                sql, params = queryset.query.sql_with_params()
                slots = tuple(
                    (index, key)
                    for index, value in enumerate(params)
                    for key, sentinel in enumerate(sentinels)
                    if value == sentinel or value == str(sentinel)
                )
                if {key for _, key in slots} != set(range(self._arity)):
                    raise ValueError("the compiled queryset does not use every key")
                compiled = self._compiled[connection.vendor] = (sql, tuple(params), slots)
        return compiled

    def _bound(self, keys: tuple[Any, ...]) -> tuple[str, list[Any]]:
        sql, params, slots = self._sql()
        bound = list(params)
        for index, key in slots:
            bound[index] = keys[key]
        return sql, bound

    def row(self, *keys: Any) -> tuple[Any, ...] | None:
        """The first row, as the driver returns it."""
        sql, bound = self._bound(keys)
        with connection.cursor() as cursor:
            cursor.execute(sql, bound)
            return cursor.fetchone()

    def instances(self, *keys: Any) -> list[Any]:
        """Every row, as instances of the queryset's model."""
        sql, bound = self._bound(keys)
        assert self._model is not None  # set by the compile `_bound` made sure of
        return list(self._model._default_manager.raw(sql, bound))


def json_value(value: Any) -> Any:
    """A JSON column as a Python value, whether the driver decoded it or not."""
    return json.loads(value) if isinstance(value, str | bytes) else value
