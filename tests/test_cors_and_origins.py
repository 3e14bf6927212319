"""Which browser origins reach the agents, on both transports: CORS on the HTTP endpoints
(django-cors-headers, `AGENTS_CORS_ALLOWED_ORIGINS`) and the WebSocket Host/Origin check,
which reads the same list and compares full origins (scheme, host and port)."""
from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from agents_app.turns.instances import resolve_session
from agents_app.storage import client_messages
from tests.conftest import user_message

pytestmark = pytest.mark.django_db(transaction=True)

SERVER = "127.0.0.1:8000"
FRONTEND = "http://localhost:5173"
SECRET = "the transcript a foreign page must not read"


@pytest.fixture
def frontend_only(settings: Any) -> None:
    """The one setting an operator writes to admit the example frontend."""
    settings.AGENTS_CORS_ALLOWED_ORIGINS = [FRONTEND]
    settings.CORS_ALLOWED_ORIGINS = [FRONTEND]
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOW_CREDENTIALS = True
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]


@pytest.fixture
def any_origin_with_tokens(settings: Any) -> None:
    settings.AGENTS_CORS_ALLOWED_ORIGINS = ["*"]
    settings.CORS_ALLOWED_ORIGINS = []
    settings.CORS_ALLOW_ALL_ORIGINS = True
    settings.CORS_ALLOW_CREDENTIALS = False
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]


@pytest.fixture
def session_cookie(user: Any) -> str:
    """Alice's signed-in session, with a conversation in it."""
    session = resolve_session("chat-agent", "private", user)
    client_messages.upsert(session, [user_message(SECRET, "m1")], move_leaf=True)
    client = Client()
    client.force_login(user)
    return f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"


async def handshake(*, origin: str | None, host: str = SERVER, cookie: str | None = None, token: str | None = None) -> tuple[bool, list[dict[str, Any]]]:
    """Open /agents/chat-agent/private as a browser would; the frames it got before
    the server closed it (or the first one, if it stays open)."""
    from chatproject.asgi import application

    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    query = f"?token={token}" if token else ""
    communicator = WebsocketCommunicator(application, f"/agents/chat-agent/private{query}", headers=headers)
    connected, _ = await communicator.connect()
    frames = []
    while connected:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
        frames.append(json.loads(output["text"]))
        if frames[-1]["type"] == "cf_agent_mcp_servers":  # the last connect frame
            break
    await communicator.disconnect()
    return connected, frames


def received_the_transcript(frames: list[dict[str, Any]]) -> bool:
    return any(SECRET in json.dumps(frame) for frame in frames)


# -- WebSocket: full origins (scheme, host and port) ----------------------------------------


@pytest.mark.parametrize("origin", ["http://127.0.0.1:9999", "http://localhost:3000", "https://127.0.0.1:8000", "http://127.0.0.1"])
async def test_a_socket_from_another_port_or_scheme_of_an_allowed_host_is_refused(origin, session_cookie, frontend_only):
    connected, frames = await handshake(origin=origin, cookie=session_cookie)
    assert not connected and not received_the_transcript(frames)


async def test_a_socket_from_the_servers_own_origin_is_admitted_with_the_session_cookie(session_cookie, frontend_only):
    connected, frames = await handshake(origin=f"http://{SERVER}", cookie=session_cookie)
    assert connected and received_the_transcript(frames)


async def test_a_socket_from_a_listed_frontend_is_admitted_with_the_session_cookie(session_cookie, frontend_only):
    connected, frames = await handshake(origin=FRONTEND, cookie=session_cookie)
    assert connected and received_the_transcript(frames)


async def test_a_socket_from_a_trusted_csrf_origin_is_admitted(session_cookie, frontend_only, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]
    connected, _ = await handshake(origin="https://chat.example.com", cookie=session_cookie)
    refused, _ = await handshake(origin="http://chat.example.com", cookie=session_cookie)
    assert connected and not refused


async def test_a_socket_with_a_host_outside_allowed_hosts_is_refused(token, frontend_only):
    connected, _ = await handshake(origin=None, host="rebound.example:8000", token=token)
    assert not connected


