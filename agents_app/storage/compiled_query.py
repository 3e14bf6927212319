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
        self.width = len(select)

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


class CompiledRowWithRows:
    """A model row and the rows of a second query, in one statement.

    For a read that needs both a row and its children (a session and its messages) where one
    round trip less matters, and a join would repeat the row's every column on every child
    row. The two queries run as one `UNION ALL`, the row first: each branch fills the other's
    columns with NULLs. Both builders take the same keys."""

    def __init__(self, row: Callable[..., QuerySet[Any]], rows: Callable[..., QuerySet[Any]]) -> None:
        """`row(*keys)`: at most one model row (by a primary key); `rows(*keys)`: values_list
        rows, which come back ordered by their first column (a UNION keeps no branch's own
        ORDER BY)."""
        self._row = CompiledQuery(row)
        self._rows = CompiledQuery(rows)
        self._compiled: dict[str, tuple[str, tuple[Any, ...], _Slots]] = {}

    def _for_vendor(self, connection: BaseDatabaseWrapper) -> tuple[_Compiled, _Compiled, str, tuple[Any, ...], _Slots]:
        row, rows = self._row._for_vendor(connection), self._rows._for_vendor(connection)
        compiled = self._compiled.get(connection.vendor)
        if compiled is None:
            # Column 1 says which branch a row comes from.
            padding_rows, padding_row = ", NULL" * rows.width, ", NULL" * row.width
            sql = (
                f"SELECT 0, head.*{padding_rows} FROM ({row.sql}) head"
                f" UNION ALL SELECT 1{padding_row}, tail.* FROM ({rows.sql}) tail"
                f" ORDER BY 1, {row.width + 2}"
            )
            offset = len(row.params)
            slots = row.slots + tuple((index + offset, key) for index, key in rows.slots)
            compiled = self._compiled[connection.vendor] = (sql, row.params + rows.params, slots)
        return row, rows, *compiled

    def fetch(self, *keys: Any) -> tuple[Any | None, list[tuple[Any, ...]]]:
        """The row as an instance (None when the first query finds none) and the other rows,
        as the driver returns them."""
        connection = connections[DEFAULT_DB_ALIAS]
        row, _, sql, params, slots = self._for_vendor(connection)
        bound = list(params)
        for index, key in slots:
            bound[index] = keys[key]
        with connection.cursor() as cursor:
            cursor.execute(sql, bound)
            fetched = cursor.fetchall()
        if not fetched or fetched[0][0] != 0:
            return None, [found[row.width + 1 :] for found in fetched]
        head = row.instances([fetched[0][1 : row.width + 1]], connection)[0]
        return head, [found[row.width + 1 :] for found in fetched[1:]]


def json_value(value: Any) -> Any:
    """A JSON column as a Python value, whether the driver decoded it or not."""
    return json.loads(value) if isinstance(value, str | bytes) else value
