"""The database threads' CPU by kind of call, on demand (`AGENTS_DB_CPU`).

With the setting naming a directory, every call to the database threads
(storage/db_threads.py) is timed on its thread's CPU clock, and the totals per function are
kept in `<directory>/db-cpu-<pid>.json`, rewritten every `RECORD_INTERVAL` seconds by a
daemon thread, for `manage.py loadbench`. Under a burst a call costs two to three times its
CPU on an idle server (every thread of the process shares one GIL and one core's caches);
this says which calls grow, and what a change saves, more steadily than latencies do.
Off (the default) the database threads read one setting per call.
"""
from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

_R = TypeVar("_R")
RECORD_INTERVAL = 0.2

# By file: "module.function" → [calls, CPU seconds] of the calls made while it was named.
_records: dict[Path, dict[str, list[float]]] = {}
_lock = threading.Lock()


def timed(directory: str, func: Callable[..., _R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _R:
    """`func(*args, **kwargs)`, its thread CPU added to its function's totals."""
    started = time.thread_time()
    try:
        return func(*args, **kwargs)
    finally:
        spent = time.thread_time() - started
        name = f"{getattr(func, '__module__', '?').rpartition('.')[2]}.{getattr(func, '__qualname__', repr(func))}"
        path = _record_path(directory, os.getpid())
        with _lock:
            totals = _records.get(path)
            if totals is None:
                totals = _records[path] = {}
                threading.Thread(target=_write_every_interval, args=(path, totals), name="db-cpu-record", daemon=True).start()
            total = totals.setdefault(name, [0, 0.0])
            total[0] += 1
            total[1] += spent


@functools.lru_cache(maxsize=8)
def _record_path(directory: str, pid: int) -> Path:
    """Built once: a Path per call was more than the timing itself (a fork has its own pid)."""
    return Path(directory) / f"db-cpu-{pid}.json"


def _write_every_interval(path: Path, totals: dict[str, list[float]]) -> None:
    """Until the directory is gone."""
    partial = path.with_suffix(".tmp")
    while True:
        with _lock:
            text = json.dumps(totals)
        try:
            partial.write_text(text)
            partial.replace(path)  # a reader never sees half a file
        except OSError:
            return
        time.sleep(RECORD_INTERVAL)


def read(directory: Path, pids: list[int]) -> dict[str, list[float]]:
    """The totals the processes `pids` recorded so far, summed by function."""
    summed: dict[str, list[float]] = {}
    for pid in pids:
        try:
            recorded = json.loads((directory / f"db-cpu-{pid}.json").read_text())
        except (OSError, ValueError):
            continue
        for name, (calls, seconds) in recorded.items():
            total = summed.setdefault(name, [0, 0.0])
            total[0] += calls
            total[1] += seconds
    return summed


def since(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, list[float]]:
    """The calls between two reads, by function (those made meanwhile only)."""
    made: dict[str, list[float]] = {}
    for name, (calls, seconds) in after.items():
        calls_before, seconds_before = before.get(name, (0, 0.0))
        if calls > calls_before:
            made[name] = [calls - calls_before, seconds - seconds_before]
    return made
