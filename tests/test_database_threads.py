"""The turn engine's database threads (storage/db_threads.py) across a database that dropped
their connections while they sat idle, as a PostgreSQL restart does to a Celery worker
between turns."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from agents_app.storage import db_threads
from agents_app.storage.db_threads import db_async

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]


def _count_users() -> int:
    time.sleep(0.02)  # long enough that concurrent calls spread over every thread
    return get_user_model().objects.count()


def _backend_pid() -> int:
    """The database server process serving the calling thread's connection."""
    time.sleep(0.02)
    connection.ensure_connection()
    return connection.connection.info.backend_pid


def _terminate(pids: set[int]) -> None:
    """What a database restart does to those connections."""
    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"], user=db["USER"] or "postgres", host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, autocommit=True
    ) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])


async def test_a_database_thread_whose_connection_died_while_idle_answers_its_next_call(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server whose sessions can be terminated")
    monkeypatch.setattr(db_threads, "IDLE_BEFORE_CHECK_SECONDS", 0.05)
    calls = 4 * db_threads.executor()._max_workers
    pids = set(await asyncio.gather(*(db_async(_backend_pid)() for _ in range(calls))))

    await asyncio.to_thread(_terminate, pids)
    await asyncio.sleep(0.1)  # the threads are idle for longer than the check's threshold

    assert await asyncio.gather(*(db_async(_count_users)() for _ in range(calls))) == [1] * calls
