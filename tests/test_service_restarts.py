"""PostgreSQL, and separately Redis, restarted while 20 turns stream (README "Failure behaviour").

Each test starts its own throwaway server (tests/plugins/throwaway_services.py) and points a
daphne process and a Celery worker at it; the machine's shared services are never touched.
Half the turns are followed over WebSockets, half over the HTTP UI message stream.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from celery import Celery
from django.conf import settings
from websockets.sync.client import connect

from agents_app.testing.fake_openai import Reply
from tests.plugins.celery_worker import CeleryProcess
from tests.plugins.live_server import ROOT, WITHOUT_PER_USER_LIMITS, LiveServer, child_env, start_live_server
from tests.test_celery_worker import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.backends, pytest.mark.timeout(600)]

TURNS = 20
WORDS = [f"w{i}" for i in range(50)]
ANSWER = " ".join(WORDS)


@pytest.fixture(autouse=True)
def _production_pass_only() -> None:
    # The throwaway services do not depend on the pass's own database: run these once.
    if not settings.REDIS_URL:
        pytest.skip("runs in the production-mode pass (it starts its own PostgreSQL and Redis)")


def slow_answer(request: dict[str, Any]) -> Reply:
    """About five seconds of streaming per turn: long enough to restart a service mid-stream."""
    return Reply.text(ANSWER, delay=0.1)


@dataclass
class Followed:
    """One turn as its client saw it."""

    request_id: str = ""
    first_chunk: threading.Event = field(default_factory=threading.Event)
    text: str = ""
    outcome: str = ""  # "completed" or "error"
    error: str = ""


def follow_websocket(server: LiveServer, token: str, name: str, turn: Followed) -> Followed:
    turn.request_id = f"ws-{uuid.uuid4().hex[:12]}"
    message = {"id": f"u-{turn.request_id}", "role": "user", "parts": [{"type": "text", "text": f"Count for {name}"}]}
    body = json.dumps({"messages": [message], "trigger": "submit-message"})
    with connect(f"ws://{server.host}/agents/chat-agent/{name}?token={token}&_pk={uuid.uuid4()}", open_timeout=30) as socket:
        socket.send(json.dumps({"type": "cf_agent_use_chat_request", "id": turn.request_id, "init": {"method": "POST", "body": body}}))
        while True:
            frame = json.loads(socket.recv(timeout=60))
            if frame.get("type") != "cf_agent_use_chat_response" or frame.get("id") != turn.request_id:
                continue
            if frame.get("error"):
                turn.outcome, turn.error = "error", frame.get("body", "")
            elif frame.get("body"):
                chunk = json.loads(frame["body"])
                if chunk.get("type") == "text-delta":
                    turn.text += chunk["delta"]
                    turn.first_chunk.set()
            if frame.get("done"):
                turn.outcome = turn.outcome or "completed"
                return turn


def follow_http(server: LiveServer, token: str, name: str, turn: Followed) -> Followed:
    with httpx.Client(timeout=60) as http, http.stream(
        "POST", f"{server.url}/agents/chat-agent/{name}/chat?format=ui&token={token}", json={"text": f"Count for {name}"}
    ) as response:
        assert response.status_code == 200, response.read()
        turn.request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("type") == "text-delta":
                turn.text += chunk["delta"]
                turn.first_chunk.set()
            elif chunk.get("type") == "error":
                turn.outcome, turn.error = "error", chunk["errorText"]
    turn.outcome = turn.outcome or "completed"
    return turn


def stream_turns_across(server: LiveServer, token: str, restart: Callable[[], None]) -> list[Followed]:
    """Start TURNS turns, restart the service once every one of them streams, and wait for
    every client to see its turn end."""
    turns = [Followed() for _ in range(TURNS)]
    with ThreadPoolExecutor(TURNS) as pool:
        futures = [
            pool.submit(follow_websocket if index % 2 else follow_http, server, token, f"room-{index}", turn)
            for index, turn in enumerate(turns)
        ]
        deadline = time.monotonic() + 90
        for turn, future in zip(turns, futures):
            while not turn.first_chunk.wait(0.2):
                if future.done():
                    raise AssertionError(f"a turn ended before the restart: {future.result()}")
                assert time.monotonic() < deadline, "a turn did not start streaming"
        restart()
        return [future.result(timeout=90) for future in futures]


class Stack:
    """A daphne process and a Celery worker on the given database and Redis."""

    def __init__(self, model_url: str, env: dict[str, str]) -> None:
        self.model_url = model_url
        self.env = env
        self.server: LiveServer | None = None
        self.worker: CeleryProcess | None = None

    def manage(self, *args: str) -> str:
        completed = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=child_env(self.model_url, self.env),
            capture_output=True, text=True, timeout=300, check=True,
        )
        return completed.stdout

    def start(self) -> None:
        self.server = start_live_server(self.model_url, self.env)
        self.start_worker()

    def start_worker(self) -> None:
        log = ROOT / "test-artifacts" / f"celery-restart-{uuid.uuid4().hex[:6]}.log"
        command = [sys.executable, "-m", "celery", "-A", "chatproject", "worker", "--loglevel=INFO", "--pool=solo",
                   f"--hostname=restart-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle"]
        process = subprocess.Popen(
            command, cwd=ROOT, env=child_env(self.model_url, self.env), stdout=open(log, "wb"), stderr=subprocess.STDOUT  # noqa: SIM115
        )
        self.worker = CeleryProcess(process, log)
        self.worker.wait_for_output("ready.", timeout=120)

    def supervise_worker(self) -> None:
        """Do what the worker's supervisor (Procfile runner, systemd) does: start it again if it
        exited. Celery 5.7 / kombu 5.7 may exit with "Unrecoverable error" when its Redis broker
        connection drops mid-poll instead of reconnecting."""
        if self.worker is not None and self.worker.process.poll() is not None:
            self.start_worker()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.server is not None:
            self.server.stop()

    def run_celery_turn(self, broker: str, name: str, username: str) -> None:
        Celery(broker=broker).send_task("agents.run_turn", args=["chat-agent", name, f"Hello from Celery to {name}", username])


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    for attempt in range(50):  # the database may still be starting up
        try:
            with psycopg.connect(database_url, autocommit=True) as connection:
                return connection.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise AssertionError("the database did not come back")


def assert_nothing_duplicated(database_url: str) -> None:
    duplicated = query(
        database_url,
        "SELECT session_id, uid FROM agents_app_message GROUP BY session_id, uid HAVING count(*) > 1",
    )
    assert duplicated == []
    per_session = query(
        database_url,
        "SELECT s.name, m.role, count(*) FROM agents_app_message m JOIN agents_app_session s ON s.id = m.session_id "
        "WHERE s.name LIKE 'room-%%' GROUP BY s.name, m.role",
    )
    # One question and at most one answer (continued in place when recovered) per room.
    assert all(count == 1 for _, _, count in per_session), per_session


@pytest.fixture
def stacks() -> Iterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.stop()


def test_a_database_restart_mid_stream_ends_the_turns_and_the_server_and_worker_keep_serving(
    model, throwaway_postgres, throwaway_redis, stacks
):
    model.responder = slow_answer
    database = throwaway_postgres.url
    stack = Stack(model.base_url, {**WITHOUT_PER_USER_LIMITS, "DATABASE_URL": database, "REDIS_URL": throwaway_redis.url, "CELERY_BROKER_URL": throwaway_redis.url})
    stacks.append(stack)
    stack.manage("migrate", "--noinput")
    token = stack.manage(
        "shell", "-c",
        "from django.contrib.auth import get_user_model; from agents_app.storage.models import ApiToken; "
        "print(ApiToken.issue(get_user_model().objects.create_user('carol', password='restart-42'))[1])",
    ).strip().splitlines()[-1]
    stack.start()
    assert stack.server is not None
    # The worker holds a database connection from before the restart.
    stack.run_celery_turn(throwaway_redis.url, "celery-before", "carol")
    turns_of = "SELECT t.status FROM agents_app_turn t JOIN agents_app_session s ON s.id = t.session_id WHERE s.name = %s"
    wait_for("the worker's first turn", lambda: query(database, turns_of, "celery-before") == [("completed",)], timeout=90)

    def restart() -> None:
        throwaway_postgres.stop()
        time.sleep(2)
        throwaway_postgres.start()

    turns = stream_turns_across(stack.server, token, restart)

    # Every client saw its turn end: with an error if the restart broke it, or completed.
    assert all(turn.outcome in ("completed", "error") for turn in turns)
    assert any(turn.outcome == "error" for turn in turns), "the restart did not hit a streaming turn"
    assert all(turn.text == ANSWER for turn in turns if turn.outcome == "completed")
    # Every turn row ends (in error, completed, or interrupted and recovered), none stays live.
    live = "SELECT count(*) FROM agents_app_turn WHERE status IN ('queued', 'running', 'streaming')"
    wait_for("every turn row to end", lambda: query(database, live) == [(0,)], timeout=90)
    assert_nothing_duplicated(database)

    # The same daphne and worker serve new turns: their connections were re-established.
    model.responder = None
    model.default_reply = Reply.text("Back in business.")
    after = [Followed(), Followed()]
    follow_http(stack.server, token, "after-http", after[0])
    follow_websocket(stack.server, token, "after-ws", after[1])
    assert [(t.outcome, t.text) for t in after] == [("completed", "Back in business.")] * 2
    stack.run_celery_turn(throwaway_redis.url, "celery-after", "carol")
    wait_for("the worker's turn after the restart", lambda: query(database, turns_of, "celery-after") == [("completed",)], timeout=90)


def watch_next_turn(server: LiveServer, token: str, name: str, connected: threading.Event) -> Followed:
    """A tab that only watches: the text of the next turn that streams into its session."""
    turn = Followed()
    with connect(f"ws://{server.host}/agents/chat-agent/{name}?token={token}&_pk={uuid.uuid4()}", open_timeout=30) as socket:
        while True:
            frame = json.loads(socket.recv(timeout=60))
            if frame.get("type") == "cf_agent_mcp_servers":
                connected.set()  # the last connect frame: the socket has joined its session group
            if frame.get("type") != "cf_agent_use_chat_response":
                continue
            if frame.get("body") and not frame.get("error"):
                chunk = json.loads(frame["body"])
                if chunk.get("type") == "text-delta":
                    turn.text += chunk["delta"]
            if frame.get("done"):
                turn.outcome = "error" if frame.get("error") else "completed"
                return turn


def test_a_redis_restart_mid_stream_leaves_single_process_chats_whole_and_is_logged_once(
    model, token, user, throwaway_redis, stacks
):
    model.responder = slow_answer
    stack = Stack(model.base_url, {**WITHOUT_PER_USER_LIMITS, "REDIS_URL": throwaway_redis.url, "CELERY_BROKER_URL": throwaway_redis.url})
    stacks.append(stack)
    stack.start()
    assert stack.server is not None

    def restart() -> None:
        throwaway_redis.stop()
        time.sleep(3)
        throwaway_redis.start()

    turns = stream_turns_across(stack.server, token, restart)

    # The turns and their sockets share the daphne process: nothing was lost or repeated.
    assert [(turn.outcome, turn.text) for turn in turns] == [("completed", ANSWER)] * TURNS
    log = stack.server.log.read_text()
    assert log.count("Redis is unavailable") == 1 and log.count("Redis is back") == 1, log[-3000:]

    # Frames cross processes again: a turn run by the worker streams to a socket of daphne.
    stack.supervise_worker()
    model.responder = None
    model.default_reply = Reply.text("Hello from the worker.")
    connected = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        watching = pool.submit(watch_next_turn, stack.server, token, "celery-watch", connected)
        assert connected.wait(30)
        stack.run_celery_turn(throwaway_redis.url, "celery-watch", user.username)
        assert watching.result(timeout=90).text == "Hello from the worker."
