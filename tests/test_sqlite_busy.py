"""SQLite named by DATABASE_URL is tuned like the default one, and a database that stays
locked past the busy timeout ends the turn with the error outcome, not a hang."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from django.db import connection

from agents_app.testing.fake_openai import Reply
from tests.plugins.live_server import ROOT, LiveServer, start_live_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sqlite_url_server(model, transactional_db) -> Iterator[LiveServer]:
    """daphne on the test database, named the way an operator would: DATABASE_URL=sqlite:///…"""
    if connection.vendor != "sqlite":
        pytest.skip("about SQLite (the embedded-mode pass)")
    server = start_live_server(model.base_url, {"DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}", "AGENTS_SQLITE_BUSY_TIMEOUT": "1"})
    yield server
    server.stop()


def test_a_sqlite_database_url_gets_wal_immediate_transactions_and_a_busy_timeout(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-c", "import json; from chatproject import settings; print(json.dumps(settings.DATABASES['default']))"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "AGENTS_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, check=True,
    )
    options = json.loads(shown.stdout)["OPTIONS"]
    assert "journal_mode=WAL" in options["init_command"]
    assert options["transaction_mode"] == "IMMEDIATE" and options["timeout"] == 20


def test_concurrent_completions_on_a_sqlite_database_url_all_answer(sqlite_url_server, model, token):
    model.default_reply = Reply.text("All good here.", delay=0.05)

    def ask(index: int) -> str:
        with openai.OpenAI(base_url=f"{sqlite_url_server.url}/v1", api_key=token, max_retries=0, timeout=60) as sdk:
            completion = sdk.chat.completions.create(model="chat-agent", messages=[{"role": "user", "content": f"Question {index}"}])
            return completion.choices[0].message.content or ""

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, range(4))) == ["All good here."] * 4


def test_a_database_locked_past_the_busy_timeout_ends_the_turn_with_an_error_and_the_next_turn_works(sqlite_url_server, model, token):
    model.script(Reply.text(" ".join(f"w{i}" for i in range(40)), delay=0.1))
    events: list[dict] = []
    streaming = threading.Event()

    def follow() -> None:
        with httpx.Client(timeout=60) as http, http.stream(
            "POST", f"{sqlite_url_server.url}/agents/chat-agent/busy/chat?format=ui&token={token}", json={"text": "Count"}
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    events.append(json.loads(line[6:]))
                    if events[-1].get("type") == "text-delta":
                        streaming.set()

    with ThreadPoolExecutor(1) as pool:
        followed = pool.submit(follow)
        assert streaming.wait(30)
        # Another program holds the write lock for three busy timeouts: the turn's next
        # chunk-log write gives up, and the turn ends with an error once the lock is gone.
        blocker = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        threading.Timer(3, blocker.rollback).start()
        followed.result(timeout=60)
    errors = [event["errorText"] for event in events if event.get("type") == "error"]
    assert errors and "database is locked" in errors[-1]

    model.script(Reply.text("Unlocked again."))
    with httpx.Client(timeout=60) as http:
        answer = http.post(f"{sqlite_url_server.url}/agents/chat-agent/busy/chat?format=json&token={token}", json={"text": "Again"}).json()
    assert answer["status"] == "completed" and answer["message"]["parts"][-1]["text"] == "Unlocked again."
