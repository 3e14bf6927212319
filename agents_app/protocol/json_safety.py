"""Limits on client JSON that every entry point applies before anything is stored.

PostgreSQL's jsonb (and text columns) cannot hold a NUL character, and JSON nested hundreds
of levels deep breaks Python's recursive encoder and decoder: both would fail a write after
a turn was admitted. Refusing them at the door keeps the session usable.
"""
from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 64


class UnsafeJSON(ValueError):
    """Client JSON this server refuses to store; the message says why."""


def check_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise UnsafeJSON for NUL characters (in strings or keys) or nesting beyond `max_depth`.
    Iterative, so that it cannot itself hit the recursion limit."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise UnsafeJSON("text contains a NUL character (\\u0000), which cannot be stored")
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise UnsafeJSON(f"JSON nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)


def loads(text: str | bytes) -> Any:
    """`json.loads` that refuses what `check_json` refuses (ValueError for invalid JSON)."""
    try:
        value = json.loads(text)
    except RecursionError as error:
        raise UnsafeJSON(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from error
    check_json(value)
    return value
