"""Querysets compiled to SQL once and then run with a new key.

Building a queryset and compiling it costs Python time on every call, and for a query with a
few `Exists` subqueries (a turn's stored features) that was ~2 ms: ten times the query
itself, on the path to every turn's first token. A `CompiledQuery` compiles its queryset
once per database vendor, with a sentinel for each key, and afterwards only puts the real
keys where the sentinels were. Rows come back as the database driver returns them (JSON columns as text
on SQLite: see `json_value`), or as model instances (`instances`), built as a queryset builds
them: the fields' converters applied, `select_related` models attached. Django's `raw()` did
that too, at ~80 µs per call of its own bookkeeping, a turn's session and agent ~450 µs as a
queryset.
"""
from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators

# No row has these primary keys, and no other parameter of a compiled query equals one. A key
# compared with a text column reaches the SQL parameters as text: both forms are looked for.
_SENTINELS = tuple(-7_340_019_283 - index for index in range(8))
# (parameter index, key index): where each key goes in the parameters.
_Slots = tuple[tuple[int, int], ...]


class _Compiled:
    """One vendor's SQL, and how a row of it becomes model instances."""

    def __init__(self, queryset: QuerySet[Any], sentinels: tuple[int, ...], connection: BaseDatabaseWrapper) -> None:
        compiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()  # also fills compiler.select and klass_info
        self.sql = sql
        self.params = tuple(params)
        self.slots: _Slots = tuple(
            (index, key)
            for index, value in enumerate(params)
            for key, sentinel in enumerate(sentinels)
            if value == sentinel or value == str(sentinel)
        )
        if {key for _, key in self.slots} != set(range(len(sentinels))):
            raise ValueError("the compiled queryset does not use every key")
        select = compiler.select
        # A values_list queryset (for `row`) has no model rows to build, though the compiler
        # may describe some: its columns need not all be the model's (annotations).
        klass_info = compiler.klass_info if queryset._fields is None else None
        self._model: type[Model] | None = klass_info["model"] if klass_info else None
        if klass_info:
            fields = klass_info["select_fields"]
            self._span = slice(fields[0], fields[-1] + 1)
            self._attnames = [column[0].target.attname for column in select[self._span]]
            self._related = get_related_populators(klass_info, select, connection.alias)
            # Annotations become attributes of the instance, as a queryset sets them.
            self._annotations = tuple(compiler.annotation_col_map.items())
        # The converters are the backend's and the fields' (dates on SQLite, JSON columns):
        # they only read settings, so one vendor's serve every connection of it.
        self._converters = list(compiler.get_converters([column[0] for column in select]).items())

    def instances(self, rows: list[tuple[Any, ...]], connection: BaseDatabaseWrapper) -> list[Any]:
        assert self._model is not None, "instances() needs a queryset of model rows"
        built = []
        for fetched in rows:
            row = list(fetched)
            for position, (converters, expression) in self._converters:
                value = row[position]
                for convert in converters:
                    value = convert(value, expression, connection)
                row[position] = value
            instance = self._model.from_db(connection.alias, self._attnames, row[self._span])
            for populator in self._related:
                populator.populate(row, instance)
            for name, position in self._annotations:
                setattr(instance, name, row[position])
            built.append(instance)
        return built


class CompiledQuery:
    def __init__(self, build: Callable[..., QuerySet[Any]]) -> None:
        """`build(*keys)`: the queryset for some keys (a primary key, a uid…): values_list
        rows for `row`, the model's rows for `instances`. Its other parameters are compiled
        in, so they must be constants (never `now()`)."""
        self._build = build
        self._arity = len(inspect.signature(build).parameters)
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _for_vendor(self, connection: BaseDatabaseWrapper) -> _Compiled:
        compiled = self._compiled.get(connection.vendor)
        if compiled is None:
            with self._lock:
                sentinels = _SENTINELS[: self._arity]
                compiled = self._compiled[connection.vendor] = _Compiled(self._build(*sentinels), sentinels, connection)
        return compiled

    def _fetch(self, keys: tuple[Any, ...], *, first: bool) -> tuple[_Compiled, list[tuple[Any, ...]], BaseDatabaseWrapper]:
        # The connection itself, not the `django.db.connection` proxy, which looks it up again
        # (a context-local lookup) on every attribute read, converters' included.
        connection = connections[DEFAULT_DB_ALIAS]
        compiled = self._for_vendor(connection)
        bound = list(compiled.params)
        for index, key in compiled.slots:
            bound[index] = keys[key]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, bound)
            if first:
                row = cursor.fetchone()
                rows = [] if row is None else [row]
            else:
                rows = cursor.fetchall()
        return compiled, rows, connection

    def row(self, *keys: Any) -> tuple[Any, ...] | None:
        """The first row, as the driver returns it."""
        _, rows, _ = self._fetch(keys, first=True)
        return rows[0] if rows else None

    def rows(self, *keys: Any) -> list[tuple[Any, ...]]:
        """Every row, as the driver returns it."""
        _, rows, _ = self._fetch(keys, first=False)
        return rows

    def instances(self, *keys: Any) -> list[Any]:
        """Every row, as instances of the queryset's model (with its `select_related` ones)."""
        compiled, rows, connection = self._fetch(keys, first=False)
        return compiled.instances(rows, connection)

    def instance(self, *keys: Any) -> Any | None:
        """The first row as an instance, or None."""
        compiled, rows, connection = self._fetch(keys, first=True)
        return compiled.instances(rows, connection)[0] if rows else None


def json_value(value: Any) -> Any:
    """A JSON column as a Python value, whether the driver decoded it or not."""
    return json.loads(value) if isinstance(value, str | bytes) else value
