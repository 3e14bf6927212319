"""A real daphne process serving the app on a free port, sharing the test database.

Browser and Node tests talk to it over real sockets, as users do. It runs as a separate
process (not in-thread) so its event loop never interferes with async tests.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60
# As the Procfile starts daphne: its WebSocket limits above AGENTS_MAX_FRAME_BYTES.
DAPHNE_LIMITS = ("--websocket-max-message-size", "4194304", "--websocket-max-frame-size", "4194304")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _database_env() -> dict[str, str]:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return {"SQLITE_PATH": str(db["NAME"])}
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return {"DATABASE_URL": f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"}


class LiveServer:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.process = process
        self.log = log
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def child_env(model_base_url: str, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server or worker process: the test database and channel layer,
    the fake model, and the test agents."""
    env = {
        **os.environ,
        **_database_env(),
        "OPENAI_BASE_URL": model_base_url,
        "OPENAI_API_KEY": "sk-test-secret",
        "OPENAI_MODEL": "fake-model",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECRET_KEY": "live-test-secret",
        "AGENTS_CLASSES": "tests.agents.ScriptedAgent,tests.agents.CounterAgent,tests.agents.HookedAgent",
        # Scripted replies are for the turns a test makes; a title call would take one (tests that
        # check model titles turn them on with extra_env).
        "AGENTS_CHAT_TITLES": "words",
    }
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra_env or {})
    return env


def start_live_server(model_base_url: str, extra_env: dict[str, str] | None = None) -> LiveServer:
    port = free_port()
    log = ROOT / "test-artifacts" / f"daphne-{port}.log"
    log.parent.mkdir(exist_ok=True)
    env = child_env(model_base_url, extra_env)
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_LIMITS, "chatproject.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - owned by the child
        stderr=subprocess.STDOUT,
    )
    # Generous: on a loaded machine (2 cores shared by several test runs) startup takes a while.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return LiveServer(port, process, log)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"daphne did not start in {START_TIMEOUT} s")


# For load tests where one test user stands in for many people: the per-user limits of
# agents_app/limits.py would (rightly) refuse them.
WITHOUT_PER_USER_LIMITS = {
    "AGENTS_MAX_CONCURRENT_TURNS_PER_USER": "0",
    "AGENTS_MAX_NEW_SESSIONS_PER_MINUTE": "0",
}


@pytest.fixture
def live_server_process(model: Any, transactional_db: Any) -> Iterator[LiveServer]:
    server = start_live_server(model.base_url)
    yield server
    server.stop()


@pytest.fixture
def crowd_live_server(model: Any, transactional_db: Any) -> Iterator[LiveServer]:
    """A live server where one test user may chat like a crowd of users."""
    server = start_live_server(model.base_url, WITHOUT_PER_USER_LIMITS)
    yield server
    server.stop()