async def test_a_socket_with_an_allowed_host_and_no_origin_authenticates_with_its_token(token, session_cookie, frontend_only):
    connected, frames = await handshake(origin=None, token=token)
    assert connected and received_the_transcript(frames)


async def test_an_opaque_null_origin_is_refused(session_cookie, frontend_only):
    connected, _ = await handshake(origin="null", cookie=session_cookie)
    assert not connected


async def test_with_a_wildcard_any_origin_connects_with_a_token(token, session_cookie, any_origin_with_tokens):
    connected, frames = await handshake(origin="https://anywhere.example", token=token)
    assert connected and received_the_transcript(frames)


async def test_with_a_wildcard_a_foreign_origin_cannot_ride_the_session_cookie(session_cookie, any_origin_with_tokens):
    connected, frames = await handshake(origin="https://anywhere.example", cookie=session_cookie)
    assert connected and frames[0]["type"] == "cf_agent_error" and "Authentication required" in frames[0]["error"]
    assert not received_the_transcript(frames)


async def test_the_chat_page_socket_refuses_a_foreign_port_too(session_cookie, frontend_only):
    from chatproject.asgi import application

    headers = [(b"host", SERVER.encode()), (b"origin", b"http://127.0.0.1:9999"), (b"cookie", session_cookie.encode())]
    communicator = WebsocketCommunicator(application, "/ui/ws/chat-agent/private/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected


# -- HTTP: CORS on every endpoint the official clients call ----------------------------------

AGENT_ENDPOINTS = [
    "/agents/chat-agent/private/get-messages",
    "/agents/chat-agent/private/chat",
    "/agents/chat-agent/private/streams/req-1",
    "/v1/chat/completions",
    "/v1/models",
]


@pytest.mark.parametrize("path", AGENT_ENDPOINTS)
def test_a_preflight_from_a_listed_frontend_is_answered(client, path, frontend_only):
    response = client.options(
        path,
        headers={"Origin": FRONTEND, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"},
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == FRONTEND
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert {"GET", "POST", "OPTIONS"} <= {m.strip() for m in response["Access-Control-Allow-Methods"].split(",")}
    assert {"authorization", "content-type"} <= {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert response["Access-Control-Max-Age"] == "86400"


def test_get_messages_answers_a_listed_frontend_with_cors_headers(client, token, session_cookie, frontend_only):
    response = client.get(f"/agents/chat-agent/private/get-messages?token={token}", headers={"Origin": FRONTEND})
    assert response.status_code == 200 and SECRET in response.content.decode()
    assert response["Access-Control-Allow-Origin"] == FRONTEND
    assert "origin" in response["Vary"].lower()


def test_an_http_turn_exposes_its_request_id_to_a_listed_frontend(client, token, frontend_only):
    response = client.post(
        f"/agents/chat-agent/private/chat?format=json&token={token}",
        data={"text": "hi", "requestId": "cors-req-1"},
        content_type="application/json",
        headers={"Origin": FRONTEND},
    )
    assert response["Access-Control-Allow-Origin"] == FRONTEND
    assert "x-request-id" in response["Access-Control-Expose-Headers"].lower()


def test_an_on_request_route_answers_a_listed_frontend_with_cors_headers(client, token, frontend_only):
    response = client.get(f"/agents/chat-agent/private/anything?token={token}", headers={"Origin": FRONTEND})
    assert response["Access-Control-Allow-Origin"] == FRONTEND


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://localhost:5173", "https://evil.example"])
def test_an_origin_that_is_not_listed_gets_no_cors_headers(client, token, session_cookie, origin, frontend_only):
    response = client.get(f"/agents/chat-agent/private/get-messages?token={token}", headers={"Origin": origin})
    assert "Access-Control-Allow-Origin" not in response
    preflight = client.options("/v1/chat/completions", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight


def test_a_wildcard_allows_every_origin_but_never_with_credentials(client, token, any_origin_with_tokens):
    response = client.get(f"/agents/chat-agent/private/get-messages?token={token}", headers={"Origin": "https://anywhere.example"})
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response


def test_pages_outside_the_agent_endpoints_get_no_cors_headers(client, user, frontend_only):
    client.force_login(user)
    response = client.get("/", headers={"Origin": FRONTEND})
    assert "Access-Control-Allow-Origin" not in response
