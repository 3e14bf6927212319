"""Deployment safety: tokens never reach a log, production refuses to start without a secret
key and passes `check --deploy`, a GET never creates a session, and over-long names are a
clear client error."""
from __future__ import annotations

import io
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from agents_app.storage.models import Session

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.django_db(transaction=True)


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL"}}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_production_refuses_to_start_without_a_secret_key() -> None:
    completed = run_manage("check", DEBUG="false", ALLOWED_HOSTS="chat.example.com")
    assert completed.returncode != 0
    assert "SECRET_KEY must be set when DEBUG=false" in completed.stderr


def test_check_deploy_passes_with_the_documented_production_settings() -> None:
    completed = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DEBUG="false", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="chat.example.com", AGENTS_HTTPS="true",
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout


def test_api_tokens_in_logged_urls_are_redacted() -> None:
    handler = logging.getLogger().handlers[0]
    captured = io.StringIO()
    original = handler.setStream(captured)
    try:
        logging.getLogger("django.channels.server").warning(
            "HTTP %(method)s %(path)s %(status)s", {"method": "GET", "path": "/agents/chat-agent/x/get-messages?token=sk-live-secret-123&a=1", "status": 401}
        )
        logging.getLogger("daphne.access").warning('127.0.0.1 - - "GET /agents/a/b?x=1&token=another-secret HTTP/1.1" 200')
    finally:
        handler.setStream(original)
    logged = captured.getvalue()
    assert "sk-live-secret-123" not in logged and "another-secret" not in logged
    assert "token=[redacted]" in logged and "a=1" in logged


def test_a_get_does_not_create_a_session(client, user, token) -> None:
    assert client.get(f"/agents/chat-agent/planted/get-messages?token={token}").json() == []
    assert client.get(f"/agents/chat-agent/planted/search?q=x&token={token}").json() == []
    client.force_login(user)
    page = client.get("/chat/chat-agent/planted-by-link/")
    assert page.status_code == 200 and b'id="composer"' in page.content  # a fresh chat to type into
    assert not Session.objects.exists()


def test_an_authenticated_post_still_creates_the_session(client, token) -> None:
    response = client.post(f"/agents/chat-agent/made/chat?format=json&token={token}", data={"text": "hi"}, content_type="application/json")
    assert response.status_code == 200
    assert Session.objects.filter(name="made").exists()


def test_an_over_long_session_name_is_a_400(client, token) -> None:
    response = client.get(f"/agents/chat-agent/{'n' * 300}/get-messages?token={token}")
    assert response.status_code == 400 and "at most 200 characters" in response.json()["error"]


async def test_an_over_long_session_name_on_a_socket_gets_an_error_frame(open_socket, token) -> None:
    socket = await open_socket(f"/agents/chat-agent/{'n' * 300}", token=token)
    frame = await socket.next()
    assert frame["type"] == "cf_agent_error" and "at most 200 characters" in frame["error"]
    output = await socket.communicator.output_queue.get()
    while output["type"] != "websocket.close":
        output = await socket.communicator.output_queue.get()
    assert output["code"] == 4400


async def test_a_websocket_authenticates_with_an_authorization_bearer_header(open_socket, token) -> None:
    socket = await open_socket("/agents/counter-agent/bearer", headers=[(b"authorization", f"Bearer {token}".encode())])
    frame = await socket.next()
    assert frame["type"] == "cf_agent_identity"
