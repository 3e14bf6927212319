"""One-row INSERT and UPDATE statements without building a queryset.

`Model.objects.create()` and `QuerySet.update()` build, compile and run a query object each
time: ~200–300 µs of Python for a one-row statement whose execution costs ~20 µs. A turn
makes a dozen such writes, in a process whose CPU is what limits how many chats it serves.
These helpers write the same SQL from the model's metadata (the statement text is cached
per model, column set and database vendor) and prepare every value with its field, as the
ORM does. Like `update()`, and unlike `save()`, they send no signals; no model written
through them has receivers.

They hold the default alias's connection object itself, not the `django.db.connection`
proxy, which looks the connection up again (a context-local lookup, ~5 µs) on every
attribute read: preparing a row's values read it a dozen times.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model

_statements: dict[tuple[Any, ...], tuple[str, tuple[Field[Any, Any], ...]]] = {}
_lock = threading.Lock()


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)  # or an attname: `session_id`
    assert isinstance(field, Field) and field.concrete, f"{model.__name__}.{name} is not a column"
    return field


def _cached(key: tuple[Any, ...], build: Any) -> tuple[str, tuple[Field[Any, Any], ...]]:
    statement = _statements.get(key)
    if statement is None:
        with _lock:
            statement = _statements[key] = build()
    return statement


def insert(instance: Model, *, unless_conflict_on: Iterable[str] = (), unless_any_conflict: bool = False) -> bool:
    """INSERT `instance` (its field values, defaults applied) and set its primary key. With
    `unless_conflict_on` (the columns of a unique constraint), a row that would break the
    constraint is not inserted and False is returned: no savepoint is needed around it.
    `unless_any_conflict` does the same for every unique constraint of the table (a partial
    one, say, which a list of columns cannot name)."""
    model = type(instance)
    conflict = tuple(unless_conflict_on)
    connection = connections[DEFAULT_DB_ALIAS]  # see the module docstring

    def build() -> tuple[str, tuple[Field[Any, Any], ...]]:
        pk = model._meta.pk
        fields = tuple(f for f in model._meta.concrete_fields if f is not pk)
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in fields)
        sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
        if conflict:
            sql += f" ON CONFLICT ({', '.join(quote(_field(model, name).column) for name in conflict)}) DO NOTHING"
        elif unless_any_conflict:
            sql += " ON CONFLICT DO NOTHING"
        return f"{sql} RETURNING {quote(pk.column)}", fields

    sql, fields = _cached(("insert", model, conflict, unless_any_conflict, connection.vendor), build)
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return True


def update(model: type[Model], where: dict[str, Any], *, add: dict[str, int] | None = None, **values: Any) -> int:
    """UPDATE the rows of `model` whose columns equal `where` (no NULLs) to `values`, and
    add `add`'s amounts to those integer columns (`F(column) + n`); returns how many rows
    changed."""
    assert None not in where.values(), "a NULL never compares equal: use the ORM"
    connection = connections[DEFAULT_DB_ALIAS]
    added = add or {}
    key = ("update", model, tuple(where), tuple(added), tuple(values), connection.vendor)

    def build() -> tuple[str, tuple[Field[Any, Any], ...]]:
        quote = connection.ops.quote_name
        increased = tuple(_field(model, name) for name in added)
        assigned = tuple(_field(model, name) for name in values)
        compared = tuple(_field(model, name) for name in where)
        sets = ", ".join(
            [*(f"{quote(f.column)} = {quote(f.column)} + %s" for f in increased), *(f"{quote(f.column)} = %s" for f in assigned)]
        )
        conditions = " AND ".join(f"{quote(f.column)} = %s" for f in compared)
        return f"UPDATE {quote(model._meta.db_table)} SET {sets} WHERE {conditions}", increased + assigned + compared

    sql, fields = _cached(key, build)
    given = (*added.values(), *values.values(), *where.values())
    params = [f.get_db_prep_save(value, connection) for f, value in zip(fields, given)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
