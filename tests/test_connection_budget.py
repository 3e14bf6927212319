"""A server process keeps to its PostgreSQL connection budget (`AGENTS_DB_POOL_SIZE`) however
many HTTP requests arrive at once: under ASGI each request runs on a thread of its own, and a
connection kept per thread would outlive it, until PostgreSQL refuses everyone with "too many
clients"."""
from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client

from tests.plugins.live_server import LiveServer, _database_env, start_live_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends]

POOL_SIZE = 6
ROUNDS = 3
AT_ONCE = 40
APPLICATION = "connection-budget-server"


def _server_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION])
        return cursor.fetchone()[0]


@pytest.fixture
def small_budget_server(model, transactional_db) -> Iterator[LiveServer]:
    if connection.vendor != "postgresql":
        pytest.skip("connection budgets are PostgreSQL's")
    url = _database_env()["DATABASE_URL"]
    server = start_live_server(
        model.base_url,
        {"DATABASE_URL": f"{url}?application_name={APPLICATION}", "AGENTS_DB_THREADS": "4", "AGENTS_DB_POOL_SIZE": str(POOL_SIZE)},
    )
    yield server
    server.stop()


def test_bursts_of_requests_get_answers_within_the_servers_connection_budget(small_budget_server, token, user):
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    # Token requests (the official client's get-messages) and cookie requests (a page, whose
    # session and user are read on the request's own thread).
    requests = [
        urllib.request.Request(f"{small_budget_server.url}/agents/chat-agent/budget-{i}/get-messages?token={token}")
        if i % 2
        else urllib.request.Request(f"{small_budget_server.url}/", headers={"Cookie": cookie})
        for i in range(AT_ONCE)
    ]
    peak = 0
    bursting = True

    def watch() -> None:
        nonlocal peak
        try:
            while bursting:
                peak = max(peak, _server_connections())
                time.sleep(0.02)
        finally:
            connection.close()  # this thread's own connection, given back before it ends

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(AT_ONCE) as pool:
            statuses = [
                status
                for _ in range(ROUNDS)
                for status in pool.map(lambda request: urllib.request.urlopen(request, timeout=60).status, requests)
            ]
    finally:
        bursting = False
        watcher.join()
    assert statuses == [200] * (ROUNDS * AT_ONCE)
    assert 0 < peak <= POOL_SIZE
