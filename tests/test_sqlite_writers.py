"""SQLite: the write transactions of one process take the database's write lock in the
order they asked for it, every way a transaction ends hands it to the next writer, and
statements reach SQLite as Django's own cursor would send them."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.db.backends.sqlite3.base import SQLiteCursorWrapper

from agents_app.storage.models import Agent
from agents_app.storage.sqlite_backend.base import CursorWrapper, WriterQueue, writers_of

JOIN = 10.0  # liveness bound for a thread that should finish at once


def _wait_until(condition: Callable[[], bool]) -> None:
    event = threading.Event()
    for _ in range(1000):
        if condition():
            return
        event.wait(0.005)
    raise AssertionError("condition never held")


def _in_thread(work: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_queue_grants_the_lock_in_the_order_it_was_asked_for():
    queue = WriterQueue()
    assert queue.acquire(1.0)
    granted: list[int] = []

    def writer(number: int) -> None:
        assert queue.acquire(JOIN)
        granted.append(number)
        queue.release()

    threads = []
    for number in range(5):
        threads.append(thread := threading.Thread(target=writer, args=(number,)))
        thread.start()
        _wait_until(lambda: queue.waiting == number + 1)
    queue.release()
    for thread in threads:
        thread.join(JOIN)
    assert granted == [0, 1, 2, 3, 4]


def test_a_waiter_past_its_timeout_gives_up_and_leaves_the_queue():
    queue = WriterQueue()
    assert queue.acquire(1.0)
    assert queue.acquire(0.05) is False
    assert queue.waiting == 0
    queue.release()
    assert queue.acquire(0.0)  # free again: nobody was left queued to hand it to


@pytest.fixture
def sqlite_writers(transactional_db) -> WriterQueue:
    if connection.vendor != "sqlite":
        pytest.skip("about SQLite (the embedded-mode pass)")
    return writers_of(connection)


def _write_in_turn(slug: str, committed: list[str], before_commit: Callable[[], None] = lambda: None) -> None:
    with transaction.atomic():
        Agent.objects.create(slug=slug, class_path="agents_app.demo_agents.ChatAgent")
        before_commit()
        committed.append(slug)


def test_write_transactions_of_one_process_commit_in_the_order_they_began(sqlite_writers):
    committed: list[str] = []
    threads = []
    with transaction.atomic():  # this thread holds the lock while the others line up
        Agent.objects.create(slug="first", class_path="agents_app.demo_agents.ChatAgent")
        for number in range(4):
            threads.append(_in_thread(lambda slug=f"writer-{number}": _write_in_turn(slug, committed)))
            _wait_until(lambda: sqlite_writers.waiting == number + 1)
    for thread in threads:
        thread.join(JOIN)
    assert committed == ["writer-0", "writer-1", "writer-2", "writer-3"]
    assert set(Agent.objects.filter(slug__startswith="writer-").values_list("slug", flat=True)) == set(committed)


def test_a_write_outside_a_transaction_takes_its_turn_in_the_same_queue(sqlite_writers):
    """A lone INSERT or UPDATE (autocommit) waits in line with the transactions: in SQLite's
    busy handler it would poll while they hand the lock on ahead of it. A read waits for
    nobody."""
    class_path = "agents_app.demo_agents.ChatAgent"
    threads = []
    with transaction.atomic():
        Agent.objects.create(slug="holder", class_path=class_path)
        threads.append(_in_thread(lambda: Agent.objects.create(slug="lone-write", class_path=class_path)))
        _wait_until(lambda: sqlite_writers.waiting == 1)
        threads.append(_in_thread(lambda: _write_in_turn("in-transaction", [])))
        _wait_until(lambda: sqlite_writers.waiting == 2)
        reader = _in_thread(lambda: Agent.objects.filter(slug="lone-write").exists())
        reader.join(JOIN)
        assert not reader.is_alive() and sqlite_writers.waiting == 2
    for thread in threads:
        thread.join(JOIN)
    written = Agent.objects.filter(slug__in=["lone-write", "in-transaction"]).order_by("pk")
    assert list(written.values_list("slug", flat=True)) == ["lone-write", "in-transaction"]


def _next_writer_after(sqlite_writers: WriterQueue, slug: str, end: Callable[[], None]) -> list[str]:
    """Another thread writes `slug` in a transaction that `end` ends once this thread waits
    for the lock; this thread then writes "next". What committed, in order."""
    committed: list[str] = []
    holding = threading.Event()

    def holder() -> None:
        with contextlib.suppress(Exception), transaction.atomic():
            Agent.objects.create(slug=slug, class_path="agents_app.demo_agents.ChatAgent")
            holding.set()
            _wait_until(lambda: sqlite_writers.waiting == 1)
            end()

    thread = _in_thread(holder)
    assert holding.wait(JOIN)
    _write_in_turn("next", committed)
    thread.join(JOIN)
    return committed


def test_a_transaction_that_fails_hands_the_lock_to_the_next_writer(sqlite_writers):
    def fail() -> None:
        raise ValueError("the transaction's own failure")

    assert _next_writer_after(sqlite_writers, "rolled-back", fail) == ["next"]
    assert not Agent.objects.filter(slug="rolled-back").exists()


def test_a_connection_closed_inside_its_transaction_hands_the_lock_on(sqlite_writers):
    # As a broken connection is dropped mid-transaction: the write is lost, not the lock.
    assert _next_writer_after(sqlite_writers, "never-committed", lambda: connection.close()) == ["next"]
    assert not Agent.objects.filter(slug="never-committed").exists()


def test_a_writer_queued_past_the_busy_timeout_gets_sqlites_own_error(sqlite_writers):
    errors: list[str] = []

    def impatient() -> None:
        own = connections["default"]
        own.settings_dict = {**own.settings_dict, "OPTIONS": {**own.settings_dict["OPTIONS"], "timeout": 0.1}}
        try:
            with transaction.atomic():
                Agent.objects.create(slug="too-late", class_path="agents_app.demo_agents.ChatAgent")
        except OperationalError as error:
            errors.append(str(error))

    with transaction.atomic():
        Agent.objects.create(slug="holder", class_path="agents_app.demo_agents.ChatAgent")
        _in_thread(impatient).join(JOIN)
    assert errors == ["database is locked"]
    assert sqlite_writers.waiting == 0
    _write_in_turn("next", [])  # the queue still moves


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT "id" FROM "agents_app_agent" WHERE "slug" = %s AND "enabled" = %s',
        "SELECT '100%%' FROM \"agents_app_agent\" WHERE \"slug\" LIKE %s",
        'UPDATE "agents_app_turn" SET "chunk_count" = "chunk_count" + %s WHERE "id" = %s',
    ],
)
def test_statement_placeholders_become_what_djangos_sqlite_cursor_makes_of_them(sql):
    memory = sqlite3.connect(":memory:")
    djangos = memory.cursor(factory=SQLiteCursorWrapper).convert_query(sql)
    ours = memory.cursor(factory=CursorWrapper)
    assert ours.convert_query(sql) == djangos
    assert ours.convert_query(sql) == djangos  # again, from the cache
